"""The render farm (`main.py run --batch --cluster`): on an embedded Ray cluster of 2 CPU workers,
the same pictures as a local batch; a killed worker's job retried; a bad job failing alone; Ctrl+C
(SIGINT to a real driver process) keeping the pictures written; Ray absent: what to install.

One embedded cluster (2 CPUs, 80 MB object store, no dashboard) serves the whole module; every
batch starts and kills its own workers on it. The graph is the text-to-image example at 2 steps,
64 px, so a job takes a few tenths of a second once its worker has the model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PILImage

from engine import graph_file
from engine.pngmeta import read_png_graph
from engine.spec import EngineSettings
from kiln.cli import _summary, apply_overrides, main, parse_set, read_batch_overrides

try:
    import ray
except ImportError:  # the SIGINT, retry and parity tests need it; the "not installed" test does not
    ray = None

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "resources" / "graphs" / "text_to_image.json"
FAST = ["--set", "sampler.steps=2", "--set", "latent.width=64", "--set", "latent.height=64", "--device", "cpu"]
needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'ray>=2.60'): "
                                                   "the render farm cannot be tested without it")


@pytest.fixture(scope="module")
def cluster():
    """An embedded 2-CPU Ray cluster for the module; its GCS address."""
    ray.init(num_cpus=2, num_gpus=0, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_jobs(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run_batch(tmp_path: Path, jobs: Path, out: str, *extra: str, capsys) -> tuple[int, dict]:
    rc = main(["run", str(GRAPH), *FAST, "--batch", str(jobs), "--out", str(tmp_path / out),
               "--no-disk-cache", "--json", *extra])
    return rc, json.loads(capsys.readouterr().out)


def pixels(path: str) -> np.ndarray:
    return np.asarray(PILImage.open(path).convert("RGB"))


@needs_ray
def test_a_batch_on_two_workers_gives_the_local_batch_pictures(cluster, tmp_path, capsys):
    prompts = ["a red circle", "a large blue square at the top left on a gray background"]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"seed.value": 1 + i // 2, "prompt.text": prompts[i % 2]}
                                                for i in range(6)])
    rc, local = run_batch(tmp_path, jobs, "local", capsys=capsys)
    assert rc == 0
    rc, farm = run_batch(tmp_path, jobs, "farm", "--cluster", "auto", "--workers", "2", capsys=capsys)
    assert rc == 0
    assert farm["cluster"]["workers"] == 2 and farm["cluster"]["cpus"] == 2
    assert [j["index"] for j in farm["jobs"]] == list(range(6))
    assert {j["worker"]["id"] for j in farm["jobs"]} == {0, 1}  # spread over both
    assert all(j["attempts"] == 1 and j["worker"]["host"] for j in farm["jobs"])
    for here, there in zip(local["jobs"], farm["jobs"], strict=True):
        assert [Path(p).name for p in here["outputs"]] == [Path(p).name for p in there["outputs"]]
        for a, b in zip(here["outputs"], there["outputs"], strict=True):
            assert np.array_equal(pixels(a), pixels(b))
            assert read_png_graph(a) == read_png_graph(b)
        assert set(here) | {"worker", "attempts"} == set(there)


@needs_ray
def test_a_killed_worker_has_its_job_retried_and_a_bad_job_fails_alone(cluster, tmp_path, capsys):
    from kiln.cluster_batch import run_batch_on_cluster
    from nodes import build_registry

    registry = build_registry()
    graph = graph_file.load(GRAPH)
    graph = apply_overrides(graph, [parse_set(s, graph, registry) for s in FAST[1:-2:2]])
    lines = [{"seed.value": s} for s in range(1, 6)]
    lines[3]["ckpt.checkpoint"] = "no-such-model.safetensors"
    overrides = read_batch_overrides(str(write_jobs(tmp_path / "jobs.jsonl", lines)), graph, registry)
    killed = []

    def on_event(kind, job, worker):  # job 0's first worker dies 0.5 s into it (loading the model)
        if kind == "sent" and job.index == 0 and job.attempts == 1:
            killed.append(worker.id)
            threading.Timer(0.5, os.kill, (worker.info["pid"], signal.SIGKILL)).start()

    settings = EngineSettings(output_dir=str(tmp_path / "out"), device="cpu")
    rc = run_batch_on_cluster(graph, overrides, settings, registry, (apply_overrides, _summary), target="auto",
                              workers=2, as_json=True, disk_cache=False, on_event=on_event)
    summary = json.loads(capsys.readouterr().out)["jobs"]
    assert rc == 1
    assert summary[0]["attempts"] == 2 and summary[0]["worker"]["id"] != killed[0]
    assert len(summary[0]["outputs"]) == 1
    bad = summary[3]
    assert bad["attempts"] == 1 and bad["outputs"] == []
    assert "no-such-model.safetensors" in bad["error"] and f"worker {bad['worker']['id']} (" in bad["error"]
    assert all("error" not in j and len(j["outputs"]) == 1 for i, j in enumerate(summary) if i != 3)
    names = sorted(Path(p).name for j in summary for p in j["outputs"])
    assert names == [f"kiln_0000{i}.png" for i in range(1, 5)]  # in job order, as a local batch names them
    assert Path(summary[4]["outputs"][0]).name == "kiln_00004.png"


@needs_ray
def test_ctrl_c_stops_the_driver_cleanly_keeping_the_pictures_written(cluster, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"seed.value": s} for s in range(40)])
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, str(REPO / "main.py"), "run", str(GRAPH), *FAST, "--batch",
                               str(jobs), "--out", str(out), "--no-disk-cache", "--json", "--cluster", cluster,
                               "--workers", "1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 2 and driver.poll() is None:
        time.sleep(0.1)
    assert driver.poll() is None, driver.communicate()  # still running when Ctrl+C comes (else: why it ended)
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    summary = json.loads(stdout)
    written = [p for j in summary["jobs"] for p in j["outputs"]]
    assert 2 <= len(written) < 40 and sorted(str(p) for p in out.glob("*.png")) == sorted(written)
    assert sum(1 for j in summary["jobs"] if j.get("cancelled")) >= 1
    assert all(read_png_graph(p)["format"] == "kiln.graph" for p in written)
    _wait_for(lambda: ray.available_resources().get("CPU") == 2.0)  # its worker is gone


def _wait_for(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_without_ray_the_message_says_what_to_install_and_local_runs_never_import_it(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"seed.value": 1}])
    code = ("import sys; sys.modules['ray'] = None; from kiln.cli import main; "
            f"rc = main(['run', {str(GRAPH)!r}, '--batch', {str(jobs)!r}, '--cluster', 'local']); "
            "print(rc); assert main(['run', '--help']) == 0")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.stdout.splitlines()[0] == "2", done.stderr
    assert "pip install 'ray>=2.60'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    code = ("import sys; import kiln.cli, kiln.cluster, kiln.cluster_batch, kiln.cluster_worker; "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_workers_default_to_one_per_gpu_else_one_per_two_cores():
    from kiln.cluster import plan_workers

    assert plan_workers({"CPU": 16.0, "GPU": 8.0}, None) == (plan := plan_workers({"CPU": 16.0, "GPU": 8.0}, 8))
    assert (plan.count, plan.num_gpus, plan.num_cpus, plan.threads) == (8, 1.0, 1.0, 2)
    assert plan_workers({"CPU": 7.0}, None).count == 3 and plan_workers({"CPU": 1.0}, None).count == 1
    three = plan_workers({"CPU": 2.0}, 3)
    assert three.count == 3 and three.num_cpus * 3 <= 2.0 and three.threads == 1


def test_a_free_worker_takes_a_job_alike_to_its_last_else_one_no_other_worker_is_on():
    from kiln.cluster import Worker
    from kiln.cluster_batch import Farm, Job

    jobs = [Job(i, [], group) for i, group in enumerate("AABBAB")]
    farm = Farm(SimpleNamespace(exceptions=SimpleNamespace()), [Worker(0, None), Worker(1, None)], jobs, ".",
                SimpleNamespace())
    assert farm._pick(farm.workers[0]).index == 0
    farm.last_group[0] = "A"
    assert farm._pick(farm.workers[1]).index == 2  # A is worker 0's: B for worker 1
    farm.last_group[1] = "B"
    farm.pending = jobs[3:]
    assert farm._pick(farm.workers[0]).index == 4 and farm._pick(farm.workers[1]).index == 3
    farm.pending = jobs[5:]
    assert farm._pick(farm.workers[0]).index == 5  # nothing alike left: not idle
