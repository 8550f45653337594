"""Coverage-guided fuzzing (atheris/libFuzzer) of the Rust kernels and the decoders.

``python -m tests.fuzz.targets TARGET [libFuzzer flags]`` runs one target;
``tests/fuzz/test_fuzz.py`` runs each for a bounded time in the test suite.
"""

TARGET_NAMES = (
    "dumps",
    "serialize",
    "sequences",
    "copy_rows",
    "filter",
    "fold",
    "rows",
    "decode_event",
    "decode_json_as",
)
"""The targets, importable without atheris (``tests.fuzz.targets`` instruments evercore
on import, which a pytest process must not do)."""
