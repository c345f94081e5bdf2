"""The project's vocabulary: methods, divergences, run ids, arms and the run grids of a config.

Every other place (the Snakemake rules, the stages, the trainer, the analysis) takes these words from here. A run id
is ``rocm-<divergence>-b<beta>-s<seed>`` (``rocm-none-b0-s<seed>`` is ROCM at beta = 0), ``rocm-<divergence>-t<target>-s<seed>``
for ROCM with an adaptive beta that holds the divergence near ``target`` (``rocm.targets``),
``rocm_sf-<divergence>-b<beta>-s<seed>`` and ``rocm_hybrid-<divergence>-b<beta>-s<seed>`` for ROCM's score-function
variants for rewards without gradients (``score_function``), ``<method>-s<seed>`` for a
baseline at its configured learning rate or ``<method>-lr<lr>-s<seed>`` for a baseline whose learning rate is tuned
(``baselines.lr_factors``), or ``base``; its arm is the id without the seed. A beta has one text form, :func:`fmt_beta`, from the
config to the run id, the score table's arm and the labels. Torch-free and Snakemake-free.
"""

from __future__ import annotations

import csv
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

BASE_DIFFUSION = "base-ddim"
"""The run id, arm and method of the untrained diffusion model (the teacher in the sandbox) through the diffusion
baselines' DDIM sampler: where DDPO, D3PO and DPOK start, so that their gains are read against it."""

UNTRAINED = (BASE, BASE_DIFFUSION)
"""The arms without training (one run each, no training seed)."""

DIFFUSION_SAMPLER_OF = "ddpo"
"""The baseline whose DDIM sampler settings (``baselines.ddpo.sample_steps`` and ``guidance_scale``) sample the
base diffusion arm."""

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
    role: str = "baseline"  # "treatment" (ROCM and its variants: compared against the controls) or "baseline"

    def load_class(self):
        module, _, cls = self.class_path.partition(":")
        return getattr(import_module(module), cls)


METHODS = {
    m.name: m
    for m in (
        Method("rocm", "ROCM", "lcm", "rocm_rlhf.training.rocm:ROCM", "rocm", "treatment"),
        Method("rocm_sf", "ROCM-SF", "lcm", "rocm_rlhf.training.rocm_sf:ROCMScoreFunction", "score_function",
               "treatment"),
        Method("rocm_hybrid", "ROCM-hybrid", "lcm", "rocm_rlhf.training.rocm_sf:ROCMHybrid", "score_function",
               "treatment"),
        Method("rlcm", "RLCM", "lcm", "rocm_rlhf.training.rlcm:RLCM", "baselines.rlcm"),
        Method("ddpo", "DDPO", "diffusion", "rocm_rlhf.training.ddpo:DDPO", "baselines.ddpo"),
        Method("d3po", "D3PO", "diffusion", "rocm_rlhf.training.d3po:D3PO", "baselines.d3po"),
        Method("dpok", "DPOK", "diffusion", "rocm_rlhf.training.dpok:DPOK", "baselines.dpok"),
    )
}
"""The training methods: ROCM, its score-function variants for rewards without gradients (beyond the paper: pure,
and hybrid with a differentiable surrogate; :mod:`rocm_rlhf.training.rocm_sf`), then the baselines in the paper's
order."""

BASELINES = tuple(m.name for m in METHODS.values() if m.role == "baseline")
SCORE_FUNCTION_METHODS = tuple(m.name for m in METHODS.values() if m.config_block == "score_function")
"""ROCM's score-function variants (``score_function.methods``): ``rocm_sf`` weighs the reward's numbers alone,
``rocm_hybrid`` adds ROCM's pathwise gradient of ``train.surrogate``."""
REGULARISED_METHODS = ("rocm", *SCORE_FUNCTION_METHODS)
"""The methods whose runs carry a divergence and a beta in their id (ROCM's f-divergence regulariser)."""
ARM_METHODS = (BASE, BASE_DIFFUSION, *METHODS)
"""Every method an arm of the score table can have, in the row order of the tables."""
METHOD_LABELS = {BASE: "Base", BASE_DIFFUSION: "Base diffusion (DDIM)", **{m.name: m.label for m in METHODS.values()}}


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None


def generator(method_name: str) -> str:
    """'lcm' or 'diffusion': which model a method (or an untrained arm) trains and samples."""
    if method_name in UNTRAINED:
        return "lcm" if method_name == BASE else "diffusion"
    return method(method_name).generator


def fmt_beta(beta) -> str:
    """The one text form of a beta (Python's ``:g``): 10.0 -> '10', 0.01 -> '0.01', 1e-05 -> '1e-05'."""
    value = float(beta)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return f"{value:g}"


_NUMBER = r"[0-9][0-9.e+-]*"
ROCM_RUN_PATTERN = (rf"rocm-({UNREGULARISED}-b{_NUMBER}|({'|'.join(DIVERGENCES)})-[bt]{_NUMBER})-s\d+|"
                    rf"({'|'.join(SCORE_FUNCTION_METHODS)})-({UNREGULARISED}|{'|'.join(DIVERGENCES)})-b{_NUMBER}-s\d+")
BASELINE_RUN_PATTERN = rf"({'|'.join(BASELINES)})(-lr{_NUMBER})?-s\d+"
RUN_PATTERN = rf"{BASE}|{BASE_DIFFUSION}|{ROCM_RUN_PATTERN}|{BASELINE_RUN_PATTERN}"
"""Regular expressions of run ids (the training rules' wildcard constraints use the first two)."""


@dataclass(frozen=True)
class Run:
    """A parsed run id. ``beta`` is the canonical text (:func:`fmt_beta`), '' where a method has none or (ROCM with an
    adaptive beta) where ``target`` is set instead: the divergence the controller holds, in the same text form;
    ``lr`` a tuned baseline's learning rate in the same text form, '' where the run takes its method's configured
    one."""

    method: str
    divergence: str = UNREGULARISED
    beta: str = ""
    seed: int = 0
    lr: str = ""
    target: str = ""

    @property
    def id(self) -> str:
        if self.method in UNTRAINED:
            return self.method
        return f"{self.arm}-s{self.seed}"

    @property
    def arm(self) -> str:
        """The run id without its training seed: the unit the tables compare."""
        if self.method in REGULARISED_METHODS:
            return (f"{self.method}-{self.divergence}-t{self.target}" if self.target else
                    f"{self.method}-{self.divergence}-b{self.beta}")
        return f"{self.method}-lr{self.lr}" if self.lr else self.method

    @property
    def beta_value(self) -> float:
        """beta as a number (NaN for methods without one and for an adaptive beta), for the score table's numeric
        column."""
        return float(self.beta) if self.beta else math.nan

    @property
    def adaptive(self) -> bool:
        """Whether the run is ROCM with an adaptive beta (its ``target`` set)."""
        return bool(self.target)

    @property
    def generator(self) -> str:
        return generator(self.method)

    def identity(self) -> dict:
        """The arm attributes of the score table: arm, method, divergence, beta (float), seed."""
        return {"arm": self.arm, "method": self.method, "divergence": self.divergence, "beta": self.beta_value,
                "seed": self.seed}


def rocm_run(divergence: str, beta, seed: int, method: str = "rocm") -> Run:
    """A run of ROCM (or, ``method``, of one of its score-function variants :data:`SCORE_FUNCTION_METHODS`); beta = 0
    is the unregularised run whatever the divergence given."""
    if method not in REGULARISED_METHODS:
        raise ValueError(f"{method!r} has no divergence and beta; those are ROCM's: {', '.join(REGULARISED_METHODS)}")
    if divergence != UNREGULARISED and divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; known: {', '.join(DIVERGENCES)}")
    text = fmt_beta(beta)
    if float(text) == 0:
        return Run(method, UNREGULARISED, "0", int(seed))
    if divergence == UNREGULARISED:
        raise ValueError(f"ROCM without a divergence ('{UNREGULARISED}') has beta 0, got {beta!r}")
    return Run(method, divergence, text, int(seed))


def adaptive_run(divergence: str, target, seed: int) -> Run:
    """A ROCM run with an adaptive beta holding the per-sample divergence near ``target``
    (:mod:`rocm_rlhf.training.adaptive_beta`)."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"an adaptive beta needs a divergence, one of {', '.join(DIVERGENCES)}; got {divergence!r}")
    value = float(target)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"an adaptive beta's target must be a finite number > 0, got {target!r}")
    return Run("rocm", divergence, "", int(seed), target=f"{value:g}")


def fmt_lr(lr) -> str:
    """The one text form of a learning rate in run ids and labels (Python's ``:g``, as :func:`fmt_beta`)."""
    value = float(lr)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a learning rate must be a finite number > 0, got {lr!r}")
    return f"{value:g}"


def baseline_run(method_name: str, seed: int, lr="") -> Run:
    """A baseline run; ``lr`` (a tuned learning rate) or '' (the method's configured one)."""
    if method_name not in BASELINES:
        raise ValueError(f"unknown baseline {method_name!r}; known: {', '.join(BASELINES)}")
    return Run(method_name, seed=int(seed), lr=fmt_lr(lr) if lr != "" else "")


def parse_run(run_id: str) -> Run:
    """A run id -> :class:`Run`; anything that is not a run id raises ValueError naming the accepted forms."""
    if not re.fullmatch(RUN_PATTERN, run_id):
        raise ValueError(f"{run_id!r} is not a run id: expected '{BASE}', '{BASE_DIFFUSION}', 'rocm-<divergence>-b<beta>-s<seed>' "
                         f"(divergence one of {UNREGULARISED}, {', '.join(DIVERGENCES)}), "
                         f"'rocm-<divergence>-t<target>-s<seed>' (an adaptive beta), "
                         f"'<{'|'.join(SCORE_FUNCTION_METHODS)}>-<divergence>-b<beta>-s<seed>' or '<method>-s<seed>' "
                         f"(method one of {', '.join(BASELINES)})")
    if run_id in UNTRAINED:
        return Run(run_id)
    methods = "|".join(REGULARISED_METHODS)
    rocm = re.fullmatch(rf"(?P<method>{methods})-(?P<div>[a-z]+)-(?P<kind>[bt])(?P<value>{_NUMBER})-s(?P<seed>\d+)",
                        run_id)
    if rocm:
        what = "beta" if rocm["kind"] == "b" else "target"
        try:
            if rocm["kind"] == "b":
                run = rocm_run(rocm["div"], rocm["value"], int(rocm["seed"]), rocm["method"])
            else:
                run = adaptive_run(rocm["div"], rocm["value"], int(rocm["seed"]))
        except ValueError as err:
            raise ValueError(f"{run_id!r} is not a valid run id: {err}") from None
        if run.id != run_id:
            raise ValueError(f"{run_id!r} is not a valid run id: it writes the {what} {rocm['value']!r} in a "
                             f"non-canonical form; the run id is {run.id!r}")
        return run
    name, _, seed = run_id.rpartition("-s")
    name, _, lr = name.partition("-lr")
    run = baseline_run(name, int(seed), lr)
    if run.id != run_id:
        raise ValueError(f"{run_id!r} is not a valid run id: it writes the learning rate {lr!r} in a non-canonical "
                         f"form; the run id is {run.id!r}")
    return run


def parse_arm(arm: str) -> Run:
    """An arm id (a run id without its seed: 'base', 'rocm-kl-b10', 'rlcm') -> :class:`Run` with seed 0."""
    if arm in UNTRAINED:
        return Run(arm)
    try:
        return parse_run(f"{arm}-s0")
    except ValueError:
        raise ValueError(f"{arm!r} is not an arm id: expected '{BASE}', '{BASE_DIFFUSION}', 'rocm-<divergence>-b<beta>', "
                         f"'rocm-<divergence>-t<target>', '<{'|'.join(SCORE_FUNCTION_METHODS)}>-<divergence>-b<beta>' "
                         f"or a baseline's name ({', '.join(BASELINES)}), optionally "
                         "with '-lr<learning rate>'") from None


def arm_or_none(arm) -> Run | None:
    """:func:`parse_arm` of ``arm``, or None where it is not an arm id (hand-made score tables may name arms freely)."""
    try:
        return parse_arm(str(arm))
    except ValueError:
        return None


def is_unregularised(divergence: str, beta) -> bool:
    """Whether a ROCM arm's (divergence, beta) is ROCM at beta = 0 (divergence 'none' or beta 0)."""
    return divergence == UNREGULARISED or float(beta) == 0


def arm_label(method_name: str, divergence: str = UNREGULARISED, beta=math.nan, lr: str = "", target: str = "") -> str:
    """A row label: 'Base', 'RLCM', 'DDPO (lr=0.0003)' (a tuned baseline), 'ROCM (β=0)', 'ROCM-KL (β=10)',
    'ROCM-KL (adaptive β, target 0.01)', 'ROCM-SF-KL (β=10)', 'ROCM-hybrid (β=0)'."""
    if method_name in REGULARISED_METHODS:
        name = METHOD_LABELS[method_name]
        if target:
            return f"{name}-{DIVERGENCE_LABELS[divergence]} (adaptive β, target {target})"
        if is_unregularised(divergence, beta):
            return f"{name} (β=0)"
        return f"{name}-{DIVERGENCE_LABELS[divergence]} (β={fmt_beta(beta)})"
    label = METHOD_LABELS.get(method_name, str(method_name))
    return f"{label} (lr={fmt_lr(lr)})" if lr else label


# ----------------------------------------------------------------------------------------------- the config's grid
def beta_grid(config: dict) -> dict[str, list[str]]:
    """The ROCM sweep's betas per configured divergence, in canonical text, in config order."""
    r = config["rocm"]
    return {div: [fmt_beta(b) for b in r["betas"][div]] for div in r["divergences"]}


def extra_seeds(config: dict, seeds) -> list[int]:
    """The confirmatory stage's seeds ``confirm.seeds`` that a grid's own ``seeds`` do not already hold."""
    own = {int(s) for s in seeds}
    return [int(s) for s in config.get("confirm", {}).get("seeds", []) if int(s) not in own]


def confirm_seeds(config: dict, seeds) -> list[int]:
    """The training seeds of a Table 1 arm: ``seeds`` (a grid's own), then :func:`extra_seeds`."""
    return [int(s) for s in seeds] + extra_seeds(config, seeds)


def rocm_runs(config: dict) -> list[str]:
    """Run ids of the ROCM grid known before any result: per seed of ``rocm.seeds``, beta = 0 (if
    rocm.unregularised), then divergence x beta (the sweep); then beta = 0 at the confirmatory seeds. The chosen
    betas' confirmatory runs depend on the validation scores: :func:`confirm_runs`."""
    r = config["rocm"]
    runs = []
    for seed in r["seeds"]:
        if r["unregularised"]:
            runs.append(rocm_run(UNREGULARISED, 0, seed).id)
        for div, betas in beta_grid(config).items():
            runs += [rocm_run(div, beta, seed).id for beta in betas]
    if r["unregularised"]:
        runs += [rocm_run(UNREGULARISED, 0, s).id for s in extra_seeds(config, r["seeds"])]
    return runs


def target_grid(config: dict) -> dict[str, list[str]]:
    """The adaptive beta's targets per divergence (``rocm.targets``, canonical text, config order), for the
    divergences of ``rocm.divergences`` that have targets; {} when none is configured."""
    r = config["rocm"]
    targets = r.get("targets") or {}
    return {div: [adaptive_run(div, t, 0).target for t in targets[div]] for div in r["divergences"] if targets.get(div)}


def adaptive_runs(config: dict) -> list[str]:
    """The adaptive beta's sweep: divergence x target x ``rocm.seeds``, chosen from on the validation prompts like
    beta (:func:`confirm_runs` adds the chosen targets' confirmatory seeds)."""
    return [adaptive_run(div, t, seed).id for seed in config["rocm"]["seeds"]
            for div, targets in target_grid(config).items() for t in targets]


def score_function_betas(config: dict) -> list[str]:
    """The betas of ROCM's score-function variants (``score_function.betas``, canonical text, config order); [] when
    ``score_function.methods`` is empty."""
    sf = config.get("score_function") or {}
    return [fmt_beta(b) for b in sf.get("betas", [])] if sf.get("methods") else []


def score_function_run(config: dict, method: str, beta, seed: int) -> Run:
    """A run of a score-function variant (``method``) at ``beta``, regularised with ``score_function.divergence``."""
    return rocm_run((config.get("score_function") or {}).get("divergence", "kl"), beta, seed, method)


def score_function_runs(config: dict) -> list[str]:
    """The sweep of ROCM's score-function variants: ``score_function.methods`` x ``score_function.betas`` (of the
    divergence ``score_function.divergence``) x ``rocm.seeds``, chosen from on the validation prompts like beta
    (:func:`confirm_runs` adds the chosen betas' confirmatory seeds)."""
    methods = (config.get("score_function") or {}).get("methods", [])
    return [score_function_run(config, m, beta, seed).id for seed in config["rocm"]["seeds"]
            for m in methods for beta in score_function_betas(config)]


def sweep_runs(config: dict) -> list[str]:
    """The regularised ROCM runs of the sweep (divergence x beta x rocm.seeds): what beta is chosen from."""
    return [run for run in rocm_runs(config) if parse_run(run).divergence != UNREGULARISED]


def confirm_runs(config: dict, chosen_betas, chosen_targets=None, chosen_sf=None) -> list[str]:
    """The confirmatory runs of each divergence's chosen beta (``{divergence: beta}``, chosen on the validation
    prompts), with ``chosen_targets`` (``{divergence: target}``) of its chosen adaptive-beta target, and with
    ``chosen_sf`` (``{score-function method: beta}``) of each score-function variant's chosen beta: one per
    ``confirm.seeds`` seed not already in the sweep's ``rocm.seeds``."""
    seeds = extra_seeds(config, config["rocm"]["seeds"])
    return ([rocm_run(d, beta, s).id for d, beta in chosen_betas.items() for s in seeds]
            + [adaptive_run(d, t, s).id for d, t in (chosen_targets or {}).items() for s in seeds]
            + [score_function_run(config, m, beta, s).id for m, beta in (chosen_sf or {}).items() for s in seeds])


def lr_grid(config: dict) -> dict[str, list[str]]:
    """The learning rates each configured baseline is tuned over (``baselines.lr_factors`` times its configured
    ``baselines.<method>.lr``, canonical text, in factor order); {} when the factors are [1] (no tuning: the baselines
    run at their configured learning rate and their run ids carry none)."""
    b = config["baselines"]
    factors = [float(f) for f in b.get("lr_factors", [1.0])]
    if factors == [1.0]:
        return {}
    return {m: [fmt_lr(f * float(b[m]["lr"])) for f in factors] for m in b["methods"]}


def tuning_runs(config: dict) -> list[str]:
    """The baselines' tuning runs: every learning rate of :func:`lr_grid` at ``baselines.seeds``, chosen from on the
    validation prompts like ROCM's beta; [] without tuning."""
    return [baseline_run(m, seed, lr).id for m, lrs in lr_grid(config).items()
            for seed in config["baselines"]["seeds"] for lr in lrs]


def baseline_runs(config: dict, chosen_lrs=None) -> list[str]:
    """Every baseline run. Without tuning: each method at ``baselines.seeds`` and the confirmatory ``confirm.seeds``.
    With tuning (:func:`lr_grid`): the tuning runs, and with ``chosen_lrs`` (``{method: lr}``, chosen on the
    validation prompts) the chosen learning rate's confirmatory runs."""
    b = config["baselines"]
    if not lr_grid(config):
        return [baseline_run(m, seed).id for m in b["methods"] for seed in confirm_seeds(config, b["seeds"])]
    seeds = extra_seeds(config, b["seeds"])
    return tuning_runs(config) + [baseline_run(m, s, lr).id for m, lr in (chosen_lrs or {}).items() for s in seeds]


def trained_runs(config: dict, chosen_betas=None, chosen_lrs=None, chosen_targets=None, chosen_sf=None) -> list[str]:
    """Every training run of the config; with ``chosen_betas`` also the chosen betas' confirmatory runs, with
    ``chosen_targets`` the chosen adaptive-beta targets', with ``chosen_sf`` the score-function variants' chosen
    betas', with ``chosen_lrs`` the tuned baselines' (:func:`baseline_runs`)."""
    return (rocm_runs(config) + adaptive_runs(config) + score_function_runs(config)
            + confirm_runs(config, chosen_betas or {}, chosen_targets, chosen_sf) + baseline_runs(config, chosen_lrs))


def untrained_runs(config: dict) -> list[str]:
    """The base LCM, and the base diffusion model when a diffusion baseline is configured."""
    diffusion = any(generator(m) == "diffusion" for m in config["baselines"]["methods"])
    return [BASE, BASE_DIFFUSION] if diffusion else [BASE]


def eval_runs(config: dict, chosen_betas=None, chosen_lrs=None, chosen_targets=None, chosen_sf=None) -> list[str]:
    """Every run that is sampled and scored: the untrained arms and every trained run."""
    return [*untrained_runs(config), *trained_runs(config, chosen_betas, chosen_lrs, chosen_targets, chosen_sf)]


def reported_runs(config: dict, chosen_betas=None, chosen_lrs=None, chosen_targets=None, chosen_sf=None) -> list[str]:
    """The runs the test tables, statistics and figures report: :func:`eval_runs` without the tuning runs of learning
    rates, the adaptive-beta targets and the score-function variants' betas that were not chosen (those are seen on
    the validation prompts only, as the choice's candidates)."""
    chosen = {baseline_run(m, 0, lr).arm for m, lr in (chosen_lrs or {}).items()}
    chosen |= {adaptive_run(d, t, 0).arm for d, t in (chosen_targets or {}).items()}
    chosen |= {score_function_run(config, m, beta, 0).arm for m, beta in (chosen_sf or {}).items()}
    candidates = tuning_runs(config) + adaptive_runs(config) + score_function_runs(config)
    dropped = {r for r in candidates if parse_run(r).arm not in chosen}
    return [r for r in eval_runs(config, chosen_betas, chosen_lrs, chosen_targets, chosen_sf) if r not in dropped]


CHOSEN_COLUMNS = ("method", "divergence", "beta", "lr", "target", "arm")
"""The leading columns of the choice file (results/stats/chosen.csv): one row per divergence (method rocm, its chosen
beta, lr and target empty), then one per divergence with adaptive-beta targets (its chosen target, beta and lr empty),
then one per score-function variant (method rocm_sf or rocm_hybrid, its chosen beta), then one per tuned baseline
(its chosen learning rate, beta and target empty)."""


def _read_chosen_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = [{"target": "", **row} for row in csv.DictReader(fh, restval="")]  # target: files from before it
    if rows and not set(CHOSEN_COLUMNS) <= set(rows[0]):
        raise ValueError(f"{path} is not a choice file: it needs the columns {', '.join(CHOSEN_COLUMNS)}; "
                         "delete it and rerun the choose_settings rule")
    return rows


def read_chosen(path) -> dict[str, str]:
    """``{divergence: beta text}`` of a choice file (:data:`CHOSEN_COLUMNS`, written by the choose_settings stage),
    in its row order; an error naming the file if a column is missing or a beta is not a number >= 0."""
    return {row["divergence"]: fmt_beta(row["beta"]) for row in _read_chosen_rows(path)
            if row["method"] == "rocm" and not row["target"]}


def read_chosen_targets(path) -> dict[str, str]:
    """``{divergence: target text}`` of a choice file: the adaptive beta's chosen target per divergence ({} when no
    targets were swept)."""
    return {row["divergence"]: adaptive_run(row["divergence"], row["target"], 0).target
            for row in _read_chosen_rows(path) if row["method"] == "rocm" and row["target"]}


def read_chosen_sf(path) -> dict[str, str]:
    """``{score-function method: beta text}`` of a choice file: the chosen beta of each of ROCM's score-function
    variants ({} when none was run)."""
    return {row["method"]: fmt_beta(row["beta"]) for row in _read_chosen_rows(path)
            if row["method"] in SCORE_FUNCTION_METHODS}


def read_chosen_lrs(path) -> dict[str, str]:
    """``{baseline: learning rate text}`` of a choice file: the tuned baselines' chosen learning rates ({} when the
    baselines were not tuned)."""
    return {row["method"]: fmt_lr(row["lr"]) for row in _read_chosen_rows(path) if row["method"] in BASELINES}


def control_arms(arms) -> list[str]:
    """The controls of the comparisons among ``arms``: the base model, then every baseline arm present (by its
    method: a tuned baseline's arm carries its learning rate)."""
    return [BASE] + sorted(a for a in set(arms) if getattr(arm_or_none(a), "method", "") in BASELINES)
