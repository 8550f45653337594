"""The plugin registry: discovery, the hook contract, URIs and errors."""

from __future__ import annotations

import inspect
import sys
import textwrap
from pathlib import Path

import evercore
import pluggy
import pytest
from evercore import hookspecs
from evercore.errors import ConfigurationError, EvercoreError, UnknownBackendError
from evercore.registry import (
    BackendRegistry,
    BackendSpec,
    make_plugin_manager,
    redact_uri,
    uri_scheme,
)


def _hook_names() -> list[str]:
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
            if n.startswith("evercore_")]


def test_every_hook_is_documented_and_tested() -> None:
    tests = [name for name in globals() if name.startswith("test_hook_")]
    for hook in _hook_names():
        spec = getattr(hookspecs, hook)
        assert spec.__doc__ and len(spec.__doc__) > 40, f"hook {hook} has no documentation"
        assert any(hook in t for t in tests), f"hook {hook} has no test_hook_{hook}_* test"


def _registry_with(*plugins: object) -> BackendRegistry:
    registry = BackendRegistry()
    registry.collect(make_plugin_manager(plugins))
    return registry


class _ExtraPlugin:
    @evercore.hookimpl
    def evercore_register_backends(self, registry: BackendRegistry) -> None:
        registry.add(BackendSpec("extra", ("extra",), "tests.test_registry:_open_extra", "test"))


def _open_extra(uri: str, **options: object) -> object:
    from evercore.engines.memory.engine import open_memory_engine

    return open_memory_engine("memory://")


def test_hook_evercore_register_backends_adds_backends_by_name_and_scheme() -> None:
    registry = _registry_with(_ExtraPlugin())
    names = [b.spec.name for b in registry.backends()]
    assert {"memory", "sqlite", "extra"} <= set(names)
    # Entry-point plugins load first, then the built-ins, then extra plugins.
    assert names.index("sqlite") < names.index("extra")
    assert registry.for_uri("extra://whatever").name == "extra"
    assert {"memory", "sqlite", "extra"} <= set(registry.schemes())


def test_hook_evercore_register_backends_duplicate_name_or_scheme_names_both_plugins() -> None:
    class Clash:
        @evercore.hookimpl
        def evercore_register_backends(self, registry: BackendRegistry) -> None:
            registry.add(BackendSpec("memory2", ("memory",), "x:y", "clash"))

    with pytest.raises(EvercoreError, match=r"'memory'.*evercore\.engines\.memory.*memory2"):
        _registry_with(Clash())


def test_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @evercore.hookimpl
        def evercore_register_backend(self, registry: BackendRegistry) -> None:  # no "s"
            pass

    with pytest.raises(pluggy.PluginValidationError):
        make_plugin_manager([Typo()])


def test_unknown_scheme_names_installed_schemes() -> None:
    with pytest.raises(UnknownBackendError, match=r"'nosuch'.*memory.*sqlite"):
        evercore.connect("nosuch://x")


@pytest.mark.parametrize("uri", ["", "memory", "not a uri", "://nothing"])
def test_malformed_uri_is_a_configuration_error(uri: str) -> None:
    with pytest.raises((ConfigurationError, UnknownBackendError)):
        evercore.connect(uri)


def test_uri_scheme_and_redaction() -> None:
    assert uri_scheme("PostgreSQL://u:p@h/db") == "postgresql"
    assert redact_uri("redis://user:s3cret@127.0.0.1:6379/0") == "redis://user:***@127.0.0.1:6379/0"
    assert redact_uri("memory://") == "memory://"
    assert redact_uri("postgresql://u:p%40ss@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert redact_uri("postgresql://only-user@h/db") == "postgresql://only-user@h/db"
    assert redact_uri("redis://:pw@h") == "redis://:***@h"
    with pytest.raises(ConfigurationError) as raised:
        uri_scheme("user:s3cret@host")
    assert "s3cret" not in str(raised.value)


def test_backends_lists_builtins_with_distribution() -> None:
    installed = {b.spec.name: b for b in evercore.backends()}
    assert installed["memory"].distribution == "evercore"
    assert installed["memory"].version == evercore.__version__
    assert installed["sqlite"].spec.factory.startswith("evercore.engines.sqlite")


def test_entry_point_plugins_are_discovered_and_can_be_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evercore_fake_plugin.py").write_text(textwrap.dedent("""
        import evercore
        @evercore.hookimpl
        def evercore_register_backends(registry):
            registry.add(evercore.BackendSpec(
                "fake", ("fake",), "evercore_fake_plugin:open", "a fake backend"))
    """))
    dist = tmp_path / "evercore_fake_plugin-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: evercore-fake-plugin\nVersion: 1.2.3\n"
    )
    (dist / "entry_points.txt").write_text("[evercore]\nfake = evercore_fake_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    found = {b.spec.name: b for b in _registry_with().backends()}
    assert found["fake"].distribution == "evercore-fake-plugin"
    assert found["fake"].version == "1.2.3"
    assert "evercore_fake_plugin" in sys.modules

    monkeypatch.setenv("EVERCORE_DISABLE_PLUGINS", "fake")
    assert "fake" not in {b.spec.name for b in _registry_with().backends()}
    monkeypatch.delenv("EVERCORE_DISABLE_PLUGINS")
    monkeypatch.setenv("EVERCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "fake" not in {b.spec.name for b in _registry_with().backends()}


def test_factory_must_name_module_and_attribute() -> None:
    with pytest.raises(ConfigurationError, match="module:attr"):
        BackendSpec("bad", ("bad",), "no_colon_here", "bad")


def test_connect_memory_gives_a_working_store() -> None:
    with evercore.connect("memory://") as store:
        assert isinstance(store, evercore.EventStore)
        assert store.in_context(lambda ctx: ctx.new_aggregate_id("Thing")) >= 1
