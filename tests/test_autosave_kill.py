"""Continuous editing still autosaves: a real window process editing every 0.5 s is killed
with SIGKILL after ~8 s, and the recovery file it left misses only the last few seconds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from app.document import read_recovery

HERE = os.path.dirname(os.path.abspath(__file__))
BOUND_S = 6.0


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.strip())


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill_9_during_continuous_editing_loses_under_six_seconds(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": os.path.dirname(HERE)}
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "autosave_edit_script.py"), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=_collect, args=(proc.stdout, lines), daemon=True).start()
    try:
        deadline = time.time() + 60
        while not any(line.startswith("edit 1 ") for line in lines) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(8.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    killed_at = time.time()
    edits = {int(i): float(t) for kind, i, t in (line.split() for line in lines if line.startswith("edit "))}
    assert len(edits) >= 12, lines  # it really edited every 0.5 s for ~8 s
    ready = [line for line in lines if line.startswith("ready ")]
    found = read_recovery(ready[0].split(" ", 1)[1])
    assert found is not None, "no recovery file after 8 s of continuous editing"
    saved_index = found[0].nodes["solid"].params["width"] - 100
    assert saved_index in edits
    missing = [t for i, t in edits.items() if i > saved_index]
    lost_s = killed_at - edits[saved_index]  # work done after the last saved edit
    print(f"saved edit {saved_index} of {max(edits)}; lost {lost_s:.2f} s ({len(missing)} edits)")
    assert lost_s < BOUND_S
