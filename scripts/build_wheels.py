"""Build the distributable wheels into one directory.

    .venv/bin/python scripts/build_wheels.py [OUTDIR]     (default: dist/)

* ``evercore``: ``maturin build --release``, an abi3 wheel (``cp310-abi3``) whose
  platform tag maturin's auditwheel check picks: the oldest manylinux policy whose
  symbol versions the built library satisfies (``manylinux_2_34`` on this Debian 12
  toolchain; an older one when built in a manylinux container or with ``--zig``).
* each ``plugins/*`` distribution: a pure ``py3-none-any`` wheel, built with
  ``pip wheel --no-deps`` from a clean copy of its folder, so that a stale
  ``build/`` directory never leaks files into the wheel and the source tree stays
  untouched.

``tests/test_wheels.py`` runs this unless ``EVERCORE_WHEELHOUSE`` names a directory
of wheels built beforehand (so CI builds once). Extra arguments after ``--`` go to
maturin. For the widest Linux reach, link against glibc 2.17 with zig (``pip install
ziglang`` first, a ~400 MB toolchain, hence not the default)::

    python scripts/build_wheels.py dist -- --zig --compatibility manylinux2014

which gives ``...-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl`` (it
passes the same smoke test).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NOT_SOURCE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.pyc")


def _move_wheels(source: Path, outdir: Path) -> list[Path]:
    moved = []
    for wheel in sorted(source.glob("*.whl")):
        target = outdir / wheel.name
        shutil.move(wheel, target)
        moved.append(target)
    return moved


def build_core(outdir: Path, maturin_args: Sequence[str] = ()) -> list[Path]:
    """Build the ``evercore`` wheel into ``outdir``."""
    maturin = [sys.executable, "-m", "maturin"]  # installed by the "test" extra
    with tempfile.TemporaryDirectory(prefix="evercore-wheel-") as scratch:
        subprocess.run(
            [*maturin, "build", "--release", "--quiet", "--out", scratch, *maturin_args],
            cwd=ROOT,
            check=True,
        )
        return _move_wheels(Path(scratch), outdir)


def build_plugins(outdir: Path) -> list[Path]:
    """Build a pure wheel of every plugin distribution into ``outdir``."""
    wheels = []
    for source in sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml")):
        with tempfile.TemporaryDirectory(prefix="evercore-plugin-") as scratch:
            copy = Path(scratch) / source.name
            shutil.copytree(source, copy, ignore=_NOT_SOURCE)
            built = Path(scratch) / "wheels"
            pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
            subprocess.run(
                [*pip_wheel, "--disable-pip-version-check", "--wheel-dir", str(built), str(copy)],
                check=True,
            )
            wheels += _move_wheels(built, outdir)
    return wheels


def main(argv: Sequence[str]) -> int:
    """Build every wheel into ``argv[0]`` (default ``dist/``) and list them."""
    args = list(argv)
    maturin_args = args[args.index("--") + 1 :] if "--" in args else []
    positional = args[: args.index("--")] if "--" in args else args
    outdir = Path(positional[0] if positional else ROOT / "dist").resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    for wheel in [*build_core(outdir, maturin_args), *build_plugins(outdir)]:
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
