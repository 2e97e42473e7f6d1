import numpy as np
import torch

from engine.models.configs import UNetConfig
from engine.models.token_conditioner import TokenConditionerConfig
from training.train_ldm import LdmTrainConfig, Trainer, make_batch, vocabulary


def tiny_config(**kw) -> LdmTrainConfig:
    unet = UNetConfig(in_channels=9, out_channels=4, model_channels=32, num_res_blocks=1,
                      attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=8,
                      use_spatial_transformer=True, context_dim=32, use_linear_in_transformer=True,
                      legacy=False)
    cond = TokenConditionerConfig(words=vocabulary(), coord_bins=16, max_tokens=40, width=32, layers=1, heads=2)
    return LdmTrainConfig(unet=unet, conditioner=cond, batch=8, **kw)


def test_batches_mix_text_layout_and_inpainting_masks():
    cfg = tiny_config(p_inpaint=0.5)
    trainer = Trainer(cfg)
    latents = torch.randn(20, 4, 8, 8).half()
    batch = make_batch(cfg, trainer.conditioner.tokenizer, latents, list(range(20)), 1.0,
                       np.random.default_rng(1))
    masks = batch.concat[:, 4]
    masked = batch.concat[:, :4]
    assert batch.tokens.shape == (8, 40)
    for i in range(8):
        if masks[i].max() == 0:  # plain generation: all concat channels are zero
            assert masked[i].abs().max() == 0
        else:  # inpainting: the known latent outside the hole, zeros inside
            assert torch.equal(masked[i] * masks[i], torch.zeros_like(masked[i]))
            keep = masks[i] == 0
            assert torch.allclose(masked[i][:, keep], batch.latents[i][:, keep])
    assert 0 < int((masks.flatten(1).amax(1) > 0).sum()) < 8


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = tiny_config(lr=2e-3)
    trainer = Trainer(cfg)
    batch = make_batch(cfg, trainer.conditioner.tokenizer, torch.randn(8, 4, 8, 8).half(), list(range(8)),
                       1.0, np.random.default_rng(0))
    losses = [trainer.train_step(batch, torch.Generator().manual_seed(0)) for _ in range(8)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert trainer.step == 8
