# Helpers of the workflow: config validation, grid expansion, run ids, input functions. They live here only.
import re
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(workflow.basedir) / "src")
)  # the package, also when it is not installed

from rocm_rlhf import pipeline, runs  # noqa: E402
from rocm_rlhf.infra import scorer_catalogue  # noqa: E402
from rocm_rlhf.infra.config import config_digest, validate_config  # noqa: E402
from rocm_rlhf.infra.jobs import stage_reads  # noqa: E402

# Validate before any job is scheduled; fills in every default of the schema.
validate_config(
    config, str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
)


def stage_digest(stage):
    """The rerun digest of the config keys a rule's stage declares (@stage(reads=...) in rocm_rlhf.pipeline;
    rocm_rlhf.infra.config.config_digest), as a rule's params: Snakemake's params trigger reruns the rule's jobs, and
    what depends on them, when one of the values changes. The stage is handed only those keys, so the two cannot
    drift apart."""
    if callable(stage.reads):
        return lambda wildcards: config_digest(config, *stage_reads(stage, wildcards))
    return config_digest(config, *stage_reads(stage))


SANDBOX = config["setting"] == "sandbox"
SBX = "results/models/sandbox"
TINY_HUB = "results/tiny_hub"  # tiny stand-ins of the hub models, built by the tiny_hub rule (paper-tiny.yaml)
PROXIES = ["proxy_pick", "proxy_aesthetic"]
SPLITS = list(runs.SPLITS)
PROMPT_FILES = {
    "train": "results/prompts/train.csv",
    "val": "results/prompts/val.csv",
    "test": "results/prompts/eval.csv",
}
SCORE_TABLES = {"test": "results/scores/all.csv", "val": "results/scores/val.csv"}
"""Each split's score table of all runs, written by collect_scores; all.csv keeps its name and holds the test scores."""
FIGURES = [
    "fig_beta_sweep",
    "fig_efficiency",
    "fig_training_curves",
    "fig_divergence_gallery",
]


def generator(run):
    """Which generator a run trains or samples: 'lcm' or 'diffusion' (rocm_rlhf.runs.METHODS)."""
    return runs.parse_run(run).generator


def generator_input(wildcards):
    """The sandbox generator folder of a run (the LCM, or the teacher for diffusion baselines); none on the hub."""
    return sandbox_input(
        "teacher" if generator(wildcards.run) == "diffusion" else "lcm"
    )


def model_id_param(wildcards, input):
    """The generator a job loads: its sandbox input folder, or the configured hub id (not a file Snakemake tracks)."""
    if SANDBOX:
        return input.model
    return config["model"][generator(wildcards.run)]


def sandbox_input(name):
    """A sandbox model folder a rule needs (nothing in the hub setting, where models come from the hub cache)."""
    return f"{SBX}/{name}" if SANDBOX else []


CHOSEN = "results/stats/chosen.csv"
"""Beta per divergence, chosen on the validation prompts of the sweep (checkpoint choose_beta)."""


def confirms_chosen_betas():
    """Whether the confirmatory stage trains more seeds of the chosen betas (confirm.seeds beyond rocm.seeds)."""
    return bool(runs.extra_seeds(config, config["rocm"]["seeds"]))


def chosen_betas():
    """{divergence: beta} of the choose_beta checkpoint when the confirmatory stage needs it (the jobs after it are
    planned once it has run), else {}. Call only from input functions."""
    if not confirms_chosen_betas():
        return {}
    return runs.read_chosen(checkpoints.choose_beta.get().output[0])


def all_runs():
    """Every trained run of the config, the chosen betas' confirmatory runs included (input functions only)."""
    return runs.trained_runs(config, chosen_betas())


def eval_runs():
    """Every run that is sampled and scored: the untrained arms and all trained runs (input functions only)."""
    return runs.eval_runs(config, chosen_betas())


def run_files(pattern):
    """An input function: ``pattern`` ('...{run}...') for every run that is sampled and scored."""
    return lambda wildcards: expand(pattern, run=eval_runs())


def curve_files(wildcards):
    """An input function: the held-out probe curve of every trained run."""
    return expand("results/runs/{run}/curve.csv", run=all_runs())


def log_files(wildcards):
    """An input function: the training log of every trained run."""
    return expand("results/runs/{run}/log.csv", run=all_runs())


def tiny_hub_input():
    """The folder the tiny_hub rule builds, when the config names a model, a scorer's file or the prompts inside it
    (config/paper-tiny.yaml), so that it is built first; nothing otherwise."""
    named = [config["model"]["lcm"], config["model"]["diffusion"]]
    named += [config["prompts"]["pickapic"]["dataset"]]
    named += [v for kwargs in config["rewards"].values() for v in kwargs.values()]
    inside = any(str(v).startswith(f"{TINY_HUB}/") for v in named)
    return TINY_HUB if inside else []


def sample_eval_inputs(wildcards):
    inputs = {f"prompts_{s}": PROMPT_FILES[s] for s in SPLITS}
    inputs["tiny_hub"] = tiny_hub_input()
    if SANDBOX:
        inputs["model"] = generator_input(wildcards)
    if wildcards.run not in runs.UNTRAINED:
        inputs["adapter"] = f"results/runs/{wildcards.run}/adapter"
    return inputs


def split_scores(wildcards):
    """The per-run score files of the split whose table collect_scores writes: all.csv the test split, val.csv val."""
    table = f"results/scores/{wildcards.table}.csv"
    split = next(s for s, path in SCORE_TABLES.items() if path == table)
    return expand("results/scores/{split}/{run}.csv", split=split, run=eval_runs())


def all_targets():
    """Rule all's inputs known before any result (:func:`confirm_targets` adds the chosen betas' runs)."""
    targets = list(PROMPT_FILES.values())
    if SANDBOX:
        targets.append(f"{SBX}/quality.json")
    targets += expand(
        "results/scores/{split}/{run}.csv", split=SPLITS, run=runs.eval_runs(config)
    )
    targets += list(SCORE_TABLES.values())
    targets += [
        CHOSEN,
        "results/stats/comparisons.csv",
        "results/stats/seed_summary.csv",
    ]
    tables = ["table1", "table_divergence_beta"]
    if config["train"]["probe"]["prompts"]:
        tables.append("table_efficiency")
    targets += [f"paper_figures/{t}.md" for t in tables]
    probed = bool(
        config["train"]["probe"]["prompts"]
    )  # fig_efficiency plots the probe's curves
    targets += [
        f"paper_figures/{f}.png" for f in FIGURES if probed or f != "fig_efficiency"
    ]
    targets += [f"paper_figures/data/{name}" for name in published()]
    return targets


def confirm_targets(wildcards):
    """Rule all's inputs known once choose_beta has run: the scores of the chosen betas' confirmatory runs."""
    return expand(
        "results/scores/{split}/{run}.csv",
        split=SPLITS,
        run=runs.confirm_runs(config, chosen_betas()),
    )


def published():
    """The small result files committed next to the figures, so that a reader can check every number:
    paper_figures/data/<name> <- the pipeline's file."""
    files = {
        "scores_test.csv": SCORE_TABLES["test"],
        "scores_val.csv": SCORE_TABLES["val"],
        "comparisons.csv": "results/stats/comparisons.csv",
        "seed_summary.csv": "results/stats/seed_summary.csv",
        "chosen.csv": CHOSEN,
    }
    if config["train"]["probe"]["prompts"]:
        files["curves.csv"] = "results/stats/curves.csv"
    if SANDBOX:
        files["sandbox_quality.json"] = f"{SBX}/quality.json"
    return files


def probe_reward_inputs():
    """The sandbox proxy folders of the held-out probe's metrics (the primary endpoint and the training reward)."""
    if not config["train"]["probe"]["prompts"]:
        return []
    return [
        reward_input(m)
        for m in pipeline.common.figure_metrics(config)
        if reward_input(m)
    ]


def reward_input(name):
    """The sandbox proxy folder a reward needs (nothing for hub rewards)."""
    return f"{SBX}/rewards/{name}" if SANDBOX and name in PROXIES else []


def training_reward_inputs():
    """The sandbox proxy folders of train.reward: one scorer, or each term of a weighted sum."""
    terms = scorer_catalogue.reward_terms(config["train"]["reward"])
    return [reward_input(name) for name in terms if reward_input(name)]
