//! `events_from_rows`: stored rows as `SerializedEvent`s, the hot loop of every
//! SQLite read.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::columns::{exact_i64, Column};
use crate::refs::refs;

/// Times within this many microseconds of the epoch (years 1833-2106) take the
/// `fromtimestamp` path, exact there; others are left to the twin.
const FAST_US: i64 = (1_i64 << 32) * 1_000_000;

/// `SerializedEvent`s from `(id, aggregate_id, event_type_id, state, sequence,
/// reference, event_time_us)` rows, naming types through `names` (`KeyError` for an
/// id it lacks). Rows the fast path does not model exactly go to the twin.
#[pyfunction]
pub fn events_from_rows<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
    names: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let refs = refs(py)?;
    let twin = || -> PyResult<Bound<'py, PyList>> {
        Ok(refs.pure.bind(py).getattr("events_from_rows")?.call1((rows, names))?.cast_into::<PyList>()?)
    };
    let column = Column::new(rows)?;
    let (utc, fromtimestamp) = (refs.utc.bind(py), refs.fromtimestamp.bind(py));
    let events = PyList::empty(py);
    for index in 0..column.len() {
        let row = column.get(index)?;
        let Ok(row) = row.cast::<PyTuple>() else { return twin() };
        if row.len() != 7 {
            return twin();
        }
        let type_id = row.get_item(2)?;
        let name = match names.get_item(&type_id) {
            Ok(name) => name,
            Err(error) if error.is_instance_of::<PyKeyError>(py) => {
                return Err(PyKeyError::new_err((type_id.unbind(),)));
            }
            Err(error) => return Err(error),
        };
        let us = match exact_i64(&row.get_item(6)?) {
            Some(us) if -FAST_US < us && us < FAST_US => us,
            _ => return twin(),
        };
        // Exact: |us| < 2**53, so the float is the int, and the division is Python's.
        let when = fromtimestamp.call1((us as f64 / 1e6, utc))?;
        let fields =
            [row.get_item(0)?, row.get_item(1)?, name, row.get_item(3)?, row.get_item(4)?, row.get_item(5)?, when];
        events.append(refs.serialized_event(PyTuple::new(py, fields)?)?)?;
    }
    Ok(events)
}
