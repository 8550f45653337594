//! `validate_sequences`: the per-aggregate sequence rules, before any I/O.

use evercore_core::sequences::{validate, Invalid};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::columns::{check_lengths, exact_i64, Column, Stop};
use crate::refs::refs;

/// Check a context's (aggregate id, sequence) pairs: per aggregate contiguous
/// from the known sequence + 1, none below 1; else `SequenceError`.
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
    let known_dict = known.cast_exact::<PyDict>().ok();
    let pairs = (0..id_column.len()).map(|index| {
        match (id_column.i64_at(index).map_err(Stop::Py)?, sequence_column.i64_at(index).map_err(Stop::Py)?) {
            (Some(id), Some(sequence)) => Ok((id, sequence)),
            _ => Err(Stop::Twin),
        }
    });
    let outcome = validate(pairs, |index| {
        let key = id_column.get(index).map_err(Stop::Py)?;
        let value = match known_dict {
            Some(dict) => dict.get_item(&key).map_err(Stop::Py)?,
            None => Some(known.call_method1("get", (&key,)).map_err(Stop::Py)?),
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

fn twin(
    py: Python<'_>,
    aggregate_ids: &Bound<'_, PyAny>,
    sequences: &Bound<'_, PyAny>,
    known: &Bound<'_, PyAny>,
) -> PyResult<()> {
    refs(py)?.pure.bind(py).getattr("validate_sequences")?.call1((aggregate_ids, sequences, known))?;
    Ok(())
}
