"""The prebuilt wheels install and work where there is no Rust and no source tree.

Builds the wheels with ``scripts/build_wheels.py`` (the abi3 ``evercore`` wheel and a
pure wheel per plugin) into a temporary directory -- or takes them from the
directory named by ``EVERCORE_WHEELHOUSE``, so that CI builds once -- then creates a
brand-new virtual environment outside the source tree, installs the wheels with
their dependencies from PyPI (binary wheels only: nothing may need compiling), and
runs a smoke script there with no Rust toolchain on ``PATH``: connect to memory,
SQLite, PostgreSQL (a schema of its own) and Redis (a key prefix of its own);
write, read back, subscribe; then the console script.

Marked ``wheels``: deselect it while developing with ``-m "not wheels"``; the
README's test command runs it. Budget: under 3 minutes (pip's download cache and
cargo's incremental build make repeated runs quicker).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.throwaway import postgres_uri, redis_uri

pytestmark = [pytest.mark.wheels, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
CORE_WHEEL = re.compile(r"^evercore-[^-]+-cp310-abi3-(manylinux[_0-9a-z]*_x86_64|\S+)\.whl$")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the three wheels (built now unless CI built them already)."""
    prebuilt = os.environ.get("EVERCORE_WHEELHOUSE")
    if prebuilt:
        return Path(prebuilt).resolve()
    outdir = tmp_path_factory.mktemp("wheelhouse")
    built = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_wheels.py"), str(outdir)],
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, f"building the wheels failed:\n{built.stderr[-3000:]}"
    return outdir


def _one(wheelhouse: Path, pattern: str) -> Path:
    found = sorted(wheelhouse.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {wheelhouse}, found {found}"
    return found[0]


def _dist_info(names: Iterable[str], file: str) -> str:
    return next(n for n in names if n.endswith(f".dist-info/{file}"))


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def test_core_wheel_is_abi3_and_manylinux(wheelhouse: Path) -> None:
    wheel = _one(wheelhouse, "evercore-*.whl")
    match = CORE_WHEEL.match(wheel.name)
    assert match, wheel.name
    if sys.platform == "linux":
        assert match.group(1).startswith("manylinux"), f"{wheel.name} is not manylinux-tagged"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(_dist_info(names, "METADATA")).decode()
        scripts = archive.read(_dist_info(names, "entry_points.txt")).decode()
    assert "evercore/_core.abi3.so" in names
    assert {"evercore/py.typed", "evercore/cli.py", "evercore/engines/sqlite/__init__.py"} <= names
    assert not any(n.startswith(("tests/", "rust/", "plugins/")) for n in names)
    assert re.search(r"^evercore\s*=\s*evercore\.cli:main$", scripts, re.M), scripts
    for extra, dists in {
        "postgres": ["evercore-postgres"],
        "redis": ["evercore-redis"],
        "all": ["evercore-postgres", "evercore-redis"],
    }.items():
        for dist in dists:
            assert re.search(rf"^Requires-Dist: {dist}\s*;\s*extra == .{extra}.$", metadata, re.M)


@pytest.mark.parametrize("plugin", ["evercore_postgres", "evercore_redis"])
def test_plugin_wheels_are_pure_and_register_an_entry_point(wheelhouse: Path, plugin: str) -> None:
    wheel = _one(wheelhouse, f"{plugin}-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        text = archive.read(_dist_info(names, "entry_points.txt")).decode()
    assert "[evercore]" in text
    assert f"{plugin}/py.typed" in names
    assert not any(n.endswith((".so", ".pyd")) for n in names)


SMOKE = textwrap.dedent(
    """
    import json, os, sys, threading
    from dataclasses import dataclass

    import evercore
    from evercore import _kernels

    @evercore.state_event
    @dataclass
    class Opened:
        owner: str

    @evercore.state_event
    @dataclass
    class Deposited:
        balance: int

    @dataclass
    class AccountState:
        owner: str = ""
        balance: int = 0

    class Account(evercore.StateAggregate[AccountState]):
        pass

    def smoke(uri):
        with evercore.connect(uri) as store:
            def write(ctx):
                account = Account()
                ctx.create_aggregate_with_key_into(account, "acct-1")
                ctx.apply_event_to(account, Opened(owner="ann"))
                ctx.apply_event_to(account, Deposited(balance=150))
                return account.id
            account_id = store.in_context(write)

            def read(ctx):
                loaded = Account()
                ctx.load_state_by_key_into(loaded, "acct-1")
                return loaded
            loaded = store.in_readonly_context(read)
            assert loaded.id == account_id and loaded.sequence == 2, (loaded.id, loaded.sequence)
            assert loaded.state == AccountState("ann", 150), loaded.state

            seen, stop = [], threading.Event()
            def handler(batch):
                seen.extend(e.event_type for e in batch)
                if len(seen) >= 2:
                    stop.set()
            runner = threading.Thread(target=store.run_ephemeral_subscription, args=(
                evercore.SubscriptionFilter(aggregate_type="AccountState"),
                evercore.StartFrom.beginning(),
                evercore.SubscriptionOptions(batch_size=10, poll_interval=0.05),
                handler,
            ), kwargs={"stop": stop}, daemon=True)
            runner.start()
            runner.join(20)
            assert not runner.is_alive(), "the subscription did not stop"
            assert seen == ["Opened", "Deposited"], f"subscription delivered {seen}"
            return {"backend": type(store.storage_engine).__module__, "events": len(seen)}

    report = {
        "evercore": evercore.__file__,
        "core": evercore._core.__file__,
        "pure_python": _kernels.PURE_PYTHON,
        "backends": sorted(b.spec.name for b in evercore.backends()),
        "smoke": {},
    }
    for uri in sys.argv[1:]:
        try:
            report["smoke"][uri.split(":")[0]] = smoke(uri)
        except Exception as exc:
            report["smoke"][uri.split(":")[0]] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report))
    """
)


@pytest.fixture
def server_uris() -> Iterator[tuple[str, str]]:
    """A PostgreSQL URI with a schema and a Redis URI with a prefix of their own."""
    with postgres_uri("wheel") as postgres, redis_uri("wheel") as redis:
        yield postgres, redis


def _clean_env(venv: Path) -> dict[str, str]:
    """The venv on PATH, then only system directories: no cargo, rustc or source tree."""
    path = os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    env = {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/root"),  # pip's download cache lives there
        "LANG": "C.UTF-8",
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for tool in ("cargo", "rustc", "maturin"):
        assert shutil.which(tool, path=path) is None, f"{tool} is on the smoke test's PATH"
    return env


@pytest.mark.postgres
@pytest.mark.redis
def test_fresh_venv_installs_the_wheels_and_works(
    wheelhouse: Path, tmp_path: Path, server_uris: tuple[str, str]
) -> None:
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=60)
    env = _clean_env(venv)
    python = str(venv / "bin" / "python")
    core = _one(wheelhouse, "evercore-*.whl")
    plugins = [
        _one(wheelhouse, "evercore_postgres-*.whl"),
        _one(wheelhouse, "evercore_redis-*.whl"),
    ]
    # [all] checks that the extra names exactly these plugin distributions: pip takes them
    # from the given files, everything else from PyPI, and only as binary wheels.
    install = [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--only-binary",
        ":all:",
        f"{core}[all]",
        *map(str, plugins),
    ]
    done = subprocess.run(
        install, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr

    (tmp_path / "smoke.py").write_text(SMOKE)
    postgres_uri, redis_uri = server_uris
    uris = ["memory://", f"sqlite:///{tmp_path / 'smoke.db'}", postgres_uri, redis_uri]
    done = subprocess.run(
        [python, "smoke.py", *uris],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    site = str(venv)
    assert report["evercore"].startswith(site) and report["core"].startswith(site)
    assert report["core"].endswith("_core.abi3.so")
    assert report["pure_python"] is False
    assert report["backends"] == ["memory", "postgresql", "redis", "sqlite"]
    assert set(report["smoke"]) == {"memory", "sqlite", "postgresql", "redis"}
    for backend, result in report["smoke"].items():
        assert result.get("events") == 2, f"{backend}: {result}"
    assert str(ROOT) not in done.stdout

    cli = subprocess.run(
        [str(venv / "bin" / "evercore"), "backends"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    for plugin in plugins:
        assert f"{plugin.name.split('-')[0].replace('_', '-')} {_version(plugin)}" in cli.stdout
