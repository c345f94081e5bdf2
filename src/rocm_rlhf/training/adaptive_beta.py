"""An adaptive beta: hold ROCM's per-sample divergence near a target instead of fixing beta (issue 'beyond the paper').

The proportional controller of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", section
2.2: ``e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)``, ``beta_{t+1} = beta_t (1 + K_beta e_t)``), taken in log
space, where divergences that differ by orders of magnitude (KL against Fisher) and betas that do are treated alike::

    e_t = clip(log(D_t / target), -clip, clip)
    log beta_{t+1} = clip(log beta_t + gain * e_t, log beta_min, log beta_max)

``D_t`` is the step's divergence as ROCM's loss uses it: the batch mean of the per-sample sum over the sampler's
transitions (``divergence_mean`` of log.csv), measured before the update of step ``t``. Beta rises while the policy is
further from the reference than the target and falls while it is nearer; at ``gain = 0.1`` and ``clip = 1`` it moves
at most a factor e^0.1 (about 1.105) per step. ``D_t = 0`` (the first step, where the adapter is still zero) counts
as the largest shortfall. The state is beta itself, saved with the run's checkpoints so a resumed run continues it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class AdaptiveBeta:
    target: float
    beta: float = 1.0  # the starting beta (rocm.adaptive.init_beta)
    gain: float = 0.1
    clip: float = 1.0
    beta_min: float = 1e-4
    beta_max: float = 1e4

    def __post_init__(self):
        problems = []
        if not (isinstance(self.target, (int, float)) and math.isfinite(self.target) and self.target > 0):
            problems.append(f"target must be a positive number, got {self.target!r}")
        if not 0 < self.beta_min <= self.beta <= self.beta_max:
            problems.append(f"need 0 < beta_min <= init_beta <= beta_max, got {self.beta_min}, {self.beta}, "
                            f"{self.beta_max}")
        if self.gain <= 0 or self.clip <= 0:
            problems.append(f"gain and clip must be positive, got {self.gain}, {self.clip}")
        if problems:
            raise ValueError("adaptive beta: " + "; ".join(problems))

    def error(self, divergence: float) -> float:
        """The clipped log-ratio of the measured divergence to the target."""
        if not math.isfinite(divergence):
            raise ValueError(f"adaptive beta: the measured divergence is {divergence} (not finite)")
        if divergence <= 0:
            return -self.clip
        return max(-self.clip, min(self.clip, math.log(divergence / self.target)))

    def update(self, divergence: float) -> float:
        """Beta for the next step, after a step whose divergence was ``divergence``."""
        log_beta = math.log(self.beta) + self.gain * self.error(divergence)
        self.beta = math.exp(max(math.log(self.beta_min), min(math.log(self.beta_max), log_beta)))
        return self.beta

    def state(self) -> dict:
        return {"beta": self.beta}

    def load_state(self, state: dict) -> None:
        self.beta = float(state["beta"])
