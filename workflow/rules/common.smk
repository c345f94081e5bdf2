# Helpers of the workflow: config validation, grid expansion, run ids, input functions. They live here only.
import os
import re
import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(workflow.basedir) / "src")
)  # the package, also when it is not installed

from rocm_rlhf import pipeline, runs  # noqa: E402
from rocm_rlhf.study import design as study_design  # noqa: E402
from rocm_rlhf.infra import scorer_catalogue  # noqa: E402
from rocm_rlhf.infra.config import (  # noqa: E402
    check_output_name,
    config_digest,
    output_dirs,
    validate_config,
)
from rocm_rlhf.infra.devices import threads_per_gpu_process  # noqa: E402
from rocm_rlhf.infra.jobs import stage_reads  # noqa: E402
from rocm_rlhf.infra import forkserver  # noqa: E402
from rocm_rlhf.infra.envlock import check_conda_envs, conda_env_files  # noqa: E402
from snakemake_interface_executor_plugins.settings import DeploymentMethod  # noqa: E402

# Validate before any job is scheduled; fills in every default of the schema.
validate_config(
    config, str(Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
)
# A config other than the default one needs a name: its outputs go to results/<name>/, paper_figures/<name>/ and
# logs/<name>/, never over the committed figures (rocm_rlhf.infra.config.output_dirs; config/README.md, 'name').
check_output_name(config, Path(workflow.basedir) / "config" / "config.yaml")
# The rules' conda environments under --sdm conda (config key conda_envs; envs/README.md): the locks pin every
# package pip installs (PyPI wheels for Linux x86_64), the range files let conda solve afresh.
CONDA_ENVS = conda_env_files(config["conda_envs"], prefix="../../")
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    check_conda_envs(config["conda_envs"])
OUT = output_dirs(config)
RES = OUT["results"]  # every pipeline output but the figures
FIG = OUT["figures"]  # the tables and figures (paper_figures/ for the default config)
LOG = OUT["logs"]  # the jobs' logs


def stage_digest(stage):
    """The rerun digest of the config keys a rule's stage declares (@stage(reads=...) in rocm_rlhf.pipeline;
    rocm_rlhf.infra.config.config_digest), as a rule's params: Snakemake's params trigger reruns the rule's jobs, and
    what depends on them, when one of the values changes. The stage is handed only those keys, so the two cannot
    drift apart."""
    if callable(stage.reads):
        return lambda wildcards: config_digest(config, *stage_reads(stage, wildcards))
    return config_digest(config, *stage_reads(stage))


SANDBOX = config["setting"] == "sandbox"
SBX = f"{RES}/models/sandbox"
TINY_HUB = "results/tiny_hub"  # tiny stand-ins of the hub models, built by the tiny_hub rule (paper-tiny.yaml)
PROXIES = ["proxy_pick", "proxy_aesthetic"]
SPLITS = list(runs.SPLITS)
PROMPT_FILES = {
    "train": f"{RES}/prompts/train.csv",
    "val": f"{RES}/prompts/val.csv",
    "test": f"{RES}/prompts/eval.csv",
}
SCORE_TABLES = {"test": f"{RES}/scores/all.csv", "val": f"{RES}/scores/val.csv"}
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


CHOSEN = f"{RES}/stats/chosen.csv"
"""Beta per divergence and the tuned baselines' learning rates, chosen on the validation prompts of the sweep and the
tuning runs (checkpoint choose_settings)."""


def confirms_chosen_betas():
    """Whether the confirmatory stage trains more seeds of the chosen betas (confirm.seeds beyond rocm.seeds)."""
    return bool(runs.extra_seeds(config, config["rocm"]["seeds"]))


def chosen_betas():
    """{divergence: beta} of the choose_settings checkpoint when the confirmatory stage needs it (the jobs after it
    are planned once it has run), else {}. Call only from input functions."""
    if not confirms_chosen_betas():
        return {}
    return runs.read_chosen(checkpoints.choose_settings.get().output[0])


def chosen_lrs():
    """{baseline: learning rate} of the choose_settings checkpoint when the baselines are tuned
    (baselines.lr_factors), else {}: their confirmatory runs, and which tuning runs the test tables report, are known
    once it has run. Call only from input functions."""
    if not runs.lr_grid(config):
        return {}
    return runs.read_chosen_lrs(checkpoints.choose_settings.get().output[0])


def chosen_targets():
    """{divergence: target} of the choose_settings checkpoint when adaptive-beta targets are swept (rocm.targets),
    else {}: their confirmatory runs, and which targets the test tables report, are known once it has run. Call only
    from input functions."""
    if not runs.target_grid(config):
        return {}
    return runs.read_chosen_targets(checkpoints.choose_settings.get().output[0])


def chosen_sf():
    """{score-function method: beta} of the choose_settings checkpoint when ROCM's score-function variants are swept
    (score_function.methods), else {}: their confirmatory runs, and which betas the test tables report, are known once
    it has run. Call only from input functions."""
    if not runs.score_function_runs(config):
        return {}
    return runs.read_chosen_sf(checkpoints.choose_settings.get().output[0])


def chosen():
    """The choose_settings checkpoint's choices as keyword arguments of rocm_rlhf.runs' run lists."""
    return dict(
        chosen_betas=chosen_betas(),
        chosen_lrs=chosen_lrs(),
        chosen_targets=chosen_targets(),
        chosen_sf=chosen_sf(),
    )


def all_runs():
    """Every trained run of the config, the chosen settings' confirmatory runs included (input functions only)."""
    return runs.trained_runs(config, **chosen())


def eval_runs():
    """Every run that is sampled and scored: the untrained arms and all trained runs (input functions only)."""
    return runs.eval_runs(config, **chosen())


def reported_runs():
    """The runs the test tables, statistics and figures report: every sampled run but the tuning runs of learning
    rates and the adaptive-beta targets not chosen (input functions only)."""
    return runs.reported_runs(config, **chosen())


def run_files(pattern):
    """An input function: ``pattern`` ('...{run}...') for every run the test tables and figures report."""
    return lambda wildcards: expand(pattern, run=reported_runs())


def curve_files(wildcards):
    """An input function: the held-out probe curve of every reported trained run."""
    return expand(f"{RES}/runs/{{run}}/curve.csv", run=reported_trained_runs())


def log_files(wildcards):
    """An input function: the training log of every reported trained run."""
    return expand(f"{RES}/runs/{{run}}/log.csv", run=reported_trained_runs())


def rocm_log_files(wildcards):
    """An input function: the training log of every ROCM run trained, fixed or adaptive beta, chosen or not (the
    adaptive beta's table and figure)."""
    return expand(
        f"{RES}/runs/{{run}}/log.csv",
        run=[r for r in all_runs() if runs.parse_run(r).method == "rocm"],
    )


def reported_trained_runs():
    return [r for r in reported_runs() if r not in runs.UNTRAINED]


def tiny_hub_input():
    """The folder the tiny_hub rule builds, when the config names a model, a scorer's file or the prompts inside it
    (config/paper-tiny.yaml), so that it is built first; nothing otherwise."""
    named = [config["model"]["lcm"], config["model"]["diffusion"]]
    named += [config["prompts"]["pickapic"]["dataset"]]
    named += [v for kwargs in config["rewards"].values() for v in kwargs.values()]
    inside = any(str(v).startswith(f"{TINY_HUB}/") for v in named)
    return TINY_HUB if inside else []


def staged_input():
    """Hub setting: the staging record (rule stage_models), so that every job that loads a hub model or dataset runs
    after it and `all` stages first; ancient: re-staging reruns nothing that is done."""
    return ancient(f"{RES}/staged.json") if not SANDBOX else []


def device_input():
    """Hub setting: the device preflight (rule check_device), so that a config asking for CUDA fails before any GPU
    job where the jobs' torch cannot give it; ancient: it is checked once per results folder (each job checks its own
    device again when it starts)."""
    return ancient(f"{RES}/device.json") if not SANDBOX else []


def gpu_job_threads(processes=1):
    """The threads of a GPU job: train.threads per process ('auto': --cores shared by the GPUs --resources gpu lets
    run at once, rocm_rlhf.infra.devices.threads_per_gpu_process) x its processes. Without --cores (--report, a
    cluster profile, whose set-threads decides) 'auto' counts one core."""
    threads = config["train"]["threads"]
    if threads == "auto":
        gpus = workflow.global_resources.get("gpu")
        threads = threads_per_gpu_process(
            threads, workflow.resource_settings.cores or 1, getattr(gpus, "value", gpus)
        )
    return threads * processes


def sample_eval_inputs(wildcards):
    inputs = {f"prompts_{s}": PROMPT_FILES[s] for s in SPLITS}
    inputs["tiny_hub"] = tiny_hub_input()
    inputs["staged"] = staged_input()
    inputs["device"] = device_input()
    if SANDBOX:
        inputs["model"] = generator_input(wildcards)
    if wildcards.run not in runs.UNTRAINED:
        inputs["adapter"] = f"{RES}/runs/{wildcards.run}/adapter"
    return inputs


def split_scores(wildcards):
    """The per-run score files of the split whose table collect_scores writes: all.csv the test split, val.csv val."""
    table = f"{RES}/scores/{wildcards.table}.csv"
    split = next(s for s, path in SCORE_TABLES.items() if path == table)
    shown = (
        eval_runs() if split == "val" else reported_runs()
    )  # val: every run, the choice's candidates too
    return expand(f"{RES}/scores/{{split}}/{{run}}.csv", split=split, run=shown)


def all_targets():
    """Rule all's inputs known before any result (:func:`confirm_targets` adds the chosen betas' runs)."""
    targets = list(PROMPT_FILES.values())
    if SANDBOX:
        targets.append(f"{SBX}/quality.json")
    targets += expand(
        f"{RES}/scores/{{split}}/{{run}}.csv", split=SPLITS, run=runs.eval_runs(config)
    )
    targets += list(SCORE_TABLES.values())
    targets += [
        CHOSEN,
        f"{RES}/stats/comparisons.csv",
        f"{RES}/stats/seed_summary.csv",
    ]
    tables = ["table1", "table_tuning", "table_divergence_beta"]
    if config["train"]["probe"]["prompts"]:
        tables.append("table_efficiency")
    targets += [f"{FIG}/{t}.md" for t in tables]
    probed = bool(
        config["train"]["probe"]["prompts"]
    )  # fig_efficiency plots the probe's curves
    targets += [f"{FIG}/{f}.png" for f in FIGURES if probed or f != "fig_efficiency"]
    if runs.target_grid(config):  # beyond the paper: the adaptive beta
        targets += [f"{FIG}/table_adaptive_beta.md", f"{FIG}/fig_adaptive_beta.png"]
    if runs.score_function_runs(config):  # beyond the paper: rewards without gradients
        targets += [f"{FIG}/table_score_function.md"]
        targets += [f"{FIG}/fig_score_function.png"] if probed else []
    if config["study"]["enabled"]:
        targets.append(STUDY)
    if study_results_in_all():
        targets += [f"{FIG}/table_study.md", f"{FIG}/fig_study.png"]
    targets += [f"{FIG}/data/{name}" for name in published()]
    return targets


def confirm_targets(wildcards):
    """Rule all's inputs known once choose_settings has run: the scores of the chosen settings' confirmatory runs."""
    known = set(runs.eval_runs(config))
    return expand(
        f"{RES}/scores/{{split}}/{{run}}.csv",
        split=SPLITS,
        run=[r for r in eval_runs() if r not in known],
    )


def published():
    """The small result files committed next to the figures, so that a reader can check every number:
    paper_figures/data/<name> <- the pipeline's file."""
    files = {
        "scores_test.csv": SCORE_TABLES["test"],
        "scores_val.csv": SCORE_TABLES["val"],
        "comparisons.csv": f"{RES}/stats/comparisons.csv",
        "seed_summary.csv": f"{RES}/stats/seed_summary.csv",
        "chosen.csv": CHOSEN,
    }
    if config["train"]["probe"]["prompts"]:
        files["curves.csv"] = f"{RES}/stats/curves.csv"
    if SANDBOX:
        files["sandbox_quality.json"] = f"{SBX}/quality.json"
    if study_results_in_all():
        files["study_answers.csv"] = f"{RES}/study/answers.csv"
        files["study_summary.json"] = f"{RES}/study/summary.json"
    return files


STUDY = f"{RES}/study/design"
"""The study folder (study.json, items.csv, images/) that the app serves (rocm_rlhf.study.design)."""
STUDY_SIMULATED = f"{RES}/study/simulated.sqlite"
"""The simulated raters' answers (sandbox)."""


def study_results_in_all():
    """Whether the default target includes the study's results - from the simulated raters in the sandbox, from
    people's database (study.database) when study.answers is human."""
    s = config["study"]
    return s["enabled"] and (SANDBOX or s["answers"] == "human")


def study_inputs(wildcards):
    """The samples of the study's arms on study.split, and the chosen settings when study.arms names them (a chosen
    beta, or a tuned baseline by name; input functions only: the choice is the choose_settings checkpoint's).
    """
    spec = config["study"]["arms"]
    chosen = betas = lrs = None
    if study_design.needs_chosen(spec, list(runs.lr_grid(config))):
        chosen = checkpoints.choose_settings.get().output[0]
        betas, lrs = runs.read_chosen(chosen), runs.read_chosen_lrs(chosen)
    arms = study_design.resolve_arms(spec, betas, lrs)
    run_ids = [
        r for rs in study_design.runs_of_arms(arms, eval_runs()).values() for r in rs
    ]
    inputs = {
        "samples": expand(
            f"{RES}/samples/{config['study']['split']}/{{run}}/images.npz",
            run=run_ids,
        )
    }
    if chosen is not None:
        inputs["chosen"] = CHOSEN
    return inputs


def study_answers_db(wildcards):
    """The answers database the study's results read: the simulated raters' (sandbox) or study.database."""
    if config["study"]["answers"] == "human":
        return config["study"]["database"]
    if not SANDBOX:
        raise ValueError(
            "study.answers: simulated needs the sandbox's gold judge (setting: sandbox); in the hub setting collect "
            "people's answers with `rocm-rlhf study-serve` and set study.answers: human"
        )
    return STUDY_SIMULATED


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
    """The sandbox proxy folders of train.reward (one scorer, or each term of a weighted sum) and of
    train.surrogate."""
    terms = list(scorer_catalogue.reward_terms(config["train"]["reward"]))
    terms += [config["train"]["surrogate"]] if config["train"]["surrogate"] else []
    return [reward_input(name) for name in dict.fromkeys(terms) if reward_input(name)]


# The fork server (rocm_rlhf.infra.forkserver): one process imports torch and the rest once, and every job's stage
# runs in a fork of it. Local execution in this environment only (not for Slurm jobs, conda or containers, whose
# jobs run elsewhere or with other packages); config key fork_server.
FORK_SERVER = {}


def use_fork_server():
    return bool(
        config["fork_server"]
        and workflow.local_exec
        and not workflow.remote_exec
        and not workflow.deployment_settings.deployment_method
    )


def start_fork_server():
    if use_fork_server():
        try:
            proc, path = forkserver.start(log_path=f"{LOG}/fork_server.log")
        except OSError as err:  # every job then runs in its own process, as without it
            print(f"rocm-rlhf: fork server not started ({err})", file=sys.stderr)
            return
        FORK_SERVER.update(proc=proc, path=path)
        os.environ[forkserver.ENV] = path


def stop_fork_server():
    if FORK_SERVER:
        os.environ.pop(forkserver.ENV, None)
        forkserver.stop(FORK_SERVER.pop("proc"), FORK_SERVER.pop("path"))
