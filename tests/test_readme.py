"""The README's quick start runs as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_source() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README has no quickstart block"
    return match.group(1)


def test_quickstart_runs_when_pasted(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart_source(), encoding="utf-8")
    for run in (1, 2):  # a second run must work on the same database too
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert f"Account(owner='alice', balance={100 * run}) at sequence {run + 1}" in result.stdout
        assert "AccountOpened" not in result.stdout  # the payload class is named Opened
        assert "Opened" in result.stdout
    assert (tmp_path / "quickstart.db").exists()
