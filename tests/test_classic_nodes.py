"""ComfyUI's classic SD 1.x nodes as Kiln nodes, each run through the real executor and checked against
arithmetic written here from ComfyUI's semantics; one clear error per bad input."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from engine.executor import Executor
from engine.graph import Graph, Link, Node
from engine.spec import EngineSettings, NodeSpec, Output, Param, ParamType, SocketType
from engine.values import Image, Latent
from nodes import build_registry

# --- test-only sources: values given as JSON params ---------------------------------------------


def _tensor(value) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


class PixelStackAutoencoder:
    """A lossless stand-in for an f8 autoencoder: each 8x8 block of RGB becomes 192 channels."""

    name = "pixel-stack"
    capabilities = SimpleNamespace(factor=8, latent_channels=192)

    def encode_pixels(self, pixels, tile=None, overlap=None, on_tile=None):
        return F.pixel_unshuffle(pixels, 8)


def _sources() -> tuple[NodeSpec, ...]:
    json = ParamType.JSON

    def latent(ctx, inputs, params):
        mask = _tensor(params["noise_mask"]) if params["noise_mask"] else None
        return {"latent": Latent(_tensor(params["samples"]), mask, tuple(params["seeds"]))}

    return (
        NodeSpec("TestMask", "Test Mask", "test", "", lambda c, i, p: {"mask": _tensor(p["value"])},
                 outputs=(Output("mask", SocketType.MASK),), params=(Param("value", json, []),)),
        NodeSpec("TestImage", "Test Image", "test", "",
                 lambda c, i, p: {"image": Image(_tensor(p["value"]), tuple(p["seeds"]))},
                 outputs=(Output("image", SocketType.IMAGE),),
                 params=(Param("value", json, []), Param("seeds", json, []))),
        NodeSpec("TestLatent", "Test Latent", "test", "", latent, outputs=(Output("latent", SocketType.LATENT),),
                 params=(Param("samples", json, []), Param("noise_mask", json, []), Param("seeds", json, []))),
        NodeSpec("TestAutoencoder", "Test Autoencoder", "test", "",
                 lambda c, i, p: {"autoencoder": PixelStackAutoencoder()},
                 outputs=(Output("autoencoder", SocketType.AUTOENCODER),)),
    )


REGISTRY = build_registry()
REGISTRY.register_all(_sources())
SOURCE_OUTPUT = {"TestMask": "mask", "TestImage": "image", "TestLatent": "latent",
                 "TestAutoencoder": "autoencoder"}


@pytest.fixture
def run(tmp_path):
    """run(type, {input: (source type, params)}, **params) -> RunResult of the node under test."""
    executor = Executor(REGISTRY, EngineSettings(output_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")))

    def go(type_name: str, sources: dict | None = None, **params):
        graph = Graph()
        graph.add_node(Node("node", type_name, params=params))
        for index, (socket, (source_type, source_params)) in enumerate((sources or {}).items()):
            graph.add_node(Node(f"src{index}", source_type, params=source_params))
            graph.connect(Link(f"src{index}", SOURCE_OUTPUT[source_type], "node", socket))
        return executor.run(graph, targets=["node"])

    return go


def outputs(result) -> dict:
    assert result.ok, result.error
    return result.outputs["node"]


def failure(result, param: str | None, text: str) -> str:
    assert not result.ok and result.error.node_id == "node"
    assert result.error.param == param and text in str(result.error), str(result.error)
    return str(result.error)


def mask_src(t: torch.Tensor) -> tuple[str, dict]:
    return "TestMask", {"value": t.tolist()}


def image_src(t: torch.Tensor, seeds=()) -> tuple[str, dict]:
    return "TestImage", {"value": t.tolist(), "seeds": list(seeds)}


def latent_src(t: torch.Tensor, mask: torch.Tensor | None = None, seeds=()) -> tuple[str, dict]:
    return "TestLatent", {"samples": t.tolist(), "noise_mask": [] if mask is None else mask.tolist(),
                          "seeds": list(seeds)}


# --- latents ------------------------------------------------------------------------------------


def test_latent_upscale_sizes_crop_and_pass_through(run):
    cells = torch.arange(4 * 8 * 16, dtype=torch.float32).view(1, 4, 8, 16)  # a 128x64-pixel picture
    mask = torch.ones(1, 1, 64, 128)
    src = {"latent": latent_src(cells, mask, seeds=[7])}
    up = outputs(run("LatentUpscale", src, upscale_method="nearest-exact", width=256, height=0))["latent"]
    assert up.samples.shape == (1, 4, 16, 32)  # height from the aspect ratio: 8 * 256 / 16 = 128 px
    assert torch.equal(up.samples[..., ::2, ::2], cells) and torch.equal(up.samples[..., 1::2, 1::2], cells)
    assert up.seeds == (7,) and torch.equal(up.noise_mask, mask)
    small = outputs(run("LatentUpscale", src, width=0, height=32))["latent"]  # raised to 64 px
    assert small.samples.shape == (1, 4, 8, 16)
    cropped = outputs(run("LatentUpscale", src, width=64, height=64, crop="center"))["latent"]
    assert torch.equal(cropped.samples, cells[..., :, 4:12])  # aspect 2 -> 1: four cells off each side
    same = outputs(run("LatentUpscale", src, width=0, height=0))["latent"]
    assert torch.equal(same.samples, cells)
    odd = outputs(run("LatentUpscale", src, upscale_method="bilinear", width=200, height=100))["latent"]
    expected = F.interpolate(cells, size=(12, 25), mode="bilinear", align_corners=False)  # 200 // 8, 100 // 8
    assert torch.allclose(odd.samples, expected)


def test_latent_upscale_by_rounds_cells_and_bislerp_keeps_norms(run):
    cells = torch.randn(2, 4, 8, 16)
    by = outputs(run("LatentUpscaleBy", {"latent": latent_src(cells)}, upscale_method="area", scale_by=1.5))
    assert by["latent"].samples.shape == (2, 4, 12, 24)
    pair = torch.zeros(1, 2, 1, 2)
    pair[0, 0, 0, 0] = pair[0, 1, 0, 1] = 1.0  # two orthogonal unit vectors side by side
    slerped = outputs(run("LatentUpscaleBy", {"latent": latent_src(pair)}, upscale_method="bislerp",
                          scale_by=2.0))["latent"].samples
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)  # a quarter and three quarters of the way
    expected = torch.tensor([[1.0, c, s, 0.0], [0.0, s, c, 1.0]]).view(1, 2, 1, 4)
    assert slerped.shape == (1, 2, 2, 4) and torch.allclose(slerped, expected.expand(1, 2, 2, 4), atol=1e-6)
    failure(run("LatentUpscaleBy", {"latent": latent_src(cells)}, scale_by=0.01), "scale_by",
            "smaller than one cell")


def test_latent_composite_feathers_only_inner_edges(run):
    dest, source = torch.zeros(1, 4, 6, 6), torch.ones(1, 4, 3, 3)
    src = {"destination": latent_src(dest, seeds=[3]), "source": latent_src(source)}
    out = outputs(run("LatentComposite", src, x=16, y=8, feather=16))["latent"]
    # ComfyUI: rows/columns t < feather from an inner edge are multiplied by (t + 1) / feather
    ramp = torch.tensor([0.5, 1.0, 0.5])
    expected = torch.zeros(6, 6)
    expected[1:4, 2:5] = ramp[:, None] * ramp[None, :]
    assert torch.allclose(out.samples, expected.expand(1, 4, 6, 6)) and out.seeds == (3,)
    edge = outputs(run("LatentComposite", src, x=24, y=0, feather=16))["latent"].samples[0, 0]
    # touching the top and the right edge: only the left and bottom edges fade
    assert torch.allclose(edge[:3, 3:], torch.tensor([[0.5, 1, 1], [0.5, 1, 1], [0.25, 0.5, 0.5]]))
    plain = outputs(run("LatentComposite", {"destination": latent_src(dest), "source": latent_src(
        torch.ones(1, 4, 4, 4))}, x=32, y=16))["latent"].samples[0, 0]
    assert int(plain.sum()) == 2 * 4 and float(plain[2:, 4:].min()) == 1.0  # cut off at the edges
    failure(run("LatentComposite", src, x=48), "x", "x 48 is outside the destination")


def test_latent_from_batch_and_repeat(run):
    samples = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 4, 2, 2).contiguous()
    masks = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 16, 16) / 4
    src = {"latent": latent_src(samples, masks, seeds=[10, 11, 12, 13])}
    picked = outputs(run("LatentFromBatch", src, batch_index=1, length=2))["latent"]
    assert picked.samples[:, 0, 0, 0].tolist() == [1, 2] and picked.seeds == (11, 12)
    assert picked.noise_mask[:, 0, 0, 0].tolist() == [0.25, 0.5]
    last = outputs(run("LatentFromBatch", src, batch_index=3, length=10))["latent"]
    assert last.samples.shape[0] == 1 and last.seeds == (13,)
    failure(run("LatentFromBatch", src, batch_index=4), "batch_index", "batch_index 4 is out of range")
    pair = {"latent": latent_src(samples[:2], masks[:2], seeds=[5, 6])}
    repeated = outputs(run("RepeatLatentBatch", pair, amount=3))["latent"]
    assert repeated.samples[:, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1] and repeated.seeds == (5, 6) * 3
    assert repeated.noise_mask[:, 0, 0, 0].tolist() == [0, 0.25] * 3
    shared = outputs(run("RepeatLatentBatch", {"latent": latent_src(samples[:2], masks[:1])}, amount=2))
    assert shared["latent"].noise_mask.shape[0] == 1  # one mask still covers every item


def test_encode_for_inpaint_greys_the_hole_and_grows_the_noise_mask(run):
    pixels = torch.rand(1, 3, 18, 20)  # cropped to 16x16 from (top 1, left 2)
    mask = torch.zeros(1, 1, 18, 20)
    mask[0, 0, 6, 7] = 1.0
    mask[0, 0, 10, 12] = 0.6  # rounds to 1
    mask[0, 0, 3, 3] = 0.4  # rounds to 0
    src = {"autoencoder": ("TestAutoencoder", {}), "image": image_src(pixels, seeds=[9]), "mask": mask_src(mask)}
    out = outputs(run("AutoencoderEncodeForInpaint", src, grow_mask_by=6))["latent"]
    decoded = F.pixel_shuffle(out.samples, 8)
    expected = pixels[..., 1:17, 2:18].clone()
    holes = [(5, 5), (9, 10)]  # (row, column) after the crop
    for r, c in holes:
        expected[..., r, c] = 0.5
    assert torch.allclose(decoded, expected) and out.seeds == (9,)
    grown = torch.zeros(1, 1, 16, 16)
    for r, c in holes:  # a 6x6 square: 2 pixels up/left, 3 down/right
        grown[..., r - 2:r + 4, c - 2:c + 4] = 1.0
    assert torch.equal(out.noise_mask, grown)
    odd = outputs(run("AutoencoderEncodeForInpaint", src, grow_mask_by=3))["latent"].noise_mask
    assert int(odd.sum()) == 2 * 9 and float(odd[0, 0, 4, 4]) == 1.0 and float(odd[0, 0, 3, 4]) == 0.0
    bare = outputs(run("AutoencoderEncodeForInpaint", src, grow_mask_by=0))["latent"].noise_mask
    assert int(bare.sum()) == 2
    src["mask"] = mask_src(torch.zeros(1, 1, 18, 18))
    failure(run("AutoencoderEncodeForInpaint", src), None, "the mask is 18x18 but the image is 20x18")


# --- images ---------------------------------------------------------------------------------------


def test_pad_for_outpaint_pixels_and_feathered_mask(run):
    pixels = torch.full((2, 3, 10, 12), 0.2)
    src = {"image": image_src(pixels)}
    out = outputs(run("ImagePadForOutpaint", src, left=8, top=0, right=0, bottom=4, feathering=3))
    image, mask = out["image"].pixels, out["mask"]
    assert image.shape == (2, 3, 14, 20) and mask.shape == (1, 1, 14, 20)
    assert torch.allclose(image[..., :10, 8:], pixels)
    assert float(image[..., 10:, :].min()) == float(image[..., :, :8].max()) == 0.5
    expected = torch.ones(14, 20)
    for i in range(10):  # ComfyUI: d = distance to the nearest padded side (left: j, bottom: 10 - i)
        for j in range(12):
            d = min(10 - i, j)
            expected[i, 8 + j] = ((3 - d) / 3) ** 2 if d < 3 else 0.0
    assert torch.allclose(mask[0, 0], expected)
    assert float(mask[0, 0, 9, 8]) == 1.0 and mask[0, 0, 9, 11].item() == pytest.approx(4 / 9)
    wide = outputs(run("ImagePadForOutpaint", src, left=8, feathering=5))["mask"]  # 2 * 5 >= 10: none
    assert float(wide[0, 0, :, 8:].sum()) == 0.0 and float(wide[0, 0, :, :8].min()) == 1.0
    failure(run("ImagePadForOutpaint", src, left=16384), None, "over 16384 pixels a side")


def test_image_composite_masked_offsets_mask_and_resize(run):
    dest, source = torch.zeros(2, 3, 6, 8), torch.ones(1, 3, 4, 4)
    src = {"destination": image_src(dest, seeds=[1, 2]), "source": image_src(source)}
    out = outputs(run("ImageCompositeMasked", src, x=6, y=3))["image"]
    expected = torch.zeros(2, 3, 6, 8)
    expected[..., 3:6, 6:8] = 1.0  # cut off at the right and bottom; the one source serves both items
    assert torch.equal(out.pixels, expected) and out.seeds == (1, 2)
    weights = torch.tensor([[0.25, 1.0, 0.0, 0.5]]).expand(4, 4)
    src["mask"] = mask_src(weights.reshape(1, 1, 4, 4))
    masked = outputs(run("ImageCompositeMasked", src, x=1, y=1))["image"].pixels
    assert torch.allclose(masked[0, 0, 1:5, 1:5], weights) and float(masked[0, 0, 0].sum()) == 0.0
    stretched = outputs(run("ImageCompositeMasked", {"destination": image_src(dest), "source": image_src(
        torch.full((1, 3, 2, 2), 0.7))}, resize_source=True))["image"].pixels
    assert torch.allclose(stretched, torch.full_like(stretched, 0.7))
    src["mask"] = mask_src(torch.ones(1, 3, 4, 4))
    failure(run("ImageCompositeMasked", src), None, "the mask is not of shape (B, 1, H, W)")


def test_image_scale_maps_comfyui_scale_and_scale_by(run):
    pixels = torch.rand(1, 3, 16, 32)
    src = {"image": image_src(pixels)}
    aspect = outputs(run("ImageScale", src, width=16, height=0, method="nearest-exact"))["image"].pixels
    assert aspect.shape == (1, 3, 8, 16) and torch.equal(aspect, pixels[..., 1::2, 1::2])  # pixel centres
    cropped = outputs(run("ImageScale", src, width=16, height=16, method="nearest-exact", crop="center"))
    assert torch.equal(cropped["image"].pixels, pixels[..., :, 8:24])
    lanczos = outputs(run("ImageScale", src, factor=1.5, method="lanczos"))["image"].pixels
    assert lanczos.shape == (1, 3, 24, 48) and 0.0 <= float(lanczos.min()) and float(lanczos.max()) <= 1.0
    bilinear = outputs(run("ImageScale", src, factor=0.5, method="bilinear"))["image"].pixels
    assert torch.allclose(bilinear, F.interpolate(pixels, size=(8, 16), mode="bilinear", align_corners=False))
    both = outputs(run("ImageScale", src, width=10, height=30, method="area"))["image"].pixels
    assert both.shape == (1, 3, 30, 10)  # both given: stretched, as before
    failure(run("ImageScale", src, width=0, height=8192), "height", "16384x8192 is larger than 8192 pixels")


# --- masks ----------------------------------------------------------------------------------------


def test_solid_mask_and_load_image_mask(run, tmp_path):
    solid = outputs(run("SolidMask", value=0.25, width=12, height=5))["mask"]
    assert solid.shape == (1, 1, 5, 12) and torch.equal(solid, torch.full((1, 1, 5, 12), 0.25))
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[1, 2, 1] = 51  # a little green at one pixel
    rgba[..., 3] = 255
    rgba[0, :3, 3] = 0  # three transparent pixels
    path = tmp_path / "mask.png"
    PILImage.fromarray(rgba, mode="RGBA").save(path)
    alpha = outputs(run("LoadImageMask", path=str(path), channel="alpha"))["mask"]
    assert alpha.shape == (1, 1, 4, 6) and int(alpha.sum()) == 3 and float(alpha[0, 0, 0, 0]) == 1.0
    green = outputs(run("LoadImageMask", path=str(path), channel="green"))["mask"]
    assert float(green[0, 0, 1, 2]) == pytest.approx(0.2) and float(green.sum()) == pytest.approx(0.2)
    assert float(outputs(run("LoadImageMask", path=str(path), channel="red"))["mask"].min()) == 1.0
    failure(run("LoadImageMask", path=str(tmp_path / "missing.png")), "path", "file not found")


def test_mask_composite_operations(run):
    dest = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.2, 0.8, 0.5], [0.5, 0.5, 0.5, 0.5]]).view(1, 1, 3, 4)
    source = torch.tensor([[0.6, 0.4], [1.0, 0.0]]).view(1, 1, 2, 2)
    src = {"destination": mask_src(dest), "source": mask_src(source)}
    region = dest[0, 0, 1:3, 2:4]  # the source at x=2, y=1 covers rows 1-2, columns 2-3
    visible = source[0, 0]
    rounded_d, rounded_s = region.round().bool(), visible.round().bool()
    expected = {"multiply": region * visible, "add": (region + visible).clamp(0, 1),
                "subtract": (region - visible).clamp(0, 1), "and": (rounded_d & rounded_s).float(),
                "or": (rounded_d | rounded_s).float(), "xor": (rounded_d ^ rounded_s).float()}
    for operation, values in expected.items():
        out = outputs(run("MaskComposite", src, x=2, y=1, operation=operation))["mask"]
        assert torch.allclose(out[0, 0, 1:3, 2:4], values), operation
        assert torch.equal(out[0, 0, 0], dest[0, 0, 0]) and torch.equal(out[0, 0, :, :2], dest[0, 0, :, :2])
    overhang = outputs(run("MaskComposite", src, x=3, y=2, operation="add"))["mask"]
    assert torch.allclose(overhang[0, 0, 2, 3], torch.tensor(1.0)) and float(overhang[0, 0, 2, 2]) == 0.5
    src["source"] = mask_src(torch.ones(3, 1, 2, 2))
    src["destination"] = mask_src(torch.ones(2, 1, 3, 4))
    failure(run("MaskComposite", src), None, "a batch of 2 masks with a batch of 3")


def test_grow_mask_with_and_without_tapered_corners(run):
    dot = torch.zeros(1, 1, 7, 7)
    dot[..., 3, 3] = 1.0
    cross = torch.zeros(7, 7)
    cross[3, 2:5] = cross[2:5, 3] = 1.0
    grown = outputs(run("GrowMask", {"mask": mask_src(dot)}, expand=1, tapered_corners=True))["mask"]
    assert torch.equal(grown[0, 0], cross)
    square = outputs(run("GrowMask", {"mask": mask_src(dot)}, expand=2, tapered_corners=False))["mask"]
    expected = torch.zeros(7, 7)
    expected[1:6, 1:6] = 1.0
    assert torch.equal(square[0, 0], expected)
    diamond = outputs(run("GrowMask", {"mask": mask_src(dot)}, expand=2))["mask"][0, 0]
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    assert torch.equal(diamond, (((rows - 3).abs() + (cols - 3).abs()) <= 2).float())
    block = torch.zeros(1, 1, 7, 7)
    block[..., 2:5, 4:7] = 1.0  # touches the right edge: the edge repeats outwards, so no shrinking there
    block[..., :, :2] = 0.5  # a soft band on the left edge
    shrunk = outputs(run("GrowMask", {"mask": mask_src(block)}, expand=-1))["mask"][0, 0]
    expected = torch.zeros(7, 7)
    expected[3, 5:] = 1.0
    expected[:, 0] = 0.5
    assert torch.equal(shrunk, expected)
    failure(run("GrowMask", {"mask": mask_src(torch.ones(1, 2, 3, 3))}, expand=1), None,
            "mask is not a mask of shape (B, 1, H, W)")


def test_feather_mask_ramps_from_each_edge(run):
    out = outputs(run("FeatherMask", {"mask": mask_src(torch.ones(2, 1, 4, 6))}, left=2, top=1, right=3,
                      bottom=2))["mask"]
    columns = torch.tensor([0.5, 1.0, 1.0, 1.0, 2 / 3, 1 / 3])
    rows = torch.tensor([1.0, 1.0, 1.0, 0.5])
    assert out.shape == (2, 1, 4, 6) and torch.allclose(out[1, 0], rows[:, None] * columns[None, :])
    wide = outputs(run("FeatherMask", {"mask": mask_src(torch.ones(1, 1, 2, 3))}, left=50))["mask"]
    assert torch.allclose(wide[0, 0, 0], torch.tensor([1 / 3, 2 / 3, 1.0]))  # clipped to the width


def test_every_classic_node_is_registered_with_its_comfyui_name():
    for type_name, comfy in [("LatentUpscale", "Upscale Latent"), ("LatentUpscaleBy", "Upscale Latent By"),
                             ("LatentComposite", "Latent Composite"), ("LatentFromBatch", "LatentFromBatch"),
                             ("RepeatLatentBatch", "RepeatLatentBatch"), ("ImagePadForOutpaint", "ImagePadForOutpaint"),
                             ("AutoencoderEncodeForInpaint", "VAEEncodeForInpaint"), ("SolidMask", "SolidMask"),
                             ("MaskComposite", "MaskComposite"), ("GrowMask", "GrowMask"),
                             ("FeatherMask", "FeatherMask"), ("LoadImageMask", "LoadImageMask"),
                             ("ImageCompositeMasked", "ImageCompositeMasked")]:
        spec = REGISTRY[type_name]
        assert comfy in spec.aliases and spec.category in ("latent", "image", "mask") and spec.help
