//! `evercore._core`: the thin PyO3 layer over `evercore-core`.
use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", evercore_core::VERSION)?;
    Ok(())
}
