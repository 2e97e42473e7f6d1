"""Layout boxes as concat channels: painting, the model's channel order, and guidance batches."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.models.configs import DiffusionConfig
from engine.models.diffusion import LatentDiffusionModel
from engine.models.regions import layout_regions, paint_regions
from engine.sampling.denoiser import DiscreteDenoiser, GuidedDenoiser
from engine.values import Conditioning

WORDS = ("red", "blue", "circle", "square")


def test_boxes_paint_the_cells_they_cover_in_their_label_words_channels():
    regions = layout_regions([[{"label": "red circle", "box": [0.25, 0.0, 0.5, 0.5]},
                               {"label": "Blue hexagon", "box": [0.6, 0.75, 1.0, 1.0]}]], WORDS)
    painted = paint_regions(regions, 4, 4)  # (1, 1 + 4, 4, 4): box, red, blue, circle, square
    box, red, blue, circle, square = painted[0]
    assert box[:2, 1].tolist() == [1.0, 1.0] and box[:2, 0].tolist() == [0.0, 0.0]
    expected = torch.zeros(4, 4)
    expected[:2, 1] = 1
    assert torch.equal(red, expected)
    assert torch.equal(circle, red) and square.abs().max() == 0
    # a box edge inside a cell covers part of it; the unknown word "hexagon" lights nothing
    assert abs(blue[3, 2].item() - 0.6) < 1e-6 and blue[3, 3].item() == 1.0
    assert blue[2].abs().max() == 0 and box[3, 2].item() == blue[3, 2].item()


def test_layouts_of_different_lengths_pad_with_empty_boxes():
    regions = layout_regions([[{"label": "red square", "box": [0, 0, 1, 1]}], []], WORDS)
    assert regions.shape == (2, 1, 4 + 1 + len(WORDS))
    painted = paint_regions(regions, 2, 2)
    assert painted[0, 0].min() == 1 and painted[1].abs().max() == 0


@dataclass
class _Cfg:
    in_channels: int


class RecordingUNet(nn.Module):
    """Stands in for a UNet: records the input it is given and returns zeros."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.cfg = _Cfg(in_channels)
        self.weight = nn.Parameter(torch.zeros(1))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, t, context=None, y=None):
        self.inputs.append(x.detach().clone())
        return torch.zeros(x.shape[0], 4, *x.shape[2:])


def _model(k: int = 1 + len(WORDS)) -> LatentDiffusionModel:
    return LatentDiffusionModel(RecordingUNet(4 + 5 + k), DiffusionConfig(conditioning_key="hybrid", region_channels=k))


def test_the_model_reads_regions_after_its_inpainting_channels_painted_at_the_latents_size():
    model = _model()
    layout = [{"label": "blue square", "box": [0.5, 0.5, 1.0, 1.0]}]
    inpaint = torch.rand(1, 5, 6, 8)
    x = torch.randn(1, 4, 6, 8)
    model.apply(x, torch.tensor([10]), Conditioning(concat=inpaint, regions=layout_regions([layout], WORDS)))
    model.apply(x, torch.tensor([10]), Conditioning())
    with_layout, plain = model.unet.inputs
    assert with_layout.shape == (1, 4 + 5 + 5, 6, 8)
    assert torch.equal(with_layout[:, :4], x) and torch.equal(with_layout[:, 4:9], inpaint)
    assert torch.equal(with_layout[:, 9:], paint_regions(layout_regions([layout], WORDS), 6, 8))
    assert with_layout[0, 9, 3:, 4:].min() == 1 and with_layout[0, 9, :3].abs().max() == 0
    assert plain[:, 4:].abs().max() == 0  # nothing given: every concat channel zero


def test_guidance_batches_a_layout_against_a_negative_without_one():
    model = _model()
    layout = [{"label": "red circle", "box": [0.0, 0.0, 0.5, 0.5]}, {"label": "blue square", "box": [0.5, 0.5, 1, 1]}]
    cond = Conditioning(crossattn=torch.randn(1, 3, 8), regions=layout_regions([layout], WORDS))
    uncond = Conditioning(crossattn=torch.randn(1, 3, 8))
    guided = GuidedDenoiser(DiscreteDenoiser(model), cond, uncond, 3.0)
    guided(torch.randn(2, 4, 4, 4), torch.tensor(1.0))
    (batched,) = model.unet.inputs  # one UNet call for [uncond, cond] of a batch of 2
    assert batched.shape[0] == 4
    assert batched[:2, 9:].abs().max() == 0  # the negative has no boxes
    expected = paint_regions(layout_regions([layout], WORDS), 4, 4)
    assert torch.equal(batched[2:, 9:], expected.expand(2, -1, -1, -1))


def test_a_sampler_run_paints_its_regions_once_not_at_every_step(monkeypatch):
    from engine.models import diffusion

    calls = []
    real = diffusion.paint_regions
    monkeypatch.setattr(diffusion, "paint_regions", lambda *a: calls.append(a[1:]) or real(*a))
    model = _model()
    cond = Conditioning(regions=layout_regions([[{"label": "red circle", "box": [0, 0, 0.5, 0.5]}]], WORDS))
    x = torch.randn(1, 4, 8, 8)
    for t in (900, 500, 100):  # three steps, one conditioning
        model.apply(x, torch.tensor([t]), cond)
    model.apply(torch.randn(1, 4, 4, 4), torch.tensor([100]), cond)  # another size is painted anew
    assert calls == [(8, 8), (4, 4)]
    first, *_, last = model.unet.inputs
    assert torch.equal(first[:, 9:], paint_regions(cond.regions, 8, 8))
    assert torch.equal(last[:, 9:], paint_regions(cond.regions, 4, 4))
