"""Samplers shared by training, evaluation and benchmarks, for sandbox and hub models alike.

- :mod:`.consistency`: the reparameterised K-step LCM sampler (ROCM, RLCM).
- :mod:`.diffusion`: the stochastic DDIM sampler with per-step log-probabilities (DDPO, D3PO, DPOK).
- :mod:`.common`: prompt encoding, Gaussian log-densities and VAE decoding, re-exported here
  (``encode_prompts``, ``gaussian_log_prob``, ``decode_latents``).
"""

from .common import decode_latents, encode_prompts, gaussian_log_prob

__all__ = ["decode_latents", "encode_prompts", "gaussian_log_prob"]
