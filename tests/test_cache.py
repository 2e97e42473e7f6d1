"""Result cache: keys, the byte-bounded memory LRU, the crash-safe disk store."""
from __future__ import annotations

import os
import time

import pytest
import torch
from toy_nodes import build_graph

from engine.cache import ResultCache, file_identity, node_key
from engine.executor import Executor
from engine.spec import EngineSettings
from engine.values import Conditioning, Image, Latent, SemanticMap
from nodes import build_registry


def key(params=None, inputs=None, version=1, files=None, type_="Mul"):
    return node_key(type_, version, params or {"k": 2}, files or {}, inputs or {"x": ("abc", "value")})


def test_key_ignores_param_order_and_changes_with_what_matters(tmp_path):
    assert key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})
    base = key()
    assert len({base, key({"k": 3}), key(version=2), key(type_="Add"), key(inputs={"x": ("abd", "value")}),
                key(inputs={"x": ("abc", "other")}), key({"k": 2.0})}) == 7
    path = tmp_path / "f.bin"
    path.write_bytes(b"1")
    first = key(files={"path": file_identity(str(path))})
    path.write_bytes(b"22")
    assert key(files={"path": file_identity(str(path))}) != first
    assert file_identity(str(tmp_path / "none")) == [str(tmp_path / "none"), "missing"]


def test_memory_lru_is_bounded_by_bytes_and_evicts_least_recently_used():
    cache = ResultCache(memory_bytes=100, disk_dir=None)
    cache.put("k1", {"v": b"x" * 60})
    cache.put("k2", {"v": b"x" * 30})
    assert cache.get("k1", ["v"]) is not None  # k1 becomes the most recent
    cache.put("k3", {"v": b"x" * 30})
    assert cache.get("k2", ["v"]) is None and cache.get("k1", ["v"]) and cache.get("k3", ["v"])
    assert cache.memory_used == 90
    cache.put("huge", {"v": b"x" * 500})
    assert cache.get("huge", ["v"]) is None and cache.memory_used == 90
    assert cache.get("k1", ["v", "missing_output"]) is None


def storable_outputs():
    return {
        "image": Image(torch.rand(2, 3, 8, 8), seeds=(5, 6)),
        "latent": Latent(torch.randn(1, 4, 2, 2), noise_mask=torch.ones(1, 1, 2, 2), seeds=(9,)),
        "mask": torch.rand(1, 1, 8, 8),
        "labels": SemanticMap(torch.randint(0, 21, (1, 8, 8)), num_classes=21),
    }


def test_disk_store_survives_a_fresh_cache_instance(tmp_path):
    outputs = storable_outputs()
    ResultCache(disk_dir=tmp_path).put("k" * 64, outputs)
    fresh = ResultCache(disk_dir=tmp_path)
    got = fresh.get("k" * 64, list(outputs))
    assert fresh.disk_hits == 1
    assert torch.equal(got["image"].pixels, outputs["image"].pixels) and got["image"].seeds == (5, 6)
    assert torch.equal(got["latent"].noise_mask, outputs["latent"].noise_mask) and got["latent"].seeds == (9,)
    assert torch.equal(got["mask"], outputs["mask"])
    assert torch.equal(got["labels"].labels, outputs["labels"].labels) and got["labels"].num_classes == 21


def test_values_that_cannot_be_stored_stay_in_memory(tmp_path):
    cache = ResultCache(disk_dir=tmp_path)
    cache.put("a" * 64, {"cond": Conditioning(crossattn=torch.zeros(1, 2, 3)), "image": Image(torch.zeros(1, 3, 2, 2))})
    assert not objects(tmp_path)
    assert ResultCache(disk_dir=tmp_path).get("a" * 64, ["cond", "image"]) is None
    assert cache.get("a" * 64, ["cond", "image"]) is not None


def objects(root):
    return sorted((root / "results" / "objects").rglob("*.kobj"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "delete"])
def test_damaged_or_missing_object_is_a_miss_and_is_cleaned_up(tmp_path, damage):
    image = Image(torch.rand(1, 3, 8, 8))
    ResultCache(disk_dir=tmp_path).put("b" * 64, {"image": image})
    (obj,) = objects(tmp_path)
    data = obj.read_bytes()
    if damage == "delete":
        obj.unlink()
    else:
        obj.write_bytes({"flip": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],
                         "truncate": data[: len(data) // 2], "empty": b""}[damage])
    fresh = ResultCache(disk_dir=tmp_path)
    assert fresh.get("b" * 64, ["image"]) is None
    assert not obj.exists() and not list((tmp_path / "results" / "refs").rglob("*.image"))
    fresh.put("b" * 64, {"image": image})
    assert torch.equal(ResultCache(disk_dir=tmp_path).get("b" * 64, ["image"])["image"].pixels, image.pixels)


def test_a_value_passed_through_is_stored_once(tmp_path):
    image = Image(torch.rand(1, 3, 8, 8), seeds=(3,))
    cache = ResultCache(disk_dir=tmp_path)
    cache.put("c" * 64, {"image": image})
    cache.put("d" * 64, {"image": image, "mask": torch.ones(1, 1, 8, 8)})
    assert len(objects(tmp_path)) == 2
    fresh = ResultCache(disk_dir=tmp_path)
    assert fresh.get("c" * 64, ["image"])["image"].seeds == (3,)
    assert fresh.get("d" * 64, ["image", "mask"])["mask"].sum() == 64


def test_disk_store_is_bounded_and_evicts_the_least_recently_used(tmp_path):
    cache = ResultCache(disk_dir=tmp_path, disk_bytes=10_000)
    now = time.time()
    for i, name in enumerate("cde"):  # about 3 KiB each, written long ago, c first
        cache.put(name * 64, {"image": Image(torch.full((1, 3, 16, 16), i / 10))})
        for path in [*objects(tmp_path), *(tmp_path / "results" / "refs").rglob(f"{name * 64}.*")]:
            if path.stat().st_mtime > now - 10:
                os.utime(path, (now - 300 + 100 * i, now - 300 + 100 * i))
    stale_tmp = tmp_path / "results" / "objects" / "ab" / "ab12.kobj.1.abc.tmp"  # left by a crash
    stale_tmp.parent.mkdir(exist_ok=True)
    stale_tmp.write_bytes(b"half")
    os.utime(stale_tmp, (now - 7200, now - 7200))
    reader = ResultCache(disk_dir=tmp_path, disk_bytes=10_000)
    assert reader.get("c" * 64, ["image"]) is not None  # a read makes "c" the most recent
    reader.put("f" * 64, {"image": Image(torch.full((1, 3, 16, 16), 0.9))})
    fresh = ResultCache(disk_dir=tmp_path)
    assert [name for name in "cdef" if fresh.get(name * 64, ["image"]) is not None] == ["c", "e", "f"]
    assert not stale_tmp.exists() and not list((tmp_path / "results" / "refs").rglob("d" * 64 + ".*"))
    assert sum(p.stat().st_size for p in objects(tmp_path)) <= 10_000


def test_executor_reads_the_disk_cache_of_an_earlier_session(tmp_path):
    settings = EngineSettings(output_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    graph = build_graph({"s": ("SolidImage", {"width": 8, "height": 8, "color": "#336699"}),
                         "inv": ("ImageInvert", {}), "view": ("PreviewImage", {})},
                        ["s.image -> inv.image", "inv.image -> view.image"])
    first = Executor(build_registry(), settings).run(graph)
    later = Executor(build_registry(), settings).run(graph)  # new memory cache, same folder
    assert {n: r.status for n, r in later.nodes.items()} == {"s": "cached", "inv": "cached", "view": "cached"}
    assert torch.equal(later.outputs["view"]["image"].pixels, first.outputs["view"]["image"].pixels)
    no_disk = Executor(build_registry(), settings, ResultCache.from_settings(settings, disk=False)).run(graph)
    assert {r.status for r in no_disk.nodes.values()} == {"ran"}


def test_default_cache_folder_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = ResultCache.from_settings(EngineSettings())
    cache.put("d" * 64, {"image": Image(torch.zeros(1, 3, 2, 2))})
    assert objects(tmp_path / "kiln")
