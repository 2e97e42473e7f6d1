"""Sampler and scheduler names, importable without torch (node specs list them)."""
from __future__ import annotations

SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
    "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_2s_ancestral", "uni_pc", "uni_pc_bh2",
    "lcm", "ddpm", "ddim", "plms",
    "dpmpp_3m_sde", "ipndm", "deis", "res_multistep", "res_multistep_ancestral",
    "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp",
)
SCHEDULER_NAMES: tuple[str, ...] = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform",
                                     "ddim_uniform_to_zero", "beta", "linear_quadratic", "kl_optimal")
# "kiln": the paper's samplers and Kiln's noise; "comfyui": ComfyUI's conventions (engine.sampling.comfy_convention)
CONVENTIONS: tuple[str, ...] = ("kiln", "comfyui")
# CFG++ samplers step with the unconditional prediction too (GuidedDenoiser records it).
CFG_PP_SAMPLERS: frozenset[str] = frozenset(
    {"euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp"})
# The original code's samplers (engine.sampling.paper_samplers).
PAPER_SAMPLERS: frozenset[str] = frozenset({"ddim", "plms", "ddpm"})
# With these schedules a paper sampler ends as the original code does: its last step goes to
# alphas_cumprod[0], not to alpha 1 ("ddim_uniform_to_zero" takes the same timesteps to sigma 0).
PAPER_ENDING_SCHEDULERS: frozenset[str] = frozenset({"ddim_uniform"})

# Samplers that take `eta` (the amount of fresh noise per step; 0 = deterministic).
ETA_SAMPLERS: frozenset[str] = frozenset(
    {"euler_ancestral", "dpm_2_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "dpmpp_2s_ancestral", "ddim",
     "dpmpp_3m_sde", "res_multistep_ancestral", "euler_ancestral_cfg_pp"})
# Samplers that draw noise every step (all the others are deterministic given the start).
STOCHASTIC_SAMPLERS: frozenset[str] = ETA_SAMPLERS | {"ddpm", "lcm"}
