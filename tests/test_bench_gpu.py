"""bench.bench_gpu on a machine without a CUDA GPU: one line, exit status 0."""
from __future__ import annotations

import pytest
import torch

from bench import bench_gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the bench would measure it")
def test_without_a_gpu_it_says_so_and_exits_0(capsys):
    assert bench_gpu.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]


def test_card_peaks_match_the_longest_name():
    assert bench_gpu.card_peak("NVIDIA H100 PCIe") == 756.0 and bench_gpu.card_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_gpu.card_peak("Some Card") is None
