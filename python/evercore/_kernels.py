"""The kernel boundary: the Rust implementations, or their pure-Python twins.

The facade and the engines import kernels from here and nowhere else. By default
they are the Rust kernels of :mod:`evercore._core`; with ``EVERCORE_PURE_PYTHON=1``
in the environment (read at import time) every kernel is its twin from
:mod:`evercore._pure`, with the same signature, results and exceptions. That
switch is how the speed-up of whole paths is measured.
"""

from __future__ import annotations

import os

PURE_PYTHON = os.environ.get("EVERCORE_PURE_PYTHON", "") == "1"
"""True when the pure-Python twins run instead of the Rust kernels."""

if PURE_PYTHON:
    from evercore._pure import (
        dumps,
        encode_copy_rows,
        encode_events,
        events_from_rows,
        filter_events,
        fold_state_fields,
        serialize_payloads,
        validate_sequences,
    )
else:
    try:
        from evercore._core import (
            dumps,
            encode_copy_rows,
            encode_events,
        events_from_rows,
            filter_events,
        fold_state_fields,
            serialize_payloads,
            validate_sequences,
        )
    except ImportError as error:
        raise ImportError(
            "evercore's Rust extension (evercore._core) cannot be imported: reinstall "
            "evercore (`pip install -e .` builds it from source), or set "
            "EVERCORE_PURE_PYTHON=1 to run on the slower pure-Python kernels"
        ) from error

__all__ = [
    "PURE_PYTHON",
    "dumps",
    "encode_copy_rows",
    "encode_events",
    "events_from_rows",
    "filter_events",
    "fold_state_fields",
    "serialize_payloads",
    "validate_sequences",
]
