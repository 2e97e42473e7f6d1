"""CPU convolutions with prepacked oneDNN weights: the same numbers as a plain convolution, faster."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.models.prepacked import PrepackedConv2d, prepack_convolutions, prepacking_available

MODELS = Path(__file__).resolve().parents[1] / "resources" / "models"
pytestmark = pytest.mark.skipif(not prepacking_available(), reason="this torch build lacks oneDNN")


def _pair(**kwargs) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 16, 3, **kwargs)
    packed = nn.Sequential(nn.Conv2d(8, 16, 3, **kwargs))
    packed.load_state_dict({"0." + k: v for k, v in plain.state_dict().items()})
    assert prepack_convolutions(packed) == 1
    return plain, packed[0]


@pytest.mark.parametrize("kwargs", [{"padding": 1}, {"stride": 2, "padding": 1}, {"padding": 0, "bias": False},
                                    {"padding": 2, "dilation": 2}])
def test_prepacked_convolution_matches_the_plain_one(kwargs):
    plain, packed = _pair(**kwargs)
    assert isinstance(packed, PrepackedConv2d)
    for shape in ((2, 8, 16, 16), (1, 8, 9, 13), (2, 8, 16, 16)):  # a new shape, then the first one again
        x = torch.randn(*shape)
        with torch.no_grad():
            for layout in (torch.contiguous_format, torch.channels_last):
                torch.testing.assert_close(packed(x.contiguous(memory_format=layout)), plain(x), rtol=0, atol=1e-5)
    assert len(packed._packed) == 2  # one packed weight per input shape


def test_big_models_keep_plain_convolutions():
    """A second copy of a Stable Diffusion UNet's convolution weights would cost gigabytes of memory."""
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3))
    assert prepack_convolutions(model, max_parameters=16 * 8 * 9 + 16 * 16 * 9 - 1) == 0
    assert not any(isinstance(m, PrepackedConv2d) for m in model.modules())
    assert prepack_convolutions(model, max_parameters=16 * 8 * 9 + 16 * 16 * 9) == 2


def test_a_changed_weight_is_repacked():
    plain, packed = _pair(padding=1)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        packed(x)
        for conv in (plain, packed):
            conv.weight.mul_(-2.0)  # changed in place, as a patch or a reload would
        torch.testing.assert_close(packed(x), plain(x), rtol=0, atol=1e-5)


def test_training_and_other_dtypes_take_the_plain_path():
    plain, packed = _pair(padding=1)
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    packed(x).sum().backward()  # autograd: the plain convolution, which has a backward
    assert x.grad is not None and packed.weight.grad is not None and not packed._packed
    with torch.no_grad():
        torch.testing.assert_close(packed.double()(x.double()), plain.double()(x.double()))
    assert not packed._packed


def test_state_dict_keys_and_copies_behave_as_for_a_plain_convolution():
    plain, packed = _pair(padding=1)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        packed(x)
        assert list(packed.state_dict()) == list(plain.state_dict()) == ["weight", "bias"]
        copied = copy.deepcopy(packed)  # the packed weights have no storage: the copy packs its own
        assert isinstance(copied, PrepackedConv2d) and not copied._packed and packed._packed
        torch.testing.assert_close(copied(x), plain(x), rtol=0, atol=1e-5)


def test_the_built_in_base_model_samples_the_same_picture_with_prepacked_convolutions():
    from engine.models.loader import load_checkpoint

    loaded = load_checkpoint(MODELS / "kiln-shapes-base.safetensors", "cpu")
    unet = loaded.model.unet
    assert any(isinstance(m, PrepackedConv2d) for m in unet.modules())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, unet.cfg.in_channels, 16, 16, generator=g)
    context = torch.randn(2, 32, unet.cfg.context_dim, generator=g)
    t = torch.tensor([999.0, 400.0])
    with torch.no_grad():
        fast = unet(x, t, context)
        for module in unet.modules():
            if isinstance(module, PrepackedConv2d):
                module.prepacked = False  # the plain path from here on
        plain = unet(x, t, context)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
