"""Training: ROCM and the baselines over one shared loop.

- :mod:`.run`: one run from the config (``train_run``, ``make_method`` through :data:`rocm_rlhf.runs.METHODS`);
- :mod:`.loop`: the loop (optimizer, checkpoints, logging, cost); :mod:`.lora`: the adapter; :mod:`.distributed`:
  several devices;
- :mod:`.rocm`: ROCM; :mod:`.rlcm`, :mod:`.ddpo`, :mod:`.d3po`, :mod:`.dpok`: the baselines, each with ``from_config``;
- :mod:`.ppo`: the policy-gradient machinery they share; :mod:`.ddim_policy`: the diffusion baselines' DDIM policy;
  :mod:`.batching`: their torch-free rollout-batch rules.
"""
