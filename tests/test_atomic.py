"""engine.atomic: a file is replaced whole or left as it was; create_new never overwrites."""
from __future__ import annotations

import pytest

from engine import atomic


def test_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text("old")
    atomic.write_text(path, "new ünïcode", fsync=True)
    assert path.read_text(encoding="utf-8") == "new ünïcode"
    atomic.write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.json"]


def test_a_writer_that_fails_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"previous checkpoint")
    with pytest.raises(RuntimeError, match="disk full"), atomic.replacing(path) as f:
        f.write(b"half a checkp")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_create_new_writes_once_and_never_overwrites(tmp_path):
    path = tmp_path / "kiln_00001.png"
    assert atomic.create_new(path, b"first")
    assert not atomic.create_new(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["kiln_00001.png"]


def test_a_missing_folder_is_an_error_not_a_silent_skip(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.write_bytes(tmp_path / "no such folder" / "x.json", b"{}")
