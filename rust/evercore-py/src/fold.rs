//! `fold_state_fields`: a `StateAggregate`'s state changes from its stored events,
//! scanning their JSON once instead of decoding each event into its payload class.

use evercore_core::fold::{Folder, Kind, Winner};
use pyo3::exceptions::{PyException, PyKeyError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::columns::Column;
use crate::refs::refs;

/// One payload class: how it treats each field, its defaults and its converters.
struct Plan<'py> {
    kinds: Vec<Kind>,
    defaults: Vec<Bound<'py, PyAny>>,
    converters: Vec<Option<Bound<'py, PyAny>>>,
}

/// Per field, the value of the last event that gave it one (see the stub); None
/// when the scan declines and the caller must decode event by event.
#[pyfunction]
pub fn fold_state_fields<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    plans: &Bound<'py, PyAny>,
    kinds: Vec<Bound<'py, PyBytes>>,
    defaults: Vec<Vec<Bound<'py, PyAny>>>,
    converters: Vec<Vec<Option<Bound<'py, PyAny>>>>,
    fields: Vec<String>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let loads = refs(py)?.json_loads.bind(py);
    let plan_list = plan_list(kinds, defaults, converters, fields.len())?;
    let names: Vec<&[u8]> = fields.iter().map(|field| field.as_bytes()).collect();
    let events = Column::new(events)?;
    let mut folder = Folder::new(&names);
    let mut plan_of_event = Vec::with_capacity(events.len());
    // The converted value of each field's winner, when its class converts it.
    let mut converted: Vec<Option<Bound<'py, PyAny>>> = vec![None; fields.len()];
    for index in 0..events.len() {
        let event = events.get(index)?;
        let event_type = event.getattr(intern!(py, "event_type"))?;
        let plan_number = match plans.get_item(&event_type) {
            Ok(plan) => plan.extract::<usize>()?,
            Err(error) if error.is_instance_of::<PyKeyError>(py) => {
                return Err(PyKeyError::new_err((event_type.unbind(),)));
            }
            Err(error) => return Err(error),
        };
        let plan = plan_list.get(plan_number).ok_or_else(|| PyValueError::new_err(format!("no plan {plan_number}")))?;
        let Some(state) = text_of(&event)? else { return Ok(None) };
        let text = state.to_str()?;
        if folder.add(index, &plan.kinds, text.as_bytes()).is_err() {
            return Ok(None);
        }
        for (field, converter) in plan.converters.iter().enumerate() {
            let (Some(convert), Some((start, end))) = (converter, folder.last_span(field)) else { continue };
            // Every value is converted, as decoding each event would: one that fails
            // sends the caller to the event-by-event path, which reports it.
            let Some(span) = text.get(start..end) else { return Ok(None) };
            let value = match parse(py, loads, span).and_then(|v| convert.call1((v,))) {
                Ok(value) => value,
                Err(error) if error.is_instance_of::<PyException>(py) => return Ok(None),
                Err(error) => return Err(error),
            };
            if folder.winners()[field] == Some(Winner::Value { event: index, start, end }) {
                converted[field] = Some(value);
            }
        }
        plan_of_event.push(plan_number);
    }
    let changes = PyDict::new(py);
    for (column, (field, winner)) in fields.iter().zip(folder.winners()).enumerate() {
        match *winner {
            None => {}
            Some(Winner::Value { event, start, end }) => match plan_list[plan_of_event[event]].converters[column] {
                Some(_) => changes.set_item(field, &converted[column])?,
                None => {
                    let text = text_of(&events.get(event)?)?.ok_or_else(|| PyValueError::new_err("state changed"))?;
                    let span = text.to_str()?.get(start..end).ok_or_else(|| PyValueError::new_err("state changed"))?;
                    changes.set_item(field, parse(py, loads, span)?)?;
                }
            },
            Some(Winner::Default { event }) => {
                changes.set_item(field, &plan_list[plan_of_event[event]].defaults[column])?;
            }
        }
    }
    Ok(Some(changes))
}

/// The value of a JSON text span: strings without escapes and small ints directly
/// (what `json.loads` gives for them), anything else through `json.loads`.
fn parse<'py>(py: Python<'py>, loads: &Bound<'py, PyAny>, span: &str) -> PyResult<Bound<'py, PyAny>> {
    let bytes = span.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'"' && !bytes.contains(&b'\\') {
        return Ok(PyString::new(py, &span[1..span.len() - 1]).into_any());
    }
    if bytes.len() <= 18 && bytes.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
        if let Ok(number) = span.parse::<i64>() {
            return Ok(number.into_pyobject(py)?.into_any());
        }
    }
    loads.call1((PyString::new(py, span),))
}

/// An event's state as a str whose UTF-8 can be read; None (decline) for anything
/// else, a str with lone surrogates included.
fn text_of<'py>(event: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
    let state = event.getattr(intern!(event.py(), "state"))?;
    match state.cast_into::<PyString>() {
        Ok(text) if text.to_str().is_ok() => Ok(Some(text)),
        _ => Ok(None),
    }
}

/// The plans, checked against the field list.
fn plan_list<'py>(
    kinds: Vec<Bound<'py, PyBytes>>,
    defaults: Vec<Vec<Bound<'py, PyAny>>>,
    converters: Vec<Vec<Option<Bound<'py, PyAny>>>>,
    width: usize,
) -> PyResult<Vec<Plan<'py>>> {
    if kinds.len() != defaults.len() || kinds.len() != converters.len() {
        return Err(PyValueError::new_err("fold_state_fields: kinds, defaults and converters differ in length"));
    }
    kinds
        .into_iter()
        .zip(defaults)
        .zip(converters)
        .map(|((codes, defaults), converters)| {
            let codes = codes.as_bytes();
            if codes.len() != width || defaults.len() != width || converters.len() != width {
                return Err(PyValueError::new_err("fold_state_fields: a plan does not cover every field"));
            }
            let kinds = codes
                .iter()
                .zip(&defaults)
                .map(|(code, default)| match Kind::from_code(*code) {
                    // Absent means a None field, which is not copied: nothing changes.
                    Some(Kind::CopiedWithDefault) if default.is_none() => Ok(Kind::Optional),
                    Some(kind) => Ok(kind),
                    None => Err(PyValueError::new_err(format!("unknown field kind {code}"))),
                })
                .collect::<PyResult<Vec<Kind>>>()?;
            Ok(Plan { kinds, defaults, converters })
        })
        .collect()
}
