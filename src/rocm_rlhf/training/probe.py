"""The held-out probe of a training run: at step 0 and at every checkpoint, the current policy samples fixed
validation prompts with the evaluation's own sampler and noise, and each probe metric (the primary endpoint and the
training reward) is averaged over those images. The rows go to the run's ``curve.csv``; the probe's time is not
counted in the run's wall clock or device-hours, and it draws no randomness the training uses.

API: :class:`HeldOutProbe` (built from a plain, JSON-able spec: :meth:`HeldOutProbe.from_spec`) and
:data:`CURVE_COLUMNS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

CURVE_COLUMNS = ("step", "reward_queries", "device_hours", "wall_s", "metric", "mean", "n_images")
"""The columns of a run's ``curve.csv``, one row per (probed step, metric)."""


@dataclass
class HeldOutProbe:
    units: pd.DataFrame  # (prompt_id, prompt, sample_seed) of the probe images
    sampler: dict  # rocm_rlhf.evaluation.generate_units' sampler spec: the run's own sampler
    scorers: dict  # metric name -> scorer (the training reward's own object where it is a probe metric)
    batch_size: int = 64

    @classmethod
    def from_spec(cls, spec: dict, *, reward_name: str, reward, device) -> "HeldOutProbe | None":
        """``spec``: ``{"prompts": [[prompt_id, prompt], ...], "images_per_prompt", "sampler", "metrics": {name:
        scorer kwargs}, "batch_size"}`` (the train stage builds it from ``train.probe``); None when it has no prompt.
        The training reward is reused (not counted as reward queries); other metrics are loaded here."""
        from ..evaluation import eval_units
        from ..rewards import load_scorer

        if not spec or not spec.get("prompts"):
            return None
        prompts = pd.DataFrame(spec["prompts"], columns=["prompt_id", "prompt"])
        scorers = {name: reward if name == reward_name else load_scorer(name, **kwargs).to(device)
                   for name, kwargs in spec["metrics"].items()}
        return cls(eval_units(prompts, int(spec["images_per_prompt"])), dict(spec["sampler"]), scorers,
                   int(spec.get("batch_size", 64)))

    def digest(self) -> str:
        """What the probe measures (its images, sampler and metrics), for the run's training digest: a checkpoint
        made under another probe holds curve rows that would not match, so the run starts afresh."""
        import hashlib
        import json

        blob = json.dumps({"units": self.units.astype(str).values.tolist(), "sampler": self.sampler,
                           "metrics": sorted(self.scorers)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @torch.no_grad()
    def sample(self, pipe) -> torch.Tensor:
        """The probe images (in the order of ``units``) of the pipeline's current weights, in [0, 1]: fixed prompts
        and noise, so successive probes show the same images as the policy moves (the runs' sample grids)."""
        from ..evaluation import generate_units

        return generate_units(pipe, self.units, self.sampler, batch_size=self.batch_size).float()

    @torch.no_grad()
    def score(self, images: torch.Tensor, device) -> dict[str, float]:
        """``{metric: mean over the probe images}`` of images from :meth:`sample`."""
        from ..rewards import scores_of

        prompts = self.units["prompt"].tolist()
        out = {}
        for name, scorer in self.scorers.items():
            vals = [scores_of(scorer, images[i: i + self.batch_size].to(device), prompts[i: i + self.batch_size])
                    .float().cpu() for i in range(0, len(images), self.batch_size)]
            out[name] = float(torch.cat(vals).double().mean())
        return out

    def __call__(self, pipe, device) -> dict[str, float]:
        """``{metric: mean over the probe images}`` of the pipeline's current weights."""
        return self.score(self.sample(pipe), device)

    def rows(self, values: dict[str, float], *, step: int, reward_queries: int, device_hours: float,
             wall_s: float) -> list[dict]:
        """The ``curve.csv`` rows (:data:`CURVE_COLUMNS`) of one probe."""
        return [{"step": step, "reward_queries": reward_queries, "device_hours": device_hours, "wall_s": wall_s,
                 "metric": name, "mean": value, "n_images": len(self.units)} for name, value in values.items()]
