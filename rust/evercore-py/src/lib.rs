//! `evercore._core`: the thin PyO3 layer over `evercore-core`.
//!
//! Every kernel has a pure-Python twin in `evercore._pure` with the same
//! signature, results and exceptions; `evercore._kernels` picks one or the
//! other. Values the fast paths do not model exactly (bools or big ints where
//! ids are expected, say) are handed to the twin rather than approximated.
//! PyO3 turns a panic into a Python exception, and no code here unwraps user data.

mod columns;
mod copy;
mod events;
mod filter;
mod fold;
mod ints;
mod refs;
mod rows;
mod sequences;
mod serialize;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", evercore_core::VERSION)?;
    m.add("MAX_NESTING", evercore_core::MAX_NESTING)?;
    m.add_function(wrap_pyfunction!(sequences::validate_sequences, m)?)?;
    m.add_function(wrap_pyfunction!(events::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(events::serialize_payloads, m)?)?;
    m.add_function(wrap_pyfunction!(events::encode_events, m)?)?;
    m.add_function(wrap_pyfunction!(copy::encode_copy_rows, m)?)?;
    m.add_function(wrap_pyfunction!(filter::filter_events, m)?)?;
    m.add_function(wrap_pyfunction!(fold::fold_state_fields, m)?)?;
    m.add_function(wrap_pyfunction!(rows::events_from_rows, m)?)?;
    Ok(())
}
