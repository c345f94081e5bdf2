"""The project's vocabulary: methods, divergences, run ids, arms and the run grids of a config.

Every other place (the Snakemake rules, the stages, the trainer, the analysis) takes these words from here. A run id
is ``rocm-<divergence>-b<beta>-s<seed>`` (``rocm-none-b0-s<seed>`` is ROCM at beta = 0), ``<method>-s<seed>`` for a
baseline, or ``base``; its arm is the id without the seed. A beta has one text form, :func:`fmt_beta`, from the
config to the run id, the score table's arm and the labels. Torch-free and Snakemake-free.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import import_module

DIVERGENCES = ("kl", "js", "hellinger", "fisher")
"""The f-divergences ROCM regularises with (rocm_rlhf.divergences implements each), in the order of rows and panels."""

UNREGULARISED = "none"
"""The divergence of ROCM at beta = 0 and of every method without ROCM's regulariser."""

DIVERGENCE_LABELS = {UNREGULARISED: "none", "kl": "KL", "js": "JS", "hellinger": "Hellinger", "fisher": "Fisher"}

BASE = "base"
"""The run id, arm and method of the untrained LCM."""

SPLITS = ("val", "test")
"""The evaluation splits, sampled and scored alike: beta is chosen on val, the tables and figures report on test."""


@dataclass(frozen=True)
class Method:
    """One training method: its name in run ids and config, its label, the generator it fine-tunes ('lcm' or
    'diffusion': the LCM's consistency sampler or the teacher's DDIM sampler), its class and its config block."""

    name: str
    label: str
    generator: str
    class_path: str  # "module:Class", imported only when a run is trained
    config_block: str

    def load_class(self):
        module, _, cls = self.class_path.partition(":")
        return getattr(import_module(module), cls)


METHODS = {
    m.name: m
    for m in (
        Method("rocm", "ROCM", "lcm", "rocm_rlhf.training.rocm:ROCM", "rocm"),
        Method("rlcm", "RLCM", "lcm", "rocm_rlhf.training.rlcm:RLCM", "baselines.rlcm"),
        Method("ddpo", "DDPO", "diffusion", "rocm_rlhf.training.ddpo:DDPO", "baselines.ddpo"),
        Method("d3po", "D3PO", "diffusion", "rocm_rlhf.training.d3po:D3PO", "baselines.d3po"),
        Method("dpok", "DPOK", "diffusion", "rocm_rlhf.training.dpok:DPOK", "baselines.dpok"),
    )
}
"""The training methods, ROCM first, then the baselines in the paper's order."""

BASELINES = tuple(m for m in METHODS if m != "rocm")
ARM_METHODS = (BASE, *METHODS)
"""Every method an arm of the score table can have, in the row order of the tables."""
METHOD_LABELS = {BASE: "Base", **{m.name: m.label for m in METHODS.values()}}


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


def generator(method_name: str) -> str:
    """'lcm' or 'diffusion': which model a method (or the base arm, the LCM) trains and samples."""
    return "lcm" if method_name == BASE else method(method_name).generator


def fmt_beta(beta) -> str:
    """The one text form of a beta (Python's ``:g``): 10.0 -> '10', 0.01 -> '0.01', 1e-05 -> '1e-05'."""
    value = float(beta)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return f"{value:g}"


_NUMBER = r"[0-9][0-9.e+-]*"
ROCM_RUN_PATTERN = rf"rocm-({UNREGULARISED}|{'|'.join(DIVERGENCES)})-b{_NUMBER}-s\d+"
BASELINE_RUN_PATTERN = rf"({'|'.join(BASELINES)})-s\d+"
RUN_PATTERN = rf"{BASE}|{ROCM_RUN_PATTERN}|{BASELINE_RUN_PATTERN}"
"""Regular expressions of run ids (the training rules' wildcard constraints use the first two)."""


@dataclass(frozen=True)
class Run:
    """A parsed run id. ``beta`` is the canonical text (:func:`fmt_beta`), '' where a method has none."""

    method: str
    divergence: str = UNREGULARISED
    beta: str = ""
    seed: int = 0

    @property
    def id(self) -> str:
        if self.method == BASE:
            return BASE
        return f"{self.arm}-s{self.seed}"

    @property
    def arm(self) -> str:
        """The run id without its training seed: the unit the tables compare."""
        if self.method == "rocm":
            return f"rocm-{self.divergence}-b{self.beta}"
        return self.method

    @property
    def beta_value(self) -> float:
        """beta as a number (NaN for methods without one), for the score table's numeric column."""
        return float(self.beta) if self.beta else math.nan

    @property
    def generator(self) -> str:
        return generator(self.method)

    def identity(self) -> dict:
        """The arm attributes of the score table: arm, method, divergence, beta (float), seed."""
        return {"arm": self.arm, "method": self.method, "divergence": self.divergence, "beta": self.beta_value,
                "seed": self.seed}


def rocm_run(divergence: str, beta, seed: int) -> Run:
    """A ROCM run; beta = 0 is the unregularised run whatever the divergence given."""
    if divergence != UNREGULARISED and divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; known: {', '.join(DIVERGENCES)}")
    text = fmt_beta(beta)
    if float(text) == 0:
        return Run("rocm", UNREGULARISED, "0", int(seed))
    if divergence == UNREGULARISED:
        raise ValueError(f"ROCM without a divergence ('{UNREGULARISED}') has beta 0, got {beta!r}")
    return Run("rocm", divergence, text, int(seed))


def baseline_run(method_name: str, seed: int) -> Run:
    if method_name not in BASELINES:
        raise ValueError(f"unknown baseline {method_name!r}; known: {', '.join(BASELINES)}")
    return Run(method_name, seed=int(seed))


def parse_run(run_id: str) -> Run:
    """A run id -> :class:`Run`; anything that is not a run id raises ValueError naming the accepted forms."""
    if not re.fullmatch(RUN_PATTERN, run_id):
        raise ValueError(f"{run_id!r} is not a run id: expected '{BASE}', 'rocm-<divergence>-b<beta>-s<seed>' "
                         f"(divergence one of {UNREGULARISED}, {', '.join(DIVERGENCES)}) or '<method>-s<seed>' "
                         f"(method one of {', '.join(BASELINES)})")
    if run_id == BASE:
        return Run(BASE)
    rocm = re.fullmatch(rf"rocm-(?P<div>\w+)-b(?P<beta>{_NUMBER})-s(?P<seed>\d+)", run_id)
    if rocm:
        try:
            run = rocm_run(rocm["div"], rocm["beta"], int(rocm["seed"]))
        except ValueError as err:
            raise ValueError(f"{run_id!r} is not a valid run id: {err}") from None
        if run.id != run_id:
            raise ValueError(f"{run_id!r} is not a valid run id: it writes beta {rocm['beta']!r} in a non-canonical "
                             f"form; the run id is {run.id!r}")
        return run
    name, _, seed = run_id.rpartition("-s")
    return baseline_run(name, int(seed))


def parse_arm(arm: str) -> Run:
    """An arm id (a run id without its seed: 'base', 'rocm-kl-b10', 'rlcm') -> :class:`Run` with seed 0."""
    if arm == BASE:
        return Run(BASE)
    try:
        return parse_run(f"{arm}-s0")
    except ValueError:
        raise ValueError(f"{arm!r} is not an arm id: expected '{BASE}', 'rocm-<divergence>-b<beta>' or a baseline's "
                         f"name ({', '.join(BASELINES)})") from None


def is_unregularised(divergence: str, beta) -> bool:
    """Whether a ROCM arm's (divergence, beta) is ROCM at beta = 0 (divergence 'none' or beta 0)."""
    return divergence == UNREGULARISED or float(beta) == 0


def arm_label(method_name: str, divergence: str = UNREGULARISED, beta=math.nan) -> str:
    """A row label: 'Base', 'RLCM', 'ROCM (β=0)', 'ROCM-KL (β=10)'."""
    if method_name == "rocm":
        if is_unregularised(divergence, beta):
            return "ROCM (β=0)"
        return f"ROCM-{DIVERGENCE_LABELS[divergence]} (β={fmt_beta(beta)})"
    return METHOD_LABELS.get(method_name, str(method_name))


# ----------------------------------------------------------------------------------------------- the config's grid
def beta_grid(config: dict) -> dict[str, list[str]]:
    """The ROCM sweep's betas per configured divergence, in canonical text, in config order."""
    r = config["rocm"]
    return {div: [fmt_beta(b) for b in r["betas"][div]] for div in r["divergences"]}


def rocm_runs(config: dict) -> list[str]:
    """Run ids of the ROCM grid: per seed, beta = 0 (if rocm.unregularised), then divergence x beta."""
    r = config["rocm"]
    runs = []
    for seed in r["seeds"]:
        if r["unregularised"]:
            runs.append(rocm_run(UNREGULARISED, 0, seed).id)
        for div, betas in beta_grid(config).items():
            runs += [rocm_run(div, beta, seed).id for beta in betas]
    return runs


def baseline_runs(config: dict) -> list[str]:
    b = config["baselines"]
    return [baseline_run(m, seed).id for m in b["methods"] for seed in b["seeds"]]


def trained_runs(config: dict) -> list[str]:
    """Every training run of the config."""
    return rocm_runs(config) + baseline_runs(config)


def eval_runs(config: dict) -> list[str]:
    """Every run that is sampled and scored: the base model and every trained run."""
    return [BASE, *trained_runs(config)]


def control_arms(arms) -> list[str]:
    """The controls of the comparisons among ``arms``: the base model, then every baseline present (by name)."""
    return [BASE] + sorted(set(arms) & set(BASELINES))
