//! Pure-Rust kernels of evercore (no PyO3 here, so `cargo test` runs without Python).
//!
//! The binding crate `evercore-py` walks Python objects and calls into these
//! building blocks: JSON text output that is byte-identical to Python's
//! `json.dumps(..., ensure_ascii=False, separators=(",", ":"))`, PostgreSQL binary
//! COPY encoding, the per-aggregate sequence rules, the subscription filter and the
//! field-by-field fold of stored JSON events (rehydration).

pub mod copy;
pub mod filter;
pub mod fold;
pub mod json;
pub mod sequences;
pub mod time;

/// Version of the kernels; the Python package reports it as `evercore._core.__version__`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Deepest nesting a payload may have (each container, Enum value and model dump is
/// one level); deeper input, usually a cycle, is refused instead of overflowing the stack.
pub const MAX_NESTING: usize = 256;
