//! `filter_events`: the positions a subscription reads from a columnar log.

use evercore_core::filter::Criteria;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::columns::{exact_i64, Column};
use crate::refs::refs;

/// A criterion as i64; `Err(())` when it is not an exact int in i64 (the twin decides).
fn criterion(value: Option<&Bound<'_, PyAny>>) -> Result<Option<i64>, ()> {
    match value {
        None => Ok(None),
        Some(value) if value.is_none() => Ok(None),
        Some(value) => exact_i64(value).map(Some).ok_or(()),
    }
}

/// `value` clamped to i64 (a huge start is past any end, a huge limit no limit).
fn saturating_i64(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    match value.extract::<i64>() {
        Ok(number) => Ok(number),
        Err(_) if value.gt(0)? => Ok(i64::MAX),
        Err(_) if value.lt(0)? => Ok(i64::MIN),
        Err(error) => Err(error),
    }
}

#[pyfunction]
#[pyo3(signature = (aggregate_type_ids, aggregate_ids, event_type_ids, *, start, limit, aggregate_type_id, aggregate_id, event_type_filter))]
#[allow(clippy::too_many_arguments)]
pub fn filter_events<'py>(
    py: Python<'py>,
    aggregate_type_ids: &Bound<'py, PyAny>,
    aggregate_ids: &Bound<'py, PyAny>,
    event_type_ids: &Bound<'py, PyAny>,
    start: &Bound<'py, PyAny>,
    limit: &Bound<'py, PyAny>,
    aggregate_type_id: Option<&Bound<'py, PyAny>>,
    aggregate_id: Option<&Bound<'py, PyAny>>,
    event_type_filter: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let twin = || -> PyResult<Bound<'py, PyList>> {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("start", start)?;
        kwargs.set_item("limit", limit)?;
        kwargs.set_item("aggregate_type_id", aggregate_type_id)?;
        kwargs.set_item("aggregate_id", aggregate_id)?;
        kwargs.set_item("event_type_filter", event_type_filter)?;
        let result = refs(py)?.pure.bind(py).getattr("filter_events")?.call(
            (aggregate_type_ids, aggregate_ids, event_type_ids),
            Some(&kwargs),
        )?;
        Ok(result.cast_into::<PyList>()?)
    };
    let columns = [Column::new(aggregate_type_ids)?, Column::new(aggregate_ids)?, Column::new(event_type_ids)?];
    let lengths = columns.each_ref().map(Column::len);
    if lengths[0] != lengths[1] || lengths[1] != lengths[2] {
        return Err(PyValueError::new_err(format!(
            "filter_events: columns differ in length ({}, {}, {})",
            lengths[0], lengths[1], lengths[2]
        )));
    }
    let first = saturating_i64(start)?;
    if first < 0 {
        return Err(PyValueError::new_err(format!("filter_events: start must be >= 0, got {}", start.str()?)));
    }
    let limit = saturating_i64(limit)?;
    let (Ok(aggregate_type_id), Ok(aggregate_id)) = (criterion(aggregate_type_id), criterion(aggregate_id)) else {
        return twin();
    };
    let event_types = match event_type_filter.filter(|filter| !filter.is_none()) {
        None => None,
        Some(filter) => {
            let mut ids = Vec::new();
            for id in filter.try_iter()? {
                match exact_i64(&id?) {
                    Some(id) => ids.push(id),
                    None => return twin(),
                }
            }
            Some(Criteria::event_types(ids))
        }
    };
    let criteria = Criteria { aggregate_type_id, aggregate_id, event_type_ids: event_types.as_deref() };
    let positions = PyList::empty(py);
    if limit < 1 {
        return Ok(positions);
    }
    let [types, ids, kinds] = &columns;
    // Only the columns a criterion needs are read; 0 stands in for the others.
    let read = |column: &Column<'py>, wanted: bool, index: usize| -> PyResult<Option<i64>> {
        if wanted { Ok(exact_i64(&column.get(index)?)) } else { Ok(Some(0)) }
    };
    let mut found: i64 = 0;
    let mut index = usize::try_from(first).unwrap_or(usize::MAX);
    while index < lengths[0] {
        let (Some(kind_type), Some(id), Some(kind)) = (
            read(types, criteria.aggregate_type_id.is_some(), index)?,
            read(ids, criteria.aggregate_id.is_some(), index)?,
            read(kinds, criteria.event_type_ids.is_some(), index)?,
        ) else {
            return twin();
        };
        if criteria.matches(kind_type, id, kind) {
            positions.append(index)?;
            found += 1;
            if found == limit {
                break;
            }
        }
        index += 1;
    }
    Ok(positions)
}
