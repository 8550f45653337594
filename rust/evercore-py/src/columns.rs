//! Column arguments (`Sequence[...]`) read by position.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

/// A list or tuple argument, or any other sequence copied into a list once.
pub enum Column<'py> {
    List(Bound<'py, PyList>),
    Tuple(Bound<'py, PyTuple>),
}

impl<'py> Column<'py> {
    /// View `obj` as a column without copying lists and tuples.
    pub fn new(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(list) = obj.cast::<PyList>() {
            return Ok(Column::List(list.clone()));
        }
        if let Ok(tuple) = obj.cast::<PyTuple>() {
            return Ok(Column::Tuple(tuple.clone()));
        }
        // Same order as the twins: `len()` first (a TypeError for a non-sequence).
        obj.len()?;
        Ok(Column::List(PyList::new(obj.py(), obj.try_iter()?.collect::<PyResult<Vec<_>>>()?)?))
    }

    pub fn len(&self) -> usize {
        match self {
            Column::List(list) => list.len(),
            Column::Tuple(tuple) => tuple.len(),
        }
    }

    /// Item `index`; an IndexError (not a crash) if a callback shrank the list.
    pub fn get(&self, index: usize) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Column::List(list) => list.get_item(index),
            Column::Tuple(tuple) => tuple.get_item(index),
        }
    }
}

/// Raise the twins' `ValueError` unless every column has the same length.
pub fn check_lengths(kernel: &str, columns: &[(&str, &Column<'_>)]) -> PyResult<()> {
    let first = columns.first().map(|(_, column)| column.len());
    if columns.iter().all(|(_, column)| Some(column.len()) == first) {
        return Ok(());
    }
    let shown: Vec<String> = columns.iter().map(|(name, column)| format!("{name}={}", column.len())).collect();
    Err(pyo3::exceptions::PyValueError::new_err(format!(
        "{kernel}: columns differ in length ({})",
        shown.join(", ")
    )))
}

/// The value of an exact `int` that fits in i64; None for anything else
/// (bools, int subclasses, big ints), which the callers hand to the twin so that
/// results and messages stay identical.
pub fn exact_i64(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if !obj.is_exact_instance_of::<pyo3::types::PyInt>() {
        return None;
    }
    obj.extract::<i64>().ok()
}
