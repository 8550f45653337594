//! `encode_copy_rows`: stored events as PostgreSQL binary COPY data.

use evercore_core::copy::{CopyWriter, TextProblem};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyString, PyTuple};

use crate::columns::Column;
use crate::refs::{refs, Refs};
use crate::serialize::{utc_fields, utf8};

const FIELDS: [&str; 6] = ["aggregate_id", "sequence", "event_type_id", "state", "event_time", "reference"];

/// PostgreSQL binary COPY data (header, rows, trailer) for the events table's
/// columns; a value PostgreSQL would refuse is a `SerializationError`.
#[pyfunction]
pub fn encode_copy_rows<'py>(py: Python<'py>, events: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let refs = refs(py)?;
    let events = Column::new(events)?;
    let mut writer = CopyWriter::new(events.len() * 160);
    for index in 0..events.len() {
        let event = events.get(index)?;
        let fields = fields_of(&event, refs)?;
        let row = Row { fields: &fields, refs };
        writer.row(6);
        for field in 0..3 {
            writer.int8(row.int8(field)?);
        }
        row.text(&mut writer, 3)?;
        writer.timestamptz(row.timestamp()?);
        row.text(&mut writer, 5)?;
    }
    Ok(PyBytes::new(py, &writer.finish()))
}

/// The six fields of an event: by position for a `StorageEngineEvent`, by
/// attribute (as the twin reads them) for anything else.
fn fields_of<'py>(event: &Bound<'py, PyAny>, refs: &Refs) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if event.get_type().is(refs.storage_engine_event.bind(event.py())) {
        if let Ok(tuple) = event.cast::<PyTuple>() {
            if tuple.len() == FIELDS.len() {
                return Ok(tuple.iter().collect());
            }
        }
    }
    FIELDS.iter().map(|name| event.getattr(*name)).collect()
}

struct Row<'a, 'py> {
    fields: &'a [Bound<'py, PyAny>],
    refs: &'static Refs,
}

impl<'py> Row<'_, 'py> {
    /// A `SerializationError` about field `field`, worded as the twin's.
    fn error(&self, field: usize, problem: &str) -> PyErr {
        let py = self.fields[0].py();
        let shown = |obj: &Bound<'py, PyAny>| obj.repr().map(|text| text.to_string_lossy().into_owned());
        match (shown(&self.fields[0]), shown(&self.fields[1])) {
            (Ok(aggregate), Ok(sequence)) => self.refs.serialization_error(
                py,
                format!("event (aggregate {aggregate}, sequence {sequence}): {} {problem}", FIELDS[field]),
            ),
            (Err(error), _) | (_, Err(error)) => error,
        }
    }

    fn type_name(&self, field: usize) -> PyResult<String> {
        Ok(self.fields[field].get_type().name()?.to_string_lossy().into_owned())
    }

    fn int8(&self, field: usize) -> PyResult<i64> {
        let value = &self.fields[field];
        match value.is_instance_of::<PyInt>().then(|| value.extract::<i64>().ok()).flatten() {
            Some(number) => Ok(number),
            None => Err(self.error(field, &format!("{} is not an int8 integer", value.repr()?.to_string_lossy()))),
        }
    }

    fn text(&self, writer: &mut CopyWriter, field: usize) -> PyResult<()> {
        let value = &self.fields[field];
        let Ok(text) = value.cast::<PyString>() else {
            return Err(self.error(field, &format!("is a {}, not a str", self.type_name(field)?)));
        };
        let Some(utf8_text) = utf8(text)? else {
            // The twin looks for NUL before encoding.
            let problem = if text.contains("\0")? {
                "contains a NUL character"
            } else {
                "contains a lone surrogate, which cannot be encoded as UTF-8"
            };
            return Err(self.error(field, problem));
        };
        writer.text(utf8_text).map_err(|problem| match problem {
            TextProblem::Nul => self.error(field, "contains a NUL character"),
            TextProblem::TooLong => self.error(field, "is longer than PostgreSQL's 1 GB field limit"),
        })
    }

    /// `event_time` as microseconds since 2000-01-01 UTC; a naive time is UTC.
    fn timestamp(&self) -> PyResult<i64> {
        const FIELD: usize = 4;
        let value = &self.fields[FIELD];
        let py = value.py();
        if let Some(civil) = utc_fields(value, self.refs)? {
            return Ok(civil.postgres_microseconds());
        }
        if !value.is_instance(self.refs.datetime.bind(py))? {
            return Err(self.error(FIELD, &format!("is a {}, not a datetime", self.type_name(FIELD)?)));
        }
        let mut value = value.clone();
        if value.getattr(intern!(py, "tzinfo"))?.is_none() {
            let kwargs = PyDict::new(py);
            kwargs.set_item("tzinfo", self.refs.utc.bind(py))?;
            value = value.call_method("replace", (), Some(&kwargs))?;
        }
        value.sub(self.refs.postgres_epoch.bind(py))?.floor_div(self.refs.one_microsecond.bind(py))?.extract()
    }
}
