"""Every public name of SPEC §3 exists, is documented and is typed."""

from __future__ import annotations

import inspect
from pathlib import Path

import evercore

SPEC_NAMES = """
EventStore connect backends EventStoreContext EventStoreReadonlyContext Aggregate EventState
StateAggregate StateEvent event state_event register_event_decoder decode_event SerializedEvent
Snapshot AggregateState StorageEngineEvent IdNamePair Subscription SubscriptionFilter StartFrom
START_BEGINNING START_END START_EVENT_ID START_TIMESTAMP SubscriptionOptions Options
EvercoreError StorageEngineError NotFoundError ConstraintViolationError ConcurrencyError
KeyTooLongError EventStateIsNotAStateEvent SubscriptionAlreadyOwned SubscriptionInactive
SubscriptionLeaseLost SequenceError UnknownBackendError DecodeError SerializationError
StorageEngine hookimpl hookspec
""".split()

STORE_METHODS = """
with_context in_context with_readonly_context in_readonly_context context readonly_context
warmup save_state run_subscription run_ephemeral_subscription subscribe close storage_engine
""".split()

CONTEXT_METHODS = """
load_state_into load_state_by_key_into load_aggregate_state load_aggregate_state_by_key
new_aggregate_id new_aggregate_id_with_key load_or_create_aggregate create_aggregate_into
create_aggregate_with_key_into change_aggregate_natural_key apply_event_to publish save_snapshot
""".split()


def test_spec_names_are_exported() -> None:
    missing = [name for name in SPEC_NAMES if name not in evercore.__all__]
    assert not missing


def test_every_public_name_has_a_docstring() -> None:
    undocumented = []
    for name in evercore.__all__:
        obj = getattr(evercore, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                undocumented.append(name)
            for member_name, member in vars(obj).items() if inspect.isclass(obj) else ():
                if member_name.startswith("_") or not callable(member):
                    continue
                if not inspect.getdoc(member):
                    undocumented.append(f"{name}.{member_name}")
    assert not undocumented


def test_store_and_context_methods_exist() -> None:
    store = evercore.connect("memory://")
    for name in STORE_METHODS:
        assert hasattr(store, name), name
    for name in CONTEXT_METHODS:
        assert hasattr(evercore.EventStoreContext, name), name
    store.close()


def test_package_is_typed() -> None:
    package = Path(evercore.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_core.pyi").exists()


def test_errors_form_one_hierarchy() -> None:
    for name in evercore.__all__:
        obj = getattr(evercore, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, evercore.EvercoreError), name
    assert issubclass(evercore.ConcurrencyError, evercore.ConstraintViolationError)
    assert issubclass(evercore.KeyTooLongError, ValueError)
    assert issubclass(evercore.SequenceError, ValueError)
    assert evercore.NotFoundError("x").error_type == "not_found"
    assert evercore.ConstraintViolationError("x").error_type == "constraint_violation"


def test_python_dash_m_evercore_runs_the_cli() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "evercore", "backends"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "memory://" in result.stdout and "sqlite://" in result.stdout
