//! `validate_sequences`: the per-aggregate sequence rules, before any I/O.

use evercore_core::sequences::{validate, Invalid};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::columns::{check_lengths, exact_i64, Column};
use crate::refs::refs;

/// Why the fast path gave up.
enum Stop {
    /// A Python exception from a `known` lookup.
    Py(PyErr),
    /// A value that is not an exact int in i64: the twin decides, so that
    /// results and messages stay identical for bools, big ints and the like.
    Twin,
}

#[pyfunction]
pub fn validate_sequences(
    py: Python<'_>,
    aggregate_ids: &Bound<'_, PyAny>,
    sequences: &Bound<'_, PyAny>,
    known: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let id_column = Column::new(aggregate_ids)?;
    let sequence_column = Column::new(sequences)?;
    check_lengths("validate_sequences", &[("aggregate_ids", &id_column), ("sequences", &sequence_column)])?;
    let Some((ids, seqs, objects)) = exact_pairs(&id_column, &sequence_column)? else {
        return twin(py, aggregate_ids, sequences, known);
    };
    let known_dict = known.cast_exact::<PyDict>().ok();
    let outcome = validate(&ids, &seqs, |index| {
        let key = &objects[index];
        let value = match known_dict {
            Some(dict) => dict.get_item(key).map_err(Stop::Py)?,
            None => Some(known.call_method1("get", (key,)).map_err(Stop::Py)?),
        };
        match value {
            None => Ok(None),
            Some(value) if value.is_none() => Ok(None),
            Some(value) => exact_i64(&value).map(Some).ok_or(Stop::Twin),
        }
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(Invalid::Lookup(Stop::Py(error))) => Err(error),
        Err(Invalid::Lookup(Stop::Twin)) => twin(py, aggregate_ids, sequences, known),
        Err(Invalid::Rule(violation)) => {
            let (aggregate_id, sequence) = violation.pair();
            let error = refs(py)?.sequence_error.bind(py).call1((aggregate_id, sequence, violation.message()))?;
            Err(PyErr::from_value(error))
        }
    }
}

/// The ids and sequences as i64 (plus the id objects, to look `known` up with),
/// or None when some value is not an exact int in i64.
#[allow(clippy::type_complexity)]
fn exact_pairs<'py>(
    ids: &Column<'py>,
    sequences: &Column<'py>,
) -> PyResult<Option<(Vec<i64>, Vec<i64>, Vec<Bound<'py, PyAny>>)>> {
    let length = ids.len();
    let (mut id_values, mut sequence_values, mut objects) =
        (Vec::with_capacity(length), Vec::with_capacity(length), Vec::with_capacity(length));
    for index in 0..length {
        let id = ids.get(index)?;
        let (Some(id_value), Some(sequence_value)) = (exact_i64(&id), exact_i64(&sequences.get(index)?)) else {
            return Ok(None);
        };
        id_values.push(id_value);
        sequence_values.push(sequence_value);
        objects.push(id);
    }
    Ok(Some((id_values, sequence_values, objects)))
}

fn twin(
    py: Python<'_>,
    aggregate_ids: &Bound<'_, PyAny>,
    sequences: &Bound<'_, PyAny>,
    known: &Bound<'_, PyAny>,
) -> PyResult<()> {
    refs(py)?.pure.bind(py).getattr("validate_sequences")?.call1((aggregate_ids, sequences, known))?;
    Ok(())
}
