//! `serialize_payloads`, `dumps` and `encode_events`: a context's batch into what
//! the engines write.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::columns::{check_lengths, Column};
use crate::refs::refs;
use crate::serialize::Serializer;

/// Compact JSON of one payload, byte-identical to `evercore._pure.dumps`;
/// `SerializationError` names `event_type` and the field path.
#[pyfunction]
#[pyo3(signature = (payload, event_type = None), text_signature = "(payload, event_type='')")]
pub fn dumps<'py>(
    py: Python<'py>,
    payload: &Bound<'py, PyAny>,
    event_type: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyString>> {
    let empty = PyString::new(py, "").into_any();
    Serializer::new(py, refs(py)?).dumps(payload, event_type.unwrap_or(&empty))
}

/// JSON text of each payload (a str payload passes through unchanged);
/// `event_types[i]` names payload `i` in errors.
#[pyfunction]
pub fn serialize_payloads<'py>(
    py: Python<'py>,
    payloads: &Bound<'py, PyAny>,
    event_types: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let payloads = Column::new(payloads)?;
    let event_types = Column::new(event_types)?;
    check_lengths("serialize_payloads", &[("payloads", &payloads), ("event_types", &event_types)])?;
    PyList::new(py, serialize(py, &payloads, &event_types)?)
}

/// JSON text of each payload; a str payload is already JSON and passes through.
fn serialize<'py>(
    py: Python<'py>,
    payloads: &Column<'py>,
    event_types: &Column<'py>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut serializer = Serializer::new(py, refs(py)?);
    (0..payloads.len())
        .map(|index| {
            let payload = payloads.get(index)?;
            if payload.is_instance_of::<PyString>() {
                Ok(payload)
            } else {
                Ok(serializer.dumps(&payload, &event_types.get(index)?)?.into_any())
            }
        })
        .collect()
}

/// Serialize a batch given as columns and build its `StorageEngineEvent`s,
/// resolving event types through `event_type_ids`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn encode_events<'py>(
    py: Python<'py>,
    aggregate_ids: &Bound<'py, PyAny>,
    sequences: &Bound<'py, PyAny>,
    event_types: &Bound<'py, PyAny>,
    payloads: &Bound<'py, PyAny>,
    event_times: &Bound<'py, PyAny>,
    references: &Bound<'py, PyAny>,
    event_type_ids: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let columns = [
        ("aggregate_ids", Column::new(aggregate_ids)?),
        ("sequences", Column::new(sequences)?),
        ("event_types", Column::new(event_types)?),
        ("payloads", Column::new(payloads)?),
        ("event_times", Column::new(event_times)?),
        ("references", Column::new(references)?),
    ];
    let named: Vec<(&str, &Column<'py>)> = columns.iter().map(|(name, column)| (*name, column)).collect();
    check_lengths("encode_events", &named)?;
    let [(_, ids), (_, seqs), (_, types), (_, payloads), (_, times), (_, refs_column)] = &columns;
    let states = serialize(py, payloads, types)?;
    let shared = refs(py)?;
    // Batches come in runs of one event type: remember the last lookup.
    let mut last_type: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = None;
    let mut events = Vec::with_capacity(states.len());
    for (index, state) in states.into_iter().enumerate() {
        let event_type = types.get(index)?;
        let type_id = match &last_type {
            Some((name, id)) if name.is(&event_type) => id.clone(),
            _ => {
                let id = event_type_ids.get_item(&event_type)?;
                last_type = Some((event_type, id.clone()));
                id
            }
        };
        let fields = PyTuple::new(
            py,
            [ids.get(index)?, seqs.get(index)?, type_id, state, times.get(index)?, refs_column.get(index)?],
        )?;
        events.push(shared.storage_engine_event(fields)?);
    }
    PyList::new(py, events)
}
