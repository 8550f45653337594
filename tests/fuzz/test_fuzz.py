"""Each fuzz target of ``tests.fuzz.targets`` under libFuzzer (atheris) for a bounded
time, in its own process: no exception outside the contract, crash, panic or hang.

Budget: ``EVERCORE_FUZZ_SECONDS`` (default 6) per target, 9 targets, so about a
minute; ``-m slow`` soaks each target for ``EVERCORE_FUZZ_SOAK_SECONDS`` (default 300).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import TARGET_NAMES

if sys.platform != "linux":
    pytest.skip("atheris ships prebuilt wheels for Linux only", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
PER_INPUT_TIMEOUT = 5
"""Seconds one input may take before libFuzzer calls it a hang."""


def run_target(target: str, seconds: int, artifacts: Path) -> None:
    """Fuzz ``target`` for ``seconds``; on failure, show the log and each crashing input."""
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.targets",
        target,
        f"-max_total_time={seconds}",
        f"-timeout={PER_INPUT_TIMEOUT}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
    ]
    # The Rust kernels are the ones under test, whatever the caller's environment says.
    env = {k: v for k, v in os.environ.items() if k != "EVERCORE_PURE_PYTHON"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120
    )
    if done.returncode == 0:
        return
    inputs = "\n".join(
        f"{path.name}: {data!r} (base64 {base64.b64encode(data).decode()})"
        for path in sorted(artifacts.iterdir())
        for data in [path.read_bytes()]
    )
    reproduce = f"{' '.join(command[1:4])} {artifacts}/<input>"
    pytest.fail(
        f"fuzz target {target!r} failed (exit {done.returncode}).\n"
        f"Inputs:\n{inputs or '(none written)'}\nReproduce: python {reproduce}\n"
        f"--- log (tail) ---\n{done.stderr[-6000:]}",
        pytrace=False,
    )


@pytest.mark.parametrize("target", TARGET_NAMES)
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    run_target(target, int(os.environ.get("EVERCORE_FUZZ_SECONDS", "6")), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGET_NAMES)
def test_fuzz_target_soak(target: str, tmp_path: Path) -> None:
    """Opt-in (``-m slow``): a long run of each target."""
    run_target(target, int(os.environ.get("EVERCORE_FUZZ_SOAK_SECONDS", "300")), tmp_path)
