//! `fold_state_fields`: a `StateAggregate`'s state changes from its stored events,
//! scanning their JSON once instead of decoding each event into its payload class.

use evercore_core::fold::{Folder, Kind, Winner};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::columns::Column;
use crate::refs::refs;

/// Per field, the value of the last event that gave it one (see the stub); None
/// when the scan declines and the caller must decode event by event.
#[pyfunction]
pub fn fold_state_fields<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    plans: &Bound<'py, PyAny>,
    kinds: Vec<Bound<'py, PyBytes>>,
    defaults: Vec<Vec<Bound<'py, PyAny>>>,
    fields: Vec<String>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let loads = refs(py)?.json_loads.bind(py);
    let kinds = plan_kinds(&kinds, &defaults, fields.len())?;
    let names: Vec<&[u8]> = fields.iter().map(|field| field.as_bytes()).collect();
    let events = Column::new(events)?;
    let mut folder = Folder::new(&names);
    let mut plan_of_event = Vec::with_capacity(events.len());
    for index in 0..events.len() {
        let event = events.get(index)?;
        let event_type = event.getattr(intern!(py, "event_type"))?;
        let plan = match plans.get_item(&event_type) {
            Ok(plan) => plan.extract::<usize>()?,
            Err(error) if error.is_instance_of::<PyKeyError>(py) => {
                return Err(PyKeyError::new_err((event_type.unbind(),)));
            }
            Err(error) => return Err(error),
        };
        let plan_kinds = kinds.get(plan).ok_or_else(|| PyValueError::new_err(format!("no plan {plan}")))?;
        let Some(text) = text_of(&event)? else { return Ok(None) };
        if folder.add(index, plan_kinds, text.to_str()?.as_bytes()).is_err() {
            return Ok(None);
        }
        plan_of_event.push(plan);
    }
    let changes = PyDict::new(py);
    for (column, (field, winner)) in fields.iter().zip(folder.winners()).enumerate() {
        match *winner {
            None => {}
            Some(Winner::Value { event, start, end }) => {
                let text = text_of(&events.get(event)?)?.ok_or_else(|| PyValueError::new_err("state changed"))?;
                let span = text.to_str()?.get(start..end).ok_or_else(|| PyValueError::new_err("state changed"))?;
                changes.set_item(field, loads.call1((PyString::new(py, span),))?)?;
            }
            Some(Winner::Default { event }) => {
                changes.set_item(field, &defaults[plan_of_event[event]][column])?;
            }
        }
    }
    Ok(Some(changes))
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

/// Each plan's kinds, checked against the field list and its defaults.
fn plan_kinds(
    kinds: &[Bound<'_, PyBytes>],
    defaults: &[Vec<Bound<'_, PyAny>>],
    width: usize,
) -> PyResult<Vec<Vec<Kind>>> {
    if kinds.len() != defaults.len() {
        return Err(PyValueError::new_err("fold_state_fields: kinds and defaults differ in length"));
    }
    kinds
        .iter()
        .zip(defaults)
        .map(|(codes, plan_defaults)| {
            let codes = codes.as_bytes();
            if codes.len() != width || plan_defaults.len() != width {
                return Err(PyValueError::new_err("fold_state_fields: a plan does not cover every field"));
            }
            codes
                .iter()
                .zip(plan_defaults)
                .map(|(code, default)| match Kind::from_code(*code) {
                    // Absent means a None field, which is not copied: nothing changes.
                    Some(Kind::CopiedWithDefault) if default.is_none() => Ok(Kind::Optional),
                    Some(kind) => Ok(kind),
                    None => Err(PyValueError::new_err(format!("unknown field kind {code}"))),
                })
                .collect()
        })
        .collect()
}
