"""Regional prompts (engine.models.regional, engine.sampling.region_blend, nodes.regional_nodes) on a tiny
random SD-shaped model with a CLIP text encoder: where a region acts, strength 0, batching, time ranges,
mask resampling, and the nodes' arithmetic."""
from __future__ import annotations

import pytest
import torch
from zoo_support import write_zoo_checkpoint

from engine.models.loader import load_checkpoint
from engine.models.regional import PromptRegion, compile_regions
from engine.sampling.denoiser import DiscreteDenoiser, GuidedDenoiser
from engine.values import Conditioning
from nodes import build_registry

REGISTRY = build_registry()


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    path, _ = write_zoo_checkpoint("sd15", tmp_path_factory.mktemp("regional") / "models")
    loaded = load_checkpoint(path)
    torch.manual_seed(0)
    for p in loaded.model.unet.out.parameters():  # the zoo's zero output conv would hide every change
        torch.nn.init.normal_(p, std=0.05)
    return loaded


def _prompt(sd, text: str) -> Conditioning:
    return sd.conditioner.encode([text])


def _latent(h: int = 32, w: int = 32, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(3))


def _apply(sd, cond: Conditioning, x: torch.Tensor, t: float = 500.0) -> torch.Tensor:
    with torch.no_grad():
        return sd.model.apply(x, torch.full((x.shape[0],), t), cond)


def test_a_region_changes_the_prediction_inside_its_box_and_little_outside(sd):
    glob, region = _prompt(sd, "a photo"), _prompt(sd, "cat dog bird")
    x = _latent()
    plain = _apply(sd, glob, x)
    boxed = glob.with_(prompt_regions=(PromptRegion(region.crossattn, box=(0.0, 0.0, 0.25, 0.25)),))
    change = (_apply(sd, boxed, x) - plain).abs().mean(dim=(0, 1))  # (32, 32)
    inside, far = change[:8, :8].mean(), change[16:, 16:].mean()
    assert inside > 1e-3
    # self-attention carries a little of it everywhere; the cross-attention change itself is confined to the box
    assert inside > 5 * far, (float(inside), float(far))


def test_strength_zero_equals_no_region_in_both_modes(sd):
    glob, region = _prompt(sd, "a photo"), _prompt(sd, "cat")
    x = _latent()
    for mode in ("attention", "blend"):
        cond = glob.with_(prompt_regions=(PromptRegion(region.crossattn, box=(0.1, 0.1, 0.6, 0.6), strength=0.0),),
                          region_mode=mode)
        guided = GuidedDenoiser(DiscreteDenoiser(sd.model), cond, _prompt(sd, ""), scale=5.0)
        plain = GuidedDenoiser(DiscreteDenoiser(sd.model), glob, _prompt(sd, ""), scale=5.0)
        with torch.no_grad():
            assert torch.equal(guided(x, 3.0), plain(x, 3.0)), mode


def test_outside_every_region_attention_sees_exactly_the_global_prompt(sd):
    glob, region = _prompt(sd, "a photo"), _prompt(sd, "cat")
    joined = compile_regions(glob.crossattn, [PromptRegion(region.crossattn, box=(0.0, 0.0, 0.5, 0.5))], 1, 0.5)
    bias = joined.bias(4, 4)[0, 0]  # (16 positions, 2 * 77 tokens)
    t = glob.crossattn.shape[1]
    outside = [i for i in range(16) if i // 4 >= 2 or i % 4 >= 2]
    assert torch.all(bias[outside, :t] == 0) and torch.all(torch.isinf(bias[outside, t:]))
    assert torch.allclose(bias[0, :t], torch.tensor(0.3).log()) and torch.all(bias[0, t:] == 0)


@pytest.mark.parametrize("mode", ["attention", "blend"])
def test_the_batched_path_equals_one_call_per_prompt(sd, mode):
    glob, negative = _prompt(sd, "a photo"), _prompt(sd, "")
    regions = tuple(PromptRegion(_prompt(sd, word).crossattn, box=box, strength=s)
                    for word, box, s in (("cat", (0.0, 0.0, 0.5, 0.5), 1.0), ("dog", (0.4, 0.3, 1.0, 0.9), 2.0),
                                         ("bird", (0.1, 0.6, 0.3, 1.0), 0.5)))
    cond = glob.with_(prompt_regions=regions, region_mode=mode)
    x = _latent(batch=2)
    batched = GuidedDenoiser(DiscreteDenoiser(sd.model), cond, negative, scale=4.0)
    single = GuidedDenoiser(DiscreteDenoiser(sd.model), cond, negative, scale=4.0)
    single.batch_blend_passes = False
    single._batched_conditioning = lambda batch: None  # the unconditional and conditional passes apart
    calls: list[int] = []
    batched.on_model_eval = calls.append
    with torch.no_grad():
        a, b = batched(x, 2.0), single(x, 2.0)
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert len(calls) == 1  # uncond, global and three regions (blend) or the joined context (attention): one call


def test_blend_mode_is_the_mask_weighted_average_of_the_predictions():
    class ByContext:  # the prediction is the context's first value everywhere: each prompt's own number
        sigma_to_t_scalar = staticmethod(lambda sigma: 500.0)
        num_timesteps = 1000

        def __call__(self, x, sigma, cond):
            return cond.crossattn[:, 0, 0].view(-1, 1, 1, 1).expand(-1, *x.shape[1:]).clone()

    def ctx(value: float) -> torch.Tensor:
        return torch.full((1, 2, 3), value)

    mask = torch.zeros(8, 8)
    mask[:, :4] = 1.0  # the left half
    regions = (PromptRegion(ctx(10.0), box=(0.0, 0.0, 0.5, 1.0), strength=1.0),
               PromptRegion(ctx(20.0), mask=mask, strength=3.0))
    cond = Conditioning(crossattn=ctx(1.0), prompt_regions=regions, region_mode="blend")
    out = GuidedDenoiser(ByContext(), cond, None, scale=1.0)(torch.zeros(1, 1, 4, 4), 1.0)
    left, right = float(out[0, 0, 0, 0]), float(out[0, 0, 0, 3])
    assert left == pytest.approx((1 + 10 * 1 + 20 * 3) / (1 + 1 + 3))
    assert right == pytest.approx(1.0)


def test_a_time_range_acts_only_inside_it(sd):
    glob, region = _prompt(sd, "a photo"), _prompt(sd, "cat")
    late = glob.with_(prompt_regions=(PromptRegion(region.crossattn, box=(0.0, 0.0, 0.5, 0.5), start=0.5),))
    x = _latent()
    early_t, late_t = 900.0, 100.0  # progress 0.1 and 0.9
    assert torch.equal(_apply(sd, late, x, early_t), _apply(sd, glob, x, early_t))
    assert not torch.allclose(_apply(sd, late, x, late_t), _apply(sd, glob, x, late_t))


def test_masks_and_boxes_resample_at_any_size_including_non_square():
    mask = torch.zeros(40, 60)
    mask[:, :30] = 1.0  # the left half, at its own resolution
    left = PromptRegion(torch.zeros(1, 1, 1), mask=mask)
    assert torch.equal(left.coverage(6, 10, torch.device("cpu")), torch.cat([torch.ones(6, 5), torch.zeros(6, 5)], 1))
    box = PromptRegion(torch.zeros(1, 1, 1), box=(0.25, 0.0, 0.5, 0.5))  # x 0.25..0.5, y 0..0.5
    cover = box.coverage(3, 6, torch.device("cpu"))  # cells 1/6 wide, 1/3 tall
    assert cover[0].tolist() == pytest.approx([0, 0.5, 1, 0, 0, 0])
    assert cover[1].tolist() == pytest.approx([0, 0.25, 0.5, 0, 0, 0])  # half of the middle row
    assert cover[2].sum() == 0


def test_a_region_on_a_non_square_latent_acts_where_its_mask_is(sd):
    glob, region = _prompt(sd, "a photo"), _prompt(sd, "cat dog")
    mask = torch.zeros(100, 300)
    mask[:, 200:] = 1.0  # the right third
    x = _latent(16, 48)
    cond = glob.with_(prompt_regions=(PromptRegion(region.crossattn, mask=mask, strength=2.0),))
    change = (_apply(sd, cond, x) - _apply(sd, glob, x)).abs().mean(dim=(0, 1))  # (16, 48)
    assert change[:, 32:].mean() > 3 * change[:, :16].mean()


def _node(node_type: str, inputs: dict, **params):
    spec = REGISTRY[node_type]
    return spec.compute(None, inputs, {**spec.default_params(), **params})["conditioning"]


def test_regional_prompts_node_makes_one_region_per_box(sd):
    from engine.layout import Layout

    layout = Layout.from_json([{"label": "cat", "box": [0.1, 0.1, 0.4, 0.4]},
                               {"label": "dog", "box": [0.5, 0.5, 0.9, 0.9]}])
    glob = _prompt(sd, "a photo")
    out = _node("RegionalPrompts", {"conditioner": sd.conditioner, "conditioning": glob, "layout": layout},
                strength=1.5, background=0.2, start=0.1, end=0.8)
    assert [r.box for r in out.prompt_regions] == [(0.1, 0.1, 0.4, 0.4), (0.5, 0.5, 0.9, 0.9)]
    assert torch.equal(out.prompt_regions[1].crossattn, _prompt(sd, "dog").crossattn)
    assert out.region_background == 0.2 and out.prompt_regions[0].strength == 1.5
    assert (out.prompt_regions[0].start, out.prompt_regions[0].end) == (0.1, 0.8)
    assert torch.equal(out.crossattn, glob.crossattn)


def test_set_area_set_mask_and_combine_build_a_global_prompt_with_regions(sd):
    from engine.errors import UserInputError

    glob, cat, dog = _prompt(sd, "a photo"), _prompt(sd, "cat"), _prompt(sd, "dog")
    area = _node("ConditioningSetArea", {"conditioning": cat}, x=0.5, y=0.25, width=0.75, height=0.5, strength=2.0)
    assert area.prompt_regions[0].box == (0.5, 0.25, 1.0, 0.75) and area.region_mode == "blend"
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    masked = _node("ConditioningSetMask", {"conditioning": dog, "mask": mask})
    combined = _node("ConditioningCombine", {"conditioning_1": area, "conditioning_2": glob})
    combined = _node("ConditioningCombine", {"conditioning_1": combined, "conditioning_2": masked})
    assert torch.equal(combined.crossattn, glob.crossattn)  # the region-only inputs do not become global
    assert len(combined.prompt_regions) == 2
    with pytest.raises(UserInputError, match="empty"):
        _node("ConditioningSetMask", {"conditioning": dog, "mask": torch.zeros(1, 1, 8, 8)})
    with pytest.raises(UserInputError, match="start"):
        _node("ConditioningSetArea", {"conditioning": cat}, start=0.8, end=0.2)
