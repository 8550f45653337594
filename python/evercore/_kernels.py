"""The kernel boundary: the Rust implementations, or their pure-Python twins.

The facade and the engines import kernels from here and nowhere else. With
``EVERCORE_PURE_PYTHON=1`` in the environment (read at import time) every kernel
is the twin from :mod:`evercore._pure`; that switch is how the speed-up of whole
paths is measured.
"""

from __future__ import annotations

import os

PURE_PYTHON = os.environ.get("EVERCORE_PURE_PYTHON", "") == "1"
"""True when the pure-Python twins run instead of the Rust kernels."""

# The Rust kernels land in evercore._core; until then the twins serve both modes.
from evercore._pure import (  # noqa: E402
    dumps,
    encode_copy_rows,
    encode_events,
    filter_events,
    serialize_payloads,
    validate_sequences,
)

__all__ = [
    "PURE_PYTHON",
    "dumps",
    "encode_copy_rows",
    "encode_events",
    "filter_events",
    "serialize_payloads",
    "validate_sequences",
]
