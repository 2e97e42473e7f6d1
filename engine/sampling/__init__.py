"""Sampling: schedules, samplers, guidance, seeded noise, previews and the `sample` pipeline.

Modules (all but `names` import torch; nodes import them inside compute):
- names: sampler and scheduler names (torch-free, for node specs)
- denoiser: DiscreteDenoiser (sigma <-> timestep, eps/v -> x0) and GuidedDenoiser (CFG)
- schedules: get_sigmas(model_wrapper, scheduler, steps), img2img_sigmas(...)
- samplers, unipc, paper_samplers: sampler(model, x, sigmas, extra_args, callback, noise_sampler)
- noise: per-item seeded CPU noise; preview: latent -> RGB projection
- pipeline: sample(model, latent, positive, negative, seed, options, ...) -> Latent
"""
