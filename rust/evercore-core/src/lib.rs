//! Pure-Rust kernels of evercore (no PyO3 here, so `cargo test` runs without Python).

/// Version of the kernels; the Python package reports it as `evercore._core.__version__`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
