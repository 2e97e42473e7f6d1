"""The device memory budget (engine.model_budget): LRU eviction to CPU memory, dropping past the CPU
budget, low-VRAM and sequential modes, and precision choice. On the CPU the "device" is the CPU too,
so moves cost nothing, but the accounting, the order and the drop/reload path are the real ones.

Five models: the three built-in ones and two SD-shaped tiny random checkpoints (tests/zoo_support.py).
"""
from __future__ import annotations

import threading

import pytest
import torch
from test_zoo_end_to_end import semantic_graph, super_resolution_graph, text_graph
from zoo_support import write_zoo_checkpoint

from engine.cache import ResultCache
from engine.executor import Executor
from engine.model_budget import DeviceBudget
from engine.model_store import ModelStore
from engine.precision import Precision, choose_precision
from engine.spec import EngineSettings
from nodes import build_registry

BUILT_IN = ("kiln-shapes-base.safetensors", "kiln-shapes-semantic.safetensors", "kiln-shapes-sr.safetensors")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("zoo")
    return {name: str(write_zoo_checkpoint(name, folder / name)[0]) for name in ("sd15", "sd2-512")}


def _graphs(zoo: dict[str, str]) -> list:
    base, semantic, sr = BUILT_IN
    return [text_graph(base, 64), semantic_graph(semantic, 64), super_resolution_graph(sr, 128),
            text_graph(zoo["sd15"], 64), text_graph(zoo["sd2-512"], 64)]


def _executor(tmp_path, **budget) -> Executor:
    settings = EngineSettings(device="cpu", precision="fp32", output_dir=str(tmp_path), **budget)
    return Executor(build_registry(), settings, cache=ResultCache.from_settings(settings, disk=False))


def _images(executor: Executor, graphs: list) -> list[torch.Tensor]:
    images = []
    for graph in graphs:
        result = executor.run(graph)
        assert result.ok, result.error
        images.append(result.outputs["decode"]["image"].pixels)
    return images


def _model_bytes(report: dict) -> dict[str, int]:
    totals: dict[str, int] = {}
    for part in report["parts"]:
        totals[part["model"]] = totals.get(part["model"], 0) + part["bytes"]
    return totals


@pytest.fixture(scope="module")
def reference(zoo, tmp_path_factory) -> tuple[list[torch.Tensor], dict[str, int]]:
    """Images of the five graphs with no budget, and each model's bytes."""
    executor = _executor(tmp_path_factory.mktemp("ref"))
    images = _images(executor, _graphs(zoo))
    assert executor.models.report()["evictions"] == []
    return images, _model_bytes(executor.models.report())


def test_a_budget_of_two_models_evicts_in_lru_order_with_identical_results(zoo, reference, tmp_path):
    images, sizes = reference
    order = list(sizes)  # load order
    budget = sizes[order[-1]] + sizes[order[-2]]  # the last two loaded, the two largest
    executor = _executor(tmp_path, vram_budget=budget)
    bounded = _images(executor, _graphs(zoo))
    assert all(torch.equal(a, b) for a, b in zip(bounded, images, strict=True))
    report = executor.models.report()
    evicted = [order.index(e["model"]) for e in report["evictions"]]
    assert evicted and evicted == sorted(evicted) and set(evicted) >= {0, 1}  # oldest first
    assert all(e["to"] == "cpu" for e in report["evictions"])  # no CPU budget: nothing dropped
    on_device = sum(p["bytes"] for p in report["parts"] if p["where"] == "device")
    assert on_device <= budget and report["peak_model_bytes"] <= budget
    assert {p["where"] for p in report["parts"] if p["model"] == order[-1]} == {"device"}


def test_moved_back_models_give_identical_results(zoo, reference, tmp_path):
    """A model pushed to CPU memory and dropped past the CPU budget comes back bit-identical."""
    images, sizes = reference
    budget = max(sizes.values())
    executor = _executor(tmp_path, vram_budget=budget, cpu_offload_budget=0)
    graphs = _graphs(zoo)
    first = _images(executor, [graphs[0], graphs[2]])  # the SR model pushes the base model out
    executor.cache.clear()  # the base graph runs again, its parts reloaded from disk
    again = _images(executor, graphs[:1])
    assert torch.equal(first[0], images[0]) and torch.equal(again[0], images[0])
    report = executor.models.report()
    assert report["evictions"] and all(e["to"] == "dropped" or not e["bytes"] for e in report["evictions"])
    base = {p["part"]: p["where"] for p in report["parts"] if p["model"] == BUILT_IN[0]}
    assert base["unet"] == "device"


def test_the_cpu_budget_drops_the_oldest_first(zoo, reference, tmp_path):
    _, sizes = reference
    base, semantic = sizes[BUILT_IN[0]], sizes[BUILT_IN[1]]
    executor = _executor(tmp_path, vram_budget=semantic, cpu_offload_budget=base)
    _images(executor, _graphs(zoo)[:3])
    moves = [(e["model"], e["to"]) for e in executor.models.report()["evictions"]]
    assert (BUILT_IN[0], "dropped") in moves and (BUILT_IN[1], "cpu") in moves
    assert moves.index((BUILT_IN[0], "cpu")) < moves.index((BUILT_IN[0], "dropped"))


def test_a_model_in_use_by_another_run_is_not_evicted(zoo):
    from engine.models.loader import load_checkpoint

    store = ModelStore(DeviceBudget(device_budget=1))  # nothing fits: everything idle must go
    paths = [zoo["sd15"], zoo["sd2-512"]]
    first = store.get("checkpoint", paths[0], lambda: load_checkpoint(paths[0], "cpu", "fp32"))
    holding, done = threading.Event(), threading.Event()

    def other_run() -> None:
        with store.using([first.model]):
            holding.set()
            done.wait(10)

    thread = threading.Thread(target=other_run)
    thread.start()
    holding.wait(10)
    store.get("checkpoint", paths[1], lambda: load_checkpoint(paths[1], "cpu", "fp32"))
    where = {(p["model"], p["part"]): p["where"] for p in store.report()["parts"]}
    done.set()
    thread.join()
    assert where[("sd15.safetensors", "unet")] == "device"
    assert where[("sd15.safetensors", "autoencoder")] == "cpu"
    store.free_device()
    assert {p["where"] for p in store.report()["parts"]} == {"cpu"}


def test_low_vram_and_sequential_modes_give_identical_results(zoo, reference, tmp_path):
    images, sizes = reference
    executor = _executor(tmp_path, vram_budget=sizes[BUILT_IN[0]] - 1, sequential_offload=True)
    (image,) = _images(executor, _graphs(zoo)[:1])
    assert torch.equal(image, images[0])
    report = executor.models.report()
    assert report["low_vram"] and report["stream_transfers"] > 0
    assert {p["where"] for p in report["parts"]} <= {"cpu", "device"}


def test_precision_choice():
    assert choose_precision("cpu") == Precision("fp32", "fp32")
    assert choose_precision("cuda") == Precision("fp16", "fp32")  # SD decoders overflow in fp16
    assert choose_precision("cuda", "bf16", bf16_supported=True) == Precision("bf16", "bf16")
    assert choose_precision("cuda", "bf16", bf16_supported=False) == Precision("fp16", "fp32")
    assert choose_precision("mps") == Precision("fp16", "fp32")
    assert choose_precision("cpu", "bf16") == Precision("fp32", "fp32")
    assert choose_precision("cuda", "fp32") == Precision("fp32", "fp32")
    with pytest.raises(Exception, match="unknown precision 'fp8'"):
        choose_precision("cuda", "fp8")
