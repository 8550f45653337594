//! Payloads to JSON text, byte for byte what the twin (`evercore._pure.dumps`) writes.
//!
//! The walk follows the twin's type checks in the same order; exact built-in
//! types (str, int, float, bool, None, dict, list, tuple, datetime) take a fast
//! path first, which gives the same result because none of them can match an
//! earlier check of the twin. A failure records its field path while the
//! recursion unwinds, so the success path pays nothing for error reporting.

use std::sync::{Arc, Mutex};

use evercore_core::json;
use evercore_core::time::Civil;
use evercore_core::MAX_NESTING;
use pyo3::exceptions::{PyAttributeError, PyRuntimeError, PyUnicodeEncodeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::refs::Refs;

/// One step of a field path: `.key` or `[index]`.
enum Step<'py> {
    Key(Bound<'py, PyAny>),
    Index(usize),
}

/// What went wrong, before the message is written.
enum Problem<'py> {
    NotFinite(Bound<'py, PyAny>),
    KeyNotStr(Bound<'py, PyAny>),
    KeySurrogate(Bound<'py, PyAny>),
    Surrogate,
    Unsupported(Bound<'py, PyAny>),
    TooDeep,
    /// The value's own conversion raised (a model's dumper, a datetime's shift to
    /// UTC, an int beyond Python's digit limit); chained as the cause.
    Failed(PyErr),
}

/// A failed walk: a Python exception to propagate unchanged (from a model's
/// `model_dump`, say), or a serialization problem with its path, innermost step first.
enum Fault<'py> {
    Py(PyErr),
    Bad(Problem<'py>, Vec<Step<'py>>),
}

impl<'py> Fault<'py> {
    fn at(mut self, step: Step<'py>) -> Self {
        if let Fault::Bad(_, steps) = &mut self {
            steps.push(step);
        }
        self
    }
}

impl From<PyErr> for Fault<'_> {
    fn from(error: PyErr) -> Self {
        Fault::Py(error)
    }
}

type Walk<'py> = Result<(), Fault<'py>>;

fn bad<'py>(problem: Problem<'py>) -> Walk<'py> {
    Err(Fault::Bad(problem, Vec::new()))
}

/// Any Python exception from `result` becomes [`Problem::Failed`] at this value.
fn failed<'py, T>(result: PyResult<T>) -> Result<T, Fault<'py>> {
    result.map_err(|error| Fault::Bad(Problem::Failed(error), Vec::new()))
}

/// How the twin treats the values of a class that is not an exact built-in type,
/// in the order of its checks. Found once per class (see [`KINDS`]).
enum Kind {
    Str,
    Int,
    Float,
    Datetime,
    /// date and time: `isoformat()`.
    IsoFormat,
    /// UUID and Decimal: `str(value)`.
    Text,
    Enum,
    Mapping,
    /// list and tuple subclasses (NamedTuples among them).
    Iterable,
    /// A dataclass, with its field names.
    Dataclass(Vec<Py<PyString>>),
    /// A pydantic model: `model_dump(mode="json")`.
    ModelDump,
    /// A msgspec Struct: `msgspec.to_builtins(value)`.
    Msgspec,
}

/// Classes seen so far and their kind. Classes nobody can serialize are not
/// remembered (they are errors, and a later ABC registration may change them).
/// Bounded, so that classes made on the fly do not pile up.
static KINDS: Mutex<Vec<(Py<PyType>, Arc<Kind>)>> = Mutex::new(Vec::new());
const MAX_REMEMBERED_CLASSES: usize = 256;

/// Serializes payloads one after another, reusing its buffer.
pub struct Serializer<'py> {
    py: Python<'py>,
    refs: &'static Refs,
    out: Vec<u8>,
    /// The class met last and its kind: payloads of a batch mostly share a class.
    last_kind: Option<(Bound<'py, PyType>, Arc<Kind>)>,
}

impl<'py> Serializer<'py> {
    pub fn new(py: Python<'py>, refs: &'static Refs) -> Self {
        Serializer { py, refs, out: Vec::with_capacity(256), last_kind: None }
    }

    /// JSON text of `payload`; errors name `event_type` and the field path.
    pub fn dumps(
        &mut self,
        payload: &Bound<'py, PyAny>,
        event_type: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyString>> {
        self.out.clear();
        match self.value(payload, 0) {
            Ok(()) => {
                let text = std::str::from_utf8(&self.out)
                    .map_err(|e| PyRuntimeError::new_err(format!("serializer produced invalid UTF-8: {e}")))?;
                Ok(PyString::new(self.py, text))
            }
            Err(Fault::Py(error)) => Err(error),
            Err(Fault::Bad(problem, steps)) => Err(self.error(event_type, problem, steps)),
        }
    }

    fn value(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> Walk<'py> {
        if depth > MAX_NESTING {
            return bad(Problem::TooDeep);
        }
        if let Ok(text) = obj.cast_exact::<PyString>() {
            return self.string(text);
        }
        if obj.is_exact_instance_of::<PyInt>() {
            return self.int(obj);
        }
        if let Ok(float) = obj.cast_exact::<PyFloat>() {
            return self.float(obj, float.value());
        }
        if let Ok(flag) = obj.cast_exact::<PyBool>() {
            self.out.extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
            return Ok(());
        }
        if obj.is_none() {
            self.out.extend_from_slice(b"null");
            return Ok(());
        }
        if let Ok(dict) = obj.cast_exact::<PyDict>() {
            return self.dict(dict, depth);
        }
        if let Ok(list) = obj.cast_exact::<PyList>() {
            return self.list(list, depth);
        }
        if let Ok(tuple) = obj.cast_exact::<PyTuple>() {
            return self.tuple(tuple, depth);
        }
        if obj.get_type().is(self.refs.datetime.bind(self.py)) {
            return self.datetime(obj);
        }
        self.other(obj, depth)
    }

    /// Everything but the exact built-in types.
    fn other(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> Walk<'py> {
        let py = self.py;
        let Some(kind) = self.kind(obj)? else {
            return bad(Problem::Unsupported(obj.clone()));
        };
        match &*kind {
            Kind::Str => self.string(obj.cast::<PyString>().map_err(PyErr::from)?),
            Kind::Int => {
                // SAFETY: PyNumber_Long returns a new reference or null with an exception.
                let exact = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyNumber_Long(obj.as_ptr()))? };
                self.int(&exact)
            }
            Kind::Float => self.float(obj, obj.cast::<PyFloat>().map_err(PyErr::from)?.value()),
            Kind::Datetime => self.datetime(obj),
            Kind::IsoFormat => self.python_text(&obj.call_method0(intern!(py, "isoformat"))?),
            Kind::Text => self.python_text(obj.str()?.as_any()),
            Kind::Enum => self.value(&obj.getattr(intern!(py, "value"))?, depth + 1),
            Kind::Mapping => self.mapping(obj, depth),
            Kind::Iterable => self.iterable(obj, depth),
            Kind::Dataclass(names) => self.dataclass(obj, names, depth),
            Kind::ModelDump => {
                let kwargs = PyDict::new(py);
                kwargs.set_item("mode", "json")?;
                let dumped = failed(obj.call_method(intern!(py, "model_dump"), (), Some(&kwargs)))?;
                self.dumped(obj, dumped, depth)
            }
            Kind::Msgspec => {
                let to_builtins = py.import("msgspec")?.getattr("to_builtins")?;
                let dumped = failed(to_builtins.call1((obj,)))?;
                self.dumped(obj, dumped, depth)
            }
        }
    }

    /// What a model dumped itself to; None counts as "cannot serialize", as in the twin.
    fn dumped(&mut self, obj: &Bound<'py, PyAny>, dumped: Bound<'py, PyAny>, depth: usize) -> Walk<'py> {
        if dumped.is_none() {
            return bad(Problem::Unsupported(obj.clone()));
        }
        self.value(&dumped, depth + 1)
    }

    /// The kind of `obj`'s class: from the last class, the shared table, or found now.
    fn kind(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<Option<Arc<Kind>>> {
        let cls = obj.get_type();
        if let Some((last, kind)) = &self.last_kind {
            if last.is(&cls) {
                return Ok(Some(kind.clone()));
            }
        }
        let remembered = KINDS.lock().ok().and_then(|kinds| {
            kinds.iter().find(|(known, _)| known.as_ptr() == cls.as_ptr()).map(|(_, kind)| kind.clone())
        });
        let kind = match remembered {
            Some(kind) => kind,
            None => match self.classify(obj, &cls)? {
                Some(kind) => remember(&cls, Arc::new(kind)),
                None => return Ok(None),
            },
        };
        self.last_kind = Some((cls, kind.clone()));
        Ok(Some(kind))
    }

    /// The twin's checks, in its order, for a value that is not an exact built-in.
    fn classify(&self, obj: &Bound<'py, PyAny>, cls: &Bound<'py, PyType>) -> PyResult<Option<Kind>> {
        let py = self.py;
        let refs = self.refs;
        let kind = if obj.is_instance_of::<PyString>() {
            Kind::Str
        } else if obj.is_instance_of::<PyInt>() {
            Kind::Int
        } else if obj.is_instance_of::<PyFloat>() {
            Kind::Float
        } else if obj.is_instance(refs.datetime.bind(py))? {
            Kind::Datetime
        } else if obj.is_instance(refs.date.bind(py))? || obj.is_instance(refs.time.bind(py))? {
            Kind::IsoFormat
        } else if obj.is_instance(refs.uuid.bind(py))? || obj.is_instance(refs.decimal.bind(py))? {
            Kind::Text
        } else if obj.is_instance(refs.enum_.bind(py))? {
            Kind::Enum
        } else if obj.is_instance(refs.mapping.bind(py))? {
            Kind::Mapping
        } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            Kind::Iterable
        } else if !obj.is_instance_of::<PyType>() && cls.hasattr(intern!(py, "__dataclass_fields__"))? {
            let mut names = Vec::new();
            for field in refs.dataclass_fields.bind(py).call1((cls,))?.try_iter()? {
                names.push(field?.getattr(intern!(py, "name"))?.cast_into::<PyString>()?.unbind());
            }
            Kind::Dataclass(names)
        } else if is_model(obj, cls)? {
            Kind::ModelDump
        } else if cls.hasattr(intern!(py, "__struct_fields__"))? {
            Kind::Msgspec
        } else {
            return Ok(None);
        };
        Ok(Some(kind))
    }

    fn string(&mut self, text: &Bound<'py, PyString>) -> Walk<'py> {
        match utf8(text)? {
            Some(text) => {
                json::write_str(&mut self.out, text);
                Ok(())
            }
            None => bad(Problem::Surrogate),
        }
    }

    /// A str produced by Python code (isoformat, str(uuid)), written as the twin's
    /// `json.dumps` writes it.
    fn python_text(&mut self, text: &Bound<'py, PyAny>) -> Walk<'py> {
        let text = text.cast::<PyString>().map_err(PyErr::from)?;
        json::write_str(&mut self.out, text.to_str()?);
        Ok(())
    }

    /// An exact int: in full, however large (through Python beyond i64).
    fn int(&mut self, obj: &Bound<'py, PyAny>) -> Walk<'py> {
        match obj.extract::<i64>() {
            Ok(value) => json::write_i64(&mut self.out, value),
            Err(_) => self.out.extend_from_slice(failed(obj.repr())?.to_str()?.as_bytes()),
        }
        Ok(())
    }

    fn float(&mut self, obj: &Bound<'py, PyAny>, value: f64) -> Walk<'py> {
        if json::write_f64(&mut self.out, value) {
            Ok(())
        } else {
            bad(Problem::NotFinite(obj.clone()))
        }
    }

    fn dict(&mut self, dict: &Bound<'py, PyDict>, depth: usize) -> Walk<'py> {
        let size = dict.len();
        let mut position: ffi::Py_ssize_t = 0;
        let mut key_ptr = std::ptr::null_mut();
        let mut value_ptr = std::ptr::null_mut();
        self.out.push(b'{');
        let mut first = true;
        // SAFETY: PyDict_Next yields borrowed references, turned into owned ones
        // before any Python code can run; the size check below stops the loop if
        // that code changed the dict (as Python's own iteration does).
        while unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut position, &mut key_ptr, &mut value_ptr) } != 0 {
            let (key, value) =
                unsafe { (Bound::from_borrowed_ptr(self.py, key_ptr), Bound::from_borrowed_ptr(self.py, value_ptr)) };
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.key(&key)?;
            self.value(&value, depth + 1).map_err(|fault| fault.at(Step::Key(key)))?;
            if dict.len() != size {
                return Err(PyRuntimeError::new_err("dictionary changed size during iteration").into());
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// An object key followed by `:`; it must be a str that UTF-8 can encode.
    fn key(&mut self, key: &Bound<'py, PyAny>) -> Walk<'py> {
        let Ok(text) = key.cast::<PyString>() else {
            return bad(Problem::KeyNotStr(key.clone()));
        };
        let Some(text) = utf8(text)? else {
            return bad(Problem::KeySurrogate(key.clone()));
        };
        json::write_str(&mut self.out, text);
        self.out.push(b':');
        Ok(())
    }

    /// Any other Mapping, read through `items()` as the twin does; a key seen twice
    /// keeps its first place and its last value, as in the dict the twin builds.
    fn mapping(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> Walk<'py> {
        let mut members: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let places = PyDict::new(self.py);
        let outer = std::mem::take(&mut self.out);
        let result = self.mapping_members(obj, depth, &mut members, &places);
        self.out = outer;
        result?;
        self.out.push(b'{');
        for (index, (key, value)) in members.iter().enumerate() {
            if index > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(key);
            self.out.extend_from_slice(value);
        }
        self.out.push(b'}');
        Ok(())
    }

    fn mapping_members(
        &mut self,
        obj: &Bound<'py, PyAny>,
        depth: usize,
        members: &mut Vec<(Vec<u8>, Vec<u8>)>,
        places: &Bound<'py, PyDict>,
    ) -> Walk<'py> {
        for item in obj.call_method0(intern!(self.py, "items"))?.try_iter()? {
            let (key, value) = item?.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()?;
            self.out.clear();
            self.key(&key)?;
            let key_json = self.out.clone();
            self.out.clear();
            self.value(&value, depth + 1).map_err(|fault| fault.at(Step::Key(key.clone())))?;
            let value_json = std::mem::take(&mut self.out);
            match places.get_item(&key)? {
                Some(place) => members[place.extract::<usize>()?].1 = value_json,
                None => {
                    places.set_item(&key, members.len())?;
                    members.push((key_json, value_json));
                }
            }
        }
        Ok(())
    }

    fn list(&mut self, list: &Bound<'py, PyList>, depth: usize) -> Walk<'py> {
        self.out.push(b'[');
        let mut index = 0;
        // The length is read each time: a callback may have shrunk the list.
        while index < list.len() {
            if index > 0 {
                self.out.push(b',');
            }
            let item = list.get_item(index)?;
            self.value(&item, depth + 1).map_err(|fault| fault.at(Step::Index(index)))?;
            index += 1;
        }
        self.out.push(b']');
        Ok(())
    }

    fn tuple(&mut self, tuple: &Bound<'py, PyTuple>, depth: usize) -> Walk<'py> {
        self.out.push(b'[');
        for (index, item) in tuple.iter().enumerate() {
            if index > 0 {
                self.out.push(b',');
            }
            self.value(&item, depth + 1).map_err(|fault| fault.at(Step::Index(index)))?;
        }
        self.out.push(b']');
        Ok(())
    }

    /// A list or tuple subclass, iterated as the twin iterates it.
    fn iterable(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> Walk<'py> {
        self.out.push(b'[');
        for (index, item) in obj.try_iter()?.enumerate() {
            if index > 0 {
                self.out.push(b',');
            }
            self.value(&item?, depth + 1).map_err(|fault| fault.at(Step::Index(index)))?;
        }
        self.out.push(b']');
        Ok(())
    }

    fn dataclass(&mut self, obj: &Bound<'py, PyAny>, names: &[Py<PyString>], depth: usize) -> Walk<'py> {
        self.out.push(b'{');
        for (index, name) in names.iter().enumerate() {
            let name = name.bind(self.py);
            if index > 0 {
                self.out.push(b',');
            }
            json::write_str(&mut self.out, name.to_str()?);
            self.out.push(b':');
            let value = obj.getattr(name)?;
            self.value(&value, depth + 1).map_err(|fault| fault.at(Step::Key(name.clone().into_any())))?;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn datetime(&mut self, obj: &Bound<'py, PyAny>) -> Walk<'py> {
        if let Some(civil) = utc_fields(obj, self.refs)? {
            self.out.push(b'"');
            civil.write_iso_utc(&mut self.out);
            self.out.push(b'"');
            return Ok(());
        }
        // Other zones and subclasses: the twin's own calls.
        let py = self.py;
        let mut value = obj.clone();
        if !value.getattr(intern!(py, "tzinfo"))?.is_none() {
            let kwargs = PyDict::new(py);
            kwargs.set_item("tzinfo", py.None())?;
            let utc = failed(value.call_method1(intern!(py, "astimezone"), (self.refs.utc.bind(py),)))?;
            value = utc.call_method(intern!(py, "replace"), (), Some(&kwargs))?;
        }
        let text = value.call_method0(intern!(py, "isoformat"))?;
        let text = text.cast::<PyString>().map_err(PyErr::from)?.to_str()?;
        self.out.push(b'"');
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"Z\"");
        Ok(())
    }

    fn error(&self, event_type: &Bound<'py, PyAny>, problem: Problem<'py>, steps: Vec<Step<'py>>) -> PyErr {
        let cause = match &problem {
            Problem::Failed(error) => Some(error.clone_ref(self.py)),
            _ => None,
        };
        match self.message(event_type, problem, steps) {
            Ok(message) => {
                let error = self.refs.serialization_error(self.py, message);
                error.set_cause(self.py, cause);
                error
            }
            Err(error) => error,
        }
    }

    fn message(
        &self,
        event_type: &Bound<'py, PyAny>,
        problem: Problem<'py>,
        steps: Vec<Step<'py>>,
    ) -> PyResult<String> {
        let mut path = String::from("$");
        for step in steps.iter().rev() {
            match step {
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(&key.str()?.to_string_lossy());
                }
                Step::Index(index) => path.push_str(&format!("[{index}]")),
            }
        }
        let event = event_type.repr()?;
        let head = format!("event {}: field {path}", event.to_string_lossy());
        let repr = |obj: &Bound<'py, PyAny>| -> PyResult<String> { Ok(obj.repr()?.to_string_lossy().into_owned()) };
        let type_name =
            |obj: &Bound<'py, PyAny>| -> PyResult<String> { Ok(obj.get_type().name()?.to_string_lossy().into_owned()) };
        Ok(match problem {
            Problem::NotFinite(value) => {
                format!("{head} is {}; NaN and Infinity are not valid JSON", repr(&value)?)
            }
            Problem::KeyNotStr(key) => {
                format!("{head} has a key {} of type {}; JSON object keys must be str", repr(&key)?, type_name(&key)?)
            }
            Problem::KeySurrogate(key) => {
                format!("{head} has a key {} with a lone surrogate, which cannot be encoded as UTF-8", repr(&key)?)
            }
            Problem::Surrogate => {
                format!("{head} is a str with a lone surrogate, which cannot be encoded as UTF-8")
            }
            Problem::Unsupported(value) => {
                format!("{head} has a value of type {} that cannot be serialized to JSON", type_name(&value)?)
            }
            Problem::TooDeep => format!("{head} is nested more than {MAX_NESTING} levels deep"),
            Problem::Failed(error) => {
                let value = error.value(self.py);
                format!(
                    "{head} could not be serialized ({}: {})",
                    value.get_type().name()?.to_string_lossy(),
                    value.str()?.to_string_lossy()
                )
            }
        })
    }
}

/// A pydantic model, as the twin tells: a callable `model_dump` and a class with
/// `model_fields`.
fn is_model(obj: &Bound<'_, PyAny>, cls: &Bound<'_, PyType>) -> PyResult<bool> {
    let py = obj.py();
    match obj.getattr(intern!(py, "model_dump")) {
        Ok(method) => Ok(method.is_callable() && cls.hasattr(intern!(py, "model_fields"))?),
        Err(error) if error.is_instance_of::<PyAttributeError>(py) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Add a class to [`KINDS`] (emptied first when full) and hand its kind back.
fn remember(cls: &Bound<'_, PyType>, kind: Arc<Kind>) -> Arc<Kind> {
    let evicted = match KINDS.lock() {
        Ok(mut kinds) => {
            let evicted = if kinds.len() >= MAX_REMEMBERED_CLASSES { std::mem::take(&mut *kinds) } else { Vec::new() };
            kinds.push((cls.clone().unbind(), kind.clone()));
            evicted
        }
        Err(_) => Vec::new(),
    };
    // Released outside the lock: freeing a class can run Python code.
    drop(evicted);
    kind
}

/// The UTF-8 text of a str; None when it holds a lone surrogate.
pub fn utf8<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Option<&'a str>> {
    match text.to_str() {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.is_instance_of::<PyUnicodeEncodeError>(text.py()) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The UTC fields of an exact `datetime` that is naive or in `timezone.utc`, read
/// from its pickle state (`__reduce__`) in one call; None for anything else.
pub fn utc_fields(obj: &Bound<'_, PyAny>, refs: &Refs) -> PyResult<Option<Civil>> {
    let py = obj.py();
    if !obj.get_type().is(refs.datetime.bind(py)) {
        return Ok(None);
    }
    let reduced = obj.call_method0(intern!(py, "__reduce__"))?;
    let Ok(reduced) = reduced.cast::<PyTuple>() else { return Ok(None) };
    let Ok(args) = reduced.get_item(1).and_then(|args| Ok(args.cast_into::<PyTuple>()?)) else {
        return Ok(None);
    };
    let zone_is_utc = match args.len() {
        1 => true,
        2 => {
            let zone = args.get_item(1)?;
            zone.is_none() || zone.is(refs.utc.bind(py))
        }
        _ => false,
    };
    if !zone_is_utc {
        return Ok(None);
    }
    let state = args.get_item(0)?;
    let Ok(state) = state.cast::<PyBytes>() else { return Ok(None) };
    Ok(Civil::from_pickle_state(state.as_bytes()))
}
