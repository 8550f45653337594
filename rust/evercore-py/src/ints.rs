//! Comparing list items with ints, by identity where CPython makes that exact.
//!
//! CPython preallocates the ints -5..=256 and hands out those singletons; from
//! 3.11 on they lie in one static array. When a probe at start-up confirms that
//! layout, an item whose address falls inside the array *is* the small int at
//! that place, so comparing addresses answers without a call into the
//! interpreter. Anything else (a big int, an int built outside the singletons,
//! another layout) takes the exact path through `PyLong_AsLongLongAndOverflow`.
//! Type-id columns hold small ints, so filters mostly take the fast path.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyInt;

use crate::columns::exact_i64_ptr;

const SMALLEST: i64 = -5;
const LARGEST: i64 = 256;

/// The address range of CPython's small-int array.
#[derive(Clone, Copy)]
struct SmallInts {
    first: usize,
    end: usize,
}

impl SmallInts {
    fn contains(self, address: usize) -> bool {
        (self.first..self.end).contains(&address)
    }
}

static SMALL_INTS: PyOnceLock<Option<SmallInts>> = PyOnceLock::new();

fn small_ints(py: Python<'_>) -> Option<SmallInts> {
    *SMALL_INTS.get_or_init(py, || probe(py))
}

/// The singletons' addresses if Python hands out one object per small int and
/// those objects lie evenly spaced and packed in one block (so that any object
/// address inside the block is one of them); else None.
fn probe(py: Python<'_>) -> Option<SmallInts> {
    let objects: Vec<Bound<'_, PyInt>> = (SMALLEST..=LARGEST).map(|value| PyInt::new(py, value)).collect();
    let singletons = (SMALLEST..=LARGEST).zip(&objects).all(|(value, object)| PyInt::new(py, value).is(object));
    let first = objects.first()?.as_ptr() as usize;
    let stride = (objects.get(1)?.as_ptr() as usize).checked_sub(first).filter(|&stride| stride > 0)?;
    let evenly_spaced = objects.iter().enumerate().all(|(i, object)| {
        i.checked_mul(stride).and_then(|offset| first.checked_add(offset)) == Some(object.as_ptr() as usize)
    });
    // No other object (16 bytes at least) may fit between two of them.
    let size: usize = py.import("sys").ok()?.getattr("getsizeof").ok()?.call1((1,)).ok()?.extract().ok()?;
    let packed = stride < size + 16;
    (singletons && evenly_spaced && packed).then(|| SmallInts { first, end: first + objects.len() * stride })
}

/// The singleton's address of `value`, when `value` is a small int and the layout holds.
fn singleton(py: Python<'_>, value: i64) -> Option<usize> {
    small_ints(py)?;
    (SMALLEST..=LARGEST).contains(&value).then(|| address(py, value))
}

/// The address of the int object Python makes for `value` (a singleton when small).
fn address(py: Python<'_>, value: i64) -> usize {
    PyInt::new(py, value).as_ptr() as usize
}

/// Tests items for being the exact int `value`.
pub struct IntEquals {
    value: i64,
    singleton: Option<usize>,
    small: Option<SmallInts>,
}

impl IntEquals {
    pub fn new(py: Python<'_>, value: i64) -> Self {
        IntEquals { value, singleton: singleton(py, value), small: small_ints(py) }
    }

    /// Some(equal) for an exact int in i64, None for anything else.
    ///
    /// # Safety
    /// `item` must point to a live object and the caller must be attached.
    #[inline]
    pub unsafe fn test(&self, item: *mut ffi::PyObject) -> Option<bool> {
        let address = item as usize;
        if Some(address) == self.singleton {
            return Some(true);
        }
        if self.small.is_some_and(|small| small.contains(address)) {
            return Some(false);
        }
        unsafe { exact_i64_ptr(item) }.map(|value| value == self.value)
    }
}

/// Tests items for being an exact int in a set.
pub struct IntIn {
    sorted: Vec<i64>,
    singletons: Vec<usize>,
    small: Option<SmallInts>,
}

impl IntIn {
    pub fn new(py: Python<'_>, mut values: Vec<i64>) -> Self {
        values.sort_unstable();
        values.dedup();
        let singletons = values.iter().filter_map(|&value| singleton(py, value)).collect();
        IntIn { sorted: values, singletons, small: small_ints(py) }
    }

    /// Some(member) for an exact int in i64, None for anything else.
    ///
    /// # Safety
    /// `item` must point to a live object and the caller must be attached.
    #[inline]
    pub unsafe fn test(&self, item: *mut ffi::PyObject) -> Option<bool> {
        let address = item as usize;
        if self.small.is_some_and(|small| small.contains(address)) {
            return Some(self.singletons.contains(&address));
        }
        unsafe { exact_i64_ptr(item) }.map(|value| self.sorted.binary_search(&value).is_ok())
    }
}
