//! Column arguments (`Sequence[...]`) read by position.

use pyo3::ffi;
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

    /// Item `index` as i64 when it is an exact int that fits (see [`exact_i64`]),
    /// read without touching its reference count: the hot loops call this.
    #[inline]
    pub fn i64_at(&self, index: usize) -> PyResult<Option<i64>> {
        let item = self.item(index)?;
        // SAFETY: `item` is a valid object (see `item`).
        Ok(unsafe { exact_i64_ptr(item) })
    }

    /// A borrowed pointer to item `index`. It stays valid only until Python code
    /// runs (which could change the container), so callers read it at once.
    #[inline]
    pub fn item(&self, index: usize) -> PyResult<*mut ffi::PyObject> {
        let position = ffi::Py_ssize_t::try_from(index).unwrap_or(ffi::Py_ssize_t::MAX);
        // SAFETY: the containers are alive for 'py; Get*Item bounds-check and return
        // a borrowed reference, or null with an IndexError set.
        let item = unsafe {
            match self {
                Column::List(list) => ffi::PyList_GetItem(list.as_ptr(), position),
                Column::Tuple(tuple) => ffi::PyTuple_GetItem(tuple.as_ptr(), position),
            }
        };
        if item.is_null() {
            return Err(PyErr::fetch(self.py()));
        }
        Ok(item)
    }

    fn py(&self) -> Python<'py> {
        match self {
            Column::List(list) => list.py(),
            Column::Tuple(tuple) => tuple.py(),
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
    Err(pyo3::exceptions::PyValueError::new_err(format!("{kernel}: columns differ in length ({})", shown.join(", "))))
}

/// The value of an exact `int` that fits in i64; None for anything else
/// (bools, int subclasses, big ints), which the callers hand to the twin so that
/// results and messages stay identical.
pub fn exact_i64(obj: &Bound<'_, PyAny>) -> Option<i64> {
    // SAFETY: `obj` is a valid object for the duration of the call.
    unsafe { exact_i64_ptr(obj.as_ptr()) }
}

/// # Safety
/// `obj` must point to a live Python object and the caller must be attached.
#[inline]
pub unsafe fn exact_i64_ptr(obj: *mut ffi::PyObject) -> Option<i64> {
    if unsafe { ffi::Py_TYPE(obj) } != std::ptr::addr_of_mut!(ffi::PyLong_Type) {
        return None;
    }
    let mut overflow = 0;
    // An exact int never fails here; out of range is reported through `overflow`.
    let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow) };
    (overflow == 0).then_some(value)
}

/// Why a fast path gave up.
pub enum Stop {
    /// A Python exception, to propagate.
    Py(PyErr),
    /// A value that is not an exact int in i64: the twin decides, so that results
    /// and messages stay identical for bools, big ints and the like.
    Twin,
}

impl From<PyErr> for Stop {
    fn from(error: PyErr) -> Self {
        Stop::Py(error)
    }
}
