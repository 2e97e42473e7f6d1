"""engine/ and nodes/ pass the type checker, with the [tool.mypy] settings of pyproject.toml."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (it comes with the [test] extra: pip install -e '.[test]')")
def test_engine_and_nodes_pass_mypy(tmp_path):
    # a fresh cache in the temp folder: the check never trusts results from an older tree (about 35 s cold)
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy"), "engine", "nodes"]
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=280)
    if result.returncode != 0:
        pytest.fail(f"mypy finds errors in engine/ or nodes/:\n{result.stdout}{result.stderr}", pytrace=False)
