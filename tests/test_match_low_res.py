"""Match Low-Res Input: the upscaled picture made to agree with the small one, through the real node."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import UserInputError
from engine.values import Image
from nodes.match_low_res import MATCH_LOW_RES


def _run(large: torch.Tensor, small: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    out = MATCH_LOW_RES.compute(None, {"image": Image(large, (5,)), "low_res": Image(small)},
                                {"iterations": iterations})["image"]
    assert out.seeds == (5,)
    return out.pixels


def test_the_upscaled_picture_comes_to_average_to_the_small_one_and_keeps_its_edges():
    torch.manual_seed(0)
    truth = torch.zeros(1, 3, 64, 64)
    truth[:, 0, 16:48, 20:52] = 0.9  # a red square
    small = F.avg_pool2d(truth, 4)
    drifted = (truth * 0.8 + 0.05).clamp(0, 1)  # right edges, wrong colours
    matched = _run(drifted, small)
    assert (F.avg_pool2d(matched, 4) - small).abs().max() < 0.02 < (F.avg_pool2d(drifted, 4) - small).abs().max()
    assert (matched - truth).pow(2).mean() < 0.1 * (drifted - truth).pow(2).mean()
    assert torch.equal(_run(drifted, small, iterations=0), drifted)


def test_one_small_picture_serves_a_batch():
    large, small = torch.rand(3, 3, 32, 32), torch.rand(1, 3, 8, 8)
    assert _run(large, small).shape == (3, 3, 32, 32)


@pytest.mark.parametrize("small_size, words", [((3, 10, 10), "32x32 and the low-res input 10x10"),
                                               ((3, 8, 16), "whole factor"), ((3, 32, 32), "whole factor")])
def test_sizes_that_are_not_a_whole_upscale_are_one_clear_message(small_size, words):
    with pytest.raises(UserInputError, match=words):
        _run(torch.rand(1, 3, 32, 32), torch.rand(1, *small_size))


def test_batches_that_do_not_fit_name_both_counts():
    with pytest.raises(UserInputError, match="holds 2 pictures and the image 3"):
        _run(torch.rand(3, 3, 32, 32), torch.rand(2, 3, 8, 8))
