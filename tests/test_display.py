"""Socket values as pictures (engine.display) and the runner's display copies of them."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from engine import display
from engine.layout import Layout
from engine.spec import SocketType
from engine.values import Image, Latent


def test_an_image_batch_becomes_one_rgb_array_per_item_rounded_as_saved():
    pixels = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    shown = display.to_rgb(Image(pixels), SocketType.IMAGE)
    assert len(shown) == 2 and all(p.shape == (5, 7, 3) and p.dtype == np.uint8 for p in shown)
    expected = (pixels[1] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(shown[1], expected)
    assert len(display.to_rgb(Image(torch.rand(20, 3, 2, 2)), SocketType.IMAGE)) == display.MAX_ITEMS


def test_a_mask_is_shown_in_grey_with_or_without_its_batch_and_channel_dimensions():
    mask = torch.zeros(4, 6)
    mask[:, :3] = 1
    for value in (mask, mask[None], mask[None, None]):
        (shown,) = display.to_rgb(value, SocketType.MASK)
        assert shown.shape == (4, 6, 3)
        assert (shown[:, :3] == 255).all() and (shown[:, 3:] == 0).all()


def test_a_layout_is_drawn_and_an_empty_one_shows_nothing():
    layout = Layout.from_json([{"label": "red circle", "box": [0.25, 0.25, 0.75, 0.75]}])
    (drawn,) = display.to_rgb(layout, SocketType.LAYOUT)
    assert drawn.shape == (display.LAYOUT_SIDE, display.LAYOUT_SIDE, 3)
    assert tuple(drawn[64, 64]) == (220, 40, 40)  # the box's outline in its label's colour
    assert display.to_rgb(Layout(), SocketType.LAYOUT) == []


def test_a_latent_is_previewed_per_item_and_other_sockets_show_nothing():
    latent = Latent(torch.zeros(3, 4, 8, 8))
    previews = display.to_rgb(latent, SocketType.LATENT)
    assert len(previews) == 3 and previews[0].shape == (8, 8, 3) and previews[0].dtype == np.uint8
    assert display.to_rgb(latent, SocketType.CONDITIONING) == []
    assert display.to_rgb(Image(torch.rand(1, 3, 4, 4)), SocketType.MODEL) == []


def test_a_thumbnail_keeps_the_aspect_and_averages_the_pixels_it_covers():
    rgb = np.zeros((512, 1024, 3), dtype=np.uint8)
    rgb[:, ::2] = 200  # stripes a pixel wide average to mid grey
    small = display.thumbnail(rgb, 256)
    assert small.shape == (128, 256, 3) and np.abs(small.astype(int) - 100).max() <= 1
    assert display.thumbnail(rgb[:10, :20], 256).shape == (10, 20, 3)  # never enlarged


def test_the_runner_shows_outputs_by_their_socket_type():
    from app.runner import THUMB_SIDE, _pictures

    image = Image(torch.rand(1, 3, 300, 600), seeds=(7,))
    layout = Layout.from_json([{"label": "blue square", "box": [0, 0, 0.5, 0.5]}])
    pictures, seeds = _pictures([(SocketType.LAYOUT, layout), (SocketType.IMAGE, image)])
    assert seeds == (7,) and pictures[0].rgb.shape == (300, 600, 3)  # the image before the layout
    assert pictures[0].thumb.shape == (THUMB_SIDE // 2, THUMB_SIDE, 4)
    assert np.array_equal(pictures[0].display[..., :3], pictures[0].rgb[..., ::-1])  # B, G, R, 255
    assert (pictures[0].display[..., 3] == 255).all()
    drawn, no_seeds = _pictures([(SocketType.LAYOUT, layout)])
    assert len(drawn) == 1 and no_seeds == ()
    latent_only, _ = _pictures([(SocketType.LATENT, Latent(torch.zeros(1, 3, 8, 8)))])
    assert latent_only == []  # a sampler's latent is not taken for an image by its shape


def test_importing_the_runner_does_not_import_torch():
    code = "import sys, app.runner; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
