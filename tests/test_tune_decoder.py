"""Decoder tuning: the border signature is stripped from latents, only the decoder learns, and a tuned
decoder goes into a checkpoint that shares the autoencoder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train_semantic import write_tiny_autoencoder

from engine.errors import KilnError
from training import tune_decoder as td


def test_stripping_copies_the_next_row_or_column_inwards_and_leaves_the_inside():
    z = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    assert torch.equal(td.strip_border_signature(z, np.random.default_rng(0), p=0.0), z)
    out = td.strip_border_signature(z, np.random.default_rng(0), p=1.0)
    assert torch.equal(out[:, :, 2:4, 2:4], z[:, :, 2:4, 2:4])
    for i in range(2):
        assert torch.equal(out[i, :, 0, 2:4], out[i, :, 1, 2:4])
        assert torch.equal(out[i, :, 2:4, -1], out[i, :, 2:4, -2])
        assert not torch.equal(out[i, :, 0], z[i, :, 0])  # the top row no longer carries its own values


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tune")
    ae = write_tiny_autoencoder(folder / "ae.safetensors")
    run = folder / "run"
    assert td.main(["train", "--out", str(run), "--ae", str(ae), "--steps", "3", "--batch", "2", "--pool", "4",
                    "--threads", "1"]) == 0
    td.export(str(run), str(folder / "tuned"), n_eval=0, weights="weights")
    return ae, folder / "tuned.safetensors"


def test_only_the_decoder_changes_and_the_card_says_how(tuned):
    ae, out = tuned
    before, after = load_file(str(ae)), load_file(str(out))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("first_stage_model.decoder.", "first_stage_model.post_quant_conv."))
                           for k in changed)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["decoder_tuning"]["steps"] == 3 and card["architecture"]
    assert "evaluation" not in card  # exported unmeasured: no figures of the decoder it replaced


def test_a_tuned_decoder_replaces_a_checkpoints_own_and_a_mismatch_is_refused(tuned, tmp_path):
    ae, out = tuned
    model = tmp_path / "model.safetensors"
    shutil.copy(ae, model)
    shutil.copy(ae.with_suffix(".json"), model.with_suffix(".json"))
    assert td.swap(str(out), str(model)) > 0
    swapped, new, old = load_file(str(model)), load_file(str(out)), load_file(str(ae))
    assert all(torch.equal(swapped[k], new[k]) for k in new if ".decoder." in k)
    assert all(torch.equal(swapped[k], old[k]) for k in old if ".encoder." in k)
    other = write_tiny_autoencoder(tmp_path / "other.safetensors", ch_mult=(1, 1, 1))
    with pytest.raises(KilnError, match="model.safetensors"):
        td.swap(str(other), str(model))


SHIPPED = str(Path(__file__).resolve().parents[1] / "resources" / "models" / "kiln-shapes-")


def test_the_shipped_decoder_draws_the_top_edge_as_well_as_the_inside_even_from_a_flipped_latent():
    """The band a generated picture used to get along its top edge: a real picture's latent flipped upside
    down has the encoder's border signature at the wrong edge, as a generated latent may."""
    from training.data import held_out_seeds, render_batch, to_tensor
    from training.model_files import load_autoencoder

    ae, _ = load_autoencoder(SHIPPED + "ae.safetensors")
    x = to_tensor(render_batch(held_out_seeds(16), 128))  # (16, 3, 128, 128) in [-1, 1]
    with torch.no_grad():
        z = ae.encode(x).mode()
        for latent, picture in ((z, x), (z.flip(-2), x.flip(-2))):
            levels = (ae.decode(latent).clamp(-1, 1) - picture).abs() * 127.5
            top, inside = levels[..., :2, :].mean().item(), levels[..., 8:-8, :].mean().item()
            assert top < max(2.0, 1.5 * inside), (top, inside)


def test_the_shipped_base_and_semantic_models_carry_the_shipped_decoder():
    ae = load_file(SHIPPED + "ae.safetensors")
    decoder = {k: v for k, v in ae.items() if k.startswith(tuple(td.AE_PREFIX + p for p in td.DECODER_KEYS))}
    assert len(decoder) > 50
    for name in ("base", "semantic"):
        model = load_file(f"{SHIPPED}{name}.safetensors")
        assert all(torch.equal(model[k], v) for k, v in decoder.items()), name
