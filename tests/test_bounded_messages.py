"""Messages stay short, whatever a file or the command line holds: user input quoted in a
message is cut to its first characters and says how much more there was, a loop of any size is
one line, and the JSON parser's complaints name where (node and param, or line and column).

Through the real `main.py` process and the real node registry.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import quote, quote_list

REPO = Path(__file__).resolve().parent.parent
TEXT_TO_IMAGE = REPO / "resources" / "graphs" / "text_to_image.json"
LINE_LIMIT = 300


def kiln(*args: object, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def lines(result: subprocess.CompletedProcess) -> list[str]:
    found = (result.stdout + result.stderr).splitlines()
    too_long = [line[:120] + "…" for line in found if len(line) >= LINE_LIMIT]
    assert not too_long, too_long
    return found


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def text_to_image() -> dict:
    return json.loads(TEXT_TO_IMAGE.read_text(encoding="utf-8"))


def test_quote_cuts_long_values_and_lists():
    assert quote("seed") == "'seed'"
    assert quote("x" * 1000) == "'" + "x" * 60 + "'… (940 more characters)"
    assert quote(10 ** 5000) == "an integer of about 5000 digits"
    assert quote_list(["a", "b"]) == "'a', 'b'"
    assert quote_list(range(20), 3) == "0, 1, 2, … (17 more)"


def test_a_huge_unknown_node_type_is_quoted_short(tmp_path):
    document = text_to_image()
    document["nodes"]["save"]["type"] = "X" * 3_300_000
    result = kiln("validate", write(tmp_path / "g.json", document))
    assert result.returncode == 2
    assert f"node 'save': unknown node type '{'X' * 60}'… (3299940 more characters)" in lines(result)


def test_a_huge_choice_value_is_quoted_short(tmp_path):
    document = text_to_image()
    document["nodes"]["sampler"]["params"]["scheduler"] = "k" * 100_000
    result = kiln("validate", write(tmp_path / "g.json", document))
    assert result.returncode == 2
    problem = next(line for line in lines(result) if line.startswith("node 'sampler', param 'scheduler': "))
    assert "… (99940 more characters) is not one of: normal, karras" in problem


def test_ten_thousand_unknown_prompt_words_make_one_short_line(tmp_path):
    words = " ".join(f"zq{i}" for i in range(10_000))
    result = kiln("run", TEXT_TO_IMAGE, "--set", f"prompt.text={words}", "--out", tmp_path / "out",
                  "--cache-dir", tmp_path / "cache", timeout=120)
    assert result.returncode == 1
    problem = next(line for line in lines(result) if "does not know" in line)
    assert problem.startswith("kiln: node 'prompt', param 'text': prompt has words this model does not know: "
                              "zq0, zq1, zq10, ")
    assert "… (9992 more)" in problem


def ring(size: int) -> dict:
    ids = [f"n{i:05d}" for i in range(size)]
    return {"format": "kiln.graph", "version": 1,
            "nodes": {node_id: {"type": "ImageInvert", "params": {}} for node_id in ids},
            "links": [{"from": [ids[i], "image"], "to": [ids[(i + 1) % size], "image"]} for i in range(size)]}


def test_a_ring_of_ten_thousand_nodes_is_one_line_and_fast(tmp_path):
    path = write(tmp_path / "ring.json", ring(10_000))
    started = time.perf_counter()
    result = kiln("validate", path)
    assert time.perf_counter() - started < 5  # about 1 s, most of it starting Python
    assert result.returncode == 2
    assert lines(result) == [
        ("node 'n00000': is part of a cycle: n00000 → n00001 → n00002 → n00003 → n00004 → n00005 → "
         "… (9994 more) → n00000 (links must not loop back)"),
        f"kiln: {path}: 1 problem (listed above)",
    ]


@pytest.mark.parametrize("text, expected", [
    ('{"format": "kiln.graph",\n "version": 1,\n "nodes": {,}}',
     "is not valid JSON (line 3, column 12: Expecting property name enclosed in double quotes)"),
    ("[" * 100_000, "is JSON nested too deeply at line 1"),
    ('{"format": "kiln.graph",\n "nodes": {"a": {"x": ' + "[" * 100_000, "is JSON nested too deeply at line 2"),
    ('{"format": null, "version": 1, "nodes": {}}', "is not a Kiln graph (no format name)"),
    ('{"format": "kiln.graph", "version": 1, "nodes": {"s": {"type": "Seed", "params": {"value": '
     + "9" * 5000 + "}}}}", "node 's', param 'value' holds an integer too large to be useful"),
])
def test_parser_errors_say_where(tmp_path, text, expected):
    path = tmp_path / "g.json"
    path.write_text(text, encoding="utf-8")
    result = kiln("validate", path)
    assert result.returncode == 2
    assert lines(result) == [f"kiln: {path}: {expected}"]


def test_run_prints_each_problem_on_its_own_line(tmp_path):
    document = {"format": "kiln.graph", "version": 1,
                "nodes": {f"n{i}": {"type": "ImageInvert", "params": {}} for i in range(50)}}
    result = kiln("run", write(tmp_path / "g.json", document), "--out", tmp_path / "out",
                  "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    assert "kiln: node 'n7', input 'image': is required but not connected (it takes IMAGE)" in lines(result)
