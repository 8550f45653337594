//! `filter_events`: the positions a subscription reads from a columnar log.

use evercore_core::filter::select;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::columns::{exact_i64, Column, Stop};
use crate::ints::{IntEquals, IntIn};
use crate::refs::refs;

/// A criterion as i64; `Err(())` when it is not an exact int in i64 (the twin decides).
fn criterion(value: Option<&Bound<'_, PyAny>>) -> Result<Option<i64>, ()> {
    match value {
        None => Ok(None),
        Some(value) if value.is_none() => Ok(None),
        Some(value) => exact_i64(value).map(Some).ok_or(()),
    }
}

/// `value` clamped to i64 (a huge start is past any end, a huge limit no limit).
fn saturating_i64(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    match value.extract::<i64>() {
        Ok(number) => Ok(number),
        Err(_) if value.gt(0)? => Ok(i64::MAX),
        Err(_) if value.lt(0)? => Ok(i64::MIN),
        Err(error) => Err(error),
    }
}

/// Ascending positions `i >= start` (at most `limit`) of a columnar log where
/// every criterion that is not None matches.
#[pyfunction]
#[pyo3(signature = (aggregate_type_ids, aggregate_ids, event_type_ids, *, start, limit, aggregate_type_id, aggregate_id, event_type_filter))]
#[allow(clippy::too_many_arguments)]
pub fn filter_events<'py>(
    py: Python<'py>,
    aggregate_type_ids: &Bound<'py, PyAny>,
    aggregate_ids: &Bound<'py, PyAny>,
    event_type_ids: &Bound<'py, PyAny>,
    start: &Bound<'py, PyAny>,
    limit: &Bound<'py, PyAny>,
    aggregate_type_id: Option<&Bound<'py, PyAny>>,
    aggregate_id: Option<&Bound<'py, PyAny>>,
    event_type_filter: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let twin = || -> PyResult<Bound<'py, PyList>> {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("start", start)?;
        kwargs.set_item("limit", limit)?;
        kwargs.set_item("aggregate_type_id", aggregate_type_id)?;
        kwargs.set_item("aggregate_id", aggregate_id)?;
        kwargs.set_item("event_type_filter", event_type_filter)?;
        let result = refs(py)?
            .pure
            .bind(py)
            .getattr("filter_events")?
            .call((aggregate_type_ids, aggregate_ids, event_type_ids), Some(&kwargs))?;
        Ok(result.cast_into::<PyList>()?)
    };
    let columns = [Column::new(aggregate_type_ids)?, Column::new(aggregate_ids)?, Column::new(event_type_ids)?];
    let lengths = columns.each_ref().map(Column::len);
    if lengths[0] != lengths[1] || lengths[1] != lengths[2] {
        return Err(PyValueError::new_err(format!(
            "filter_events: columns differ in length ({}, {}, {})",
            lengths[0], lengths[1], lengths[2]
        )));
    }
    let first = saturating_i64(start)?;
    if first < 0 {
        return Err(PyValueError::new_err(format!("filter_events: start must be >= 0, got {}", start.str()?)));
    }
    let limit = saturating_i64(limit)?;
    let (Ok(aggregate_type_id), Ok(aggregate_id)) = (criterion(aggregate_type_id), criterion(aggregate_id)) else {
        return twin();
    };
    let event_types = match event_type_filter.filter(|filter| !filter.is_none()) {
        None => None,
        Some(filter) => {
            let mut ids = Vec::new();
            for id in filter.try_iter()? {
                match exact_i64(&id?) {
                    Some(id) => ids.push(id),
                    None => return twin(),
                }
            }
            Some(IntIn::new(py, ids))
        }
    };
    let aggregate_type = aggregate_type_id.map(|id| IntEquals::new(py, id));
    let aggregate = aggregate_id.map(|id| IntEquals::new(py, id));
    let [types, ids, kinds] = &columns;
    let start = usize::try_from(first).unwrap_or(usize::MAX);
    let limit = usize::try_from(limit.max(0)).unwrap_or(usize::MAX);
    // Criteria are tried in the twin's order, reading a column only when needed;
    // a value that is not an exact int in i64 hands the whole call to the twin.
    let positions = select(lengths[0], start, limit, |index| -> Result<bool, Stop> {
        // SAFETY: `item` returns a live borrowed pointer, tested before any Python code runs.
        unsafe {
            if let Some(wanted) = &aggregate_type {
                if !wanted.test(types.item(index)?).ok_or(Stop::Twin)? {
                    return Ok(false);
                }
            }
            if let Some(wanted) = &aggregate {
                if !wanted.test(ids.item(index)?).ok_or(Stop::Twin)? {
                    return Ok(false);
                }
            }
            if let Some(wanted) = &event_types {
                return wanted.test(kinds.item(index)?).ok_or(Stop::Twin);
            }
        }
        Ok(true)
    });
    let positions = match positions {
        Ok(positions) => positions,
        Err(Stop::Py(error)) => return Err(error),
        Err(Stop::Twin) => return twin(),
    };
    PyList::new(py, positions)
}
