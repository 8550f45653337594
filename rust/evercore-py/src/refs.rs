//! Python objects the kernels use, looked up once per interpreter.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyInt, PyString, PyTuple, PyType};

/// Classes and helpers from the standard library and from evercore itself.
pub struct Refs {
    pub datetime: Py<PyType>,
    pub date: Py<PyType>,
    pub time: Py<PyType>,
    pub uuid: Py<PyType>,
    pub decimal: Py<PyType>,
    pub enum_: Py<PyType>,
    pub mapping: Py<PyType>,
    pub utc: Py<PyAny>,
    pub dataclass_fields: Py<PyAny>,
    pub json_loads: Py<PyAny>,
    pub postgres_epoch: Py<PyAny>,
    pub one_microsecond: Py<PyAny>,
    pub storage_engine_event: Py<PyType>,
    pub serialized_event: Py<PyType>,
    pub fromtimestamp: Py<PyAny>,
    pub sequence_error: Py<PyType>,
    pub serialization_error: Py<PyType>,
    pub pure: Py<PyModule>,
    /// `tuple.__new__`'s C slot: builds a `StorageEngineEvent` the way the
    /// namedtuple's own `__new__` does, without its Python-level frame.
    tuple_new: ffi::newfunc,
}

static REFS: PyOnceLock<Refs> = PyOnceLock::new();

/// The shared references (imported on first use).
pub fn refs(py: Python<'_>) -> PyResult<&'static Refs> {
    REFS.get_or_try_init(py, || load(py))
}

fn class(py: Python<'_>, module: &str, name: &str) -> PyResult<Py<PyType>> {
    Ok(py.import(module)?.getattr(name)?.cast_into::<PyType>()?.unbind())
}

fn load(py: Python<'_>) -> PyResult<Refs> {
    let datetime = py.import("datetime")?;
    let utc = datetime.getattr("timezone")?.getattr("utc")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("tzinfo", &utc)?;
    let postgres_epoch = datetime.getattr("datetime")?.call((2000, 1, 1), Some(&kwargs))?;
    let micro = PyDict::new(py);
    micro.set_item("microseconds", 1)?;
    let one_microsecond = datetime.getattr("timedelta")?.call((), Some(&micro))?;
    let storage_engine_event = class(py, "evercore.values", "StorageEngineEvent")?;
    let serialized_event = class(py, "evercore.values", "SerializedEvent")?;
    let tuple_type = py.get_type::<PyTuple>();
    for cls in [&storage_engine_event, &serialized_event] {
        if !cls.bind(py).is_subclass(&tuple_type)? {
            return Err(PyTypeError::new_err("evercore.values' event types must be tuples"));
        }
    }
    // SAFETY: PyType_GetSlot reads a slot of the (static, immortal) tuple type;
    // tuple always has tp_new, and a null pointer is refused below.
    let slot = unsafe { ffi::PyType_GetSlot(tuple_type.as_type_ptr(), ffi::Py_tp_new) };
    if slot.is_null() {
        return Err(PyTypeError::new_err("tuple has no tp_new slot"));
    }
    // SAFETY: the Py_tp_new slot holds a `newfunc`.
    let tuple_new = unsafe { std::mem::transmute::<*mut std::ffi::c_void, ffi::newfunc>(slot) };
    Ok(Refs {
        datetime: class(py, "datetime", "datetime")?,
        date: class(py, "datetime", "date")?,
        time: class(py, "datetime", "time")?,
        uuid: class(py, "uuid", "UUID")?,
        decimal: class(py, "decimal", "Decimal")?,
        enum_: class(py, "enum", "Enum")?,
        mapping: class(py, "collections.abc", "Mapping")?,
        utc: utc.unbind(),
        dataclass_fields: py.import("dataclasses")?.getattr("fields")?.unbind(),
        json_loads: py.import("json")?.getattr("loads")?.unbind(),
        postgres_epoch: postgres_epoch.unbind(),
        one_microsecond: one_microsecond.unbind(),
        storage_engine_event,
        serialized_event,
        fromtimestamp: datetime.getattr("datetime")?.getattr("fromtimestamp")?.unbind(),
        sequence_error: class(py, "evercore.errors", "SequenceError")?,
        serialization_error: class(py, "evercore.errors", "SerializationError")?,
        pure: py.import("evercore._pure")?.unbind(),
        tuple_new,
    })
}

impl Refs {
    /// A `SerializationError` carrying `message`.
    pub fn serialization_error(&self, py: Python<'_>, message: String) -> PyErr {
        match self.serialization_error.bind(py).call1((message,)) {
            Ok(error) => PyErr::from_value(error),
            Err(error) => error,
        }
    }

    /// `StorageEngineEvent(*fields)`, built like the namedtuple's `__new__` does
    /// (`tuple.__new__(StorageEngineEvent, fields)`); see [`Refs::event_tuple`].
    ///
    /// When every field is an exact int, str or datetime the event can never be
    /// part of a reference cycle, so it is taken off the garbage collector's lists
    /// (CPython does this by itself only for exact tuples): a store holding
    /// millions of events does not make every full collection walk all of them.
    pub fn storage_engine_event<'py>(&self, fields: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.event_tuple(self.storage_engine_event.bind(fields.py()), fields)
    }

    /// `SerializedEvent(*fields)`, built the same way.
    pub fn serialized_event<'py>(&self, fields: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        self.event_tuple(self.serialized_event.bind(fields.py()), fields)
    }

    /// `tuple.__new__(cls, fields)` for one of the event namedtuples.
    fn event_tuple<'py>(&self, cls: &Bound<'py, PyType>, fields: Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let py = fields.py();
        let atomic = fields.iter().all(|field| {
            field.is_exact_instance_of::<PyInt>()
                || field.is_exact_instance_of::<PyString>()
                || field.get_type().is(self.datetime.bind(py))
        });
        let args = PyTuple::new(py, [fields])?;
        // SAFETY: `tuple_new` is tuple's tp_new and `cls` a subclass of tuple
        // (checked in `load`), which is what `tuple.__new__(cls, args)` calls;
        // it returns a new reference or null with an exception set.
        let event = unsafe {
            let result = (self.tuple_new)(cls.as_type_ptr(), args.as_ptr(), std::ptr::null_mut());
            Bound::from_owned_ptr_or_err(py, result)?
        };
        if atomic {
            // SAFETY: `event` is a live, GC-tracked tuple subclass instance that we
            // own; untracking is what CPython's own tuple untracking does.
            unsafe { ffi::PyObject_GC_UnTrack(event.as_ptr().cast()) };
        }
        Ok(event)
    }
}
