"""Entry points of the pipeline's stages: ``stage(job)`` reads the job's config and paths and calls the library.

Each function here is what one Snakemake rule runs (through its one-line script in ``workflow/scripts/``); nothing
here knows about Snakemake, and each can be run by hand with ``rocm-rlhf stage <name> ...``. Heavy imports happen
inside the functions, so the analysis stages need no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from .infra.utils import write_json


def _path(named, key: str) -> str | None:
    """The single path of a named input, or None when the rule gave it nothing (e.g. a hub-setting model)."""
    if key not in named.keys():
        return None
    value = getattr(named, key)
    if isinstance(value, (list, tuple)):
        return str(value[0]) if len(value) else None
    return str(value)


def _preflight(config, **needs) -> None:
    """Hub setting: fail at once, before any work, if a model the job needs is not staged (offline)."""
    if config["setting"] != "hub":
        return
    from .infra.staging import model_assets, preflight

    preflight(model_assets(config, **needs))


def _gpu_slot(config, count: int = 1):
    """Lock ``count`` free local GPUs for a GPU job before CUDA initialises (rocm_rlhf.infra.devices); nothing on CPU."""
    import contextlib

    if config["device"] == "cpu":
        return contextlib.nullcontext()
    from .infra.devices import acquire_gpus

    return acquire_gpus(count)


def _world(config):
    from .sandbox.world import World

    sb = config["sandbox"]
    return World(image_size=sb["image_size"], jitter=sb["jitter"])


def _sizes(config):
    from .sandbox.models import SandboxSizes

    m = config["sandbox"]["models"]
    return SandboxSizes(text_width=m["text_width"], text_layers=m["text_layers"],
                        vae_channels=tuple(m["vae_channels"]), unet_channels=tuple(m["unet_channels"]),
                        unet_layers=m["unet_layers"], attention_head_dim=m["attention_head_dim"],
                        time_cond_proj_dim=m["time_cond_proj_dim"])


def _stage(config, name, seed_offset):
    from .sandbox.build import StageSettings

    s = config["sandbox"][name]
    return StageSettings(steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], seed=config["seed"] + seed_offset)


# --------------------------------------------------------------------------------------------------------- prompts
def prepare_prompts(job) -> None:
    from .prompts import pickapic_prompts, sandbox_prompts, write_prompts

    cfg, p = job.config, job.config["prompts"]
    if p["source"] == "sandbox":
        train, evals = sandbox_prompts(_world(cfg), p["n_train"], p["n_eval"], p["heldout_pairs"], cfg["seed"])
    else:
        pp = p["pickapic"]
        kw = dict(min_words=pp["min_words"], max_chars=pp["max_chars"])
        train = pickapic_prompts(pp["dataset"], p["n_train"], cfg["seed"], split=pp["split"], **kw)
        evals = pickapic_prompts(pp["dataset"], p["n_eval"], cfg["seed"], split=pp["eval_split"], **kw)
        evals = evals.assign(split="eval")
    write_prompts(train, job.output.train)
    write_prompts(evals, job.output.eval)
    print(f"wrote {len(train)} train and {len(evals)} eval prompts")


# --------------------------------------------------------------------------------------------------------- sandbox
def sandbox_vae(job) -> None:
    from .sandbox.build import train_vae

    stats = train_vae(_world(job.config), job.output.model, _stage(job.config, "vae", 0), _sizes(job.config))
    write_json(job.output.stats, stats)
    print(json.dumps(stats, indent=1))


def sandbox_teacher(job) -> None:
    from .sandbox.build import train_teacher

    stats = train_teacher(_world(job.config), job.input.vae, job.output.model, _stage(job.config, "teacher", 1),
                          _sizes(job.config))
    write_json(job.output.stats, stats)
    print(json.dumps(stats, indent=1))


def sandbox_lcm(job) -> None:
    from .sandbox.build import StageSettings, distill_lcm

    s = job.config["sandbox"]["lcm"]
    settings = StageSettings(steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], seed=job.config["seed"] + 2)
    stats = distill_lcm(job.input.teacher, _world(job.config), job.output.model, settings, _sizes(job.config),
                        w_min=s["w_min"], w_max=s["w_max"])
    write_json(job.output.stats, stats)
    print(json.dumps(stats, indent=1))


def sandbox_proxy(job) -> None:
    from .sandbox.proxies import train_proxy

    cfg, s = job.config, job.config["sandbox"]["proxies"]
    stats = train_proxy(job.wildcards.proxy, job.input.lcm, _world(cfg), job.output.model, steps=s["steps"],
                        n_base=s["n_base"], batch_size=s["batch_size"], lr=s["lr"],
                        guidance_scale=cfg["model"]["guidance_scale"], seed=cfg["seed"] + 3,
                        tau=cfg["sandbox"]["judge_tau"])
    write_json(job.output.stats, stats)
    print(json.dumps(stats, indent=1))


def sandbox_quality(job) -> None:
    from .sandbox.quality import assess

    cfg = job.config
    proxies = {Path(p).name: p for p in job.input.proxies}
    out = assess(job.input.lcm, proxies, _world(cfg), guidance_scale=cfg["model"]["guidance_scale"],
                 n_prompts=cfg["sandbox"]["quality_prompts"], seed=cfg["seed"] + 4, tau=cfg["sandbox"]["judge_tau"])
    out["build_seconds"] = {Path(p).stem: json.loads(Path(p).read_text())["seconds"] for p in job.input.stats}
    write_json(job.output[0], out)
    print(json.dumps(out, indent=1))


# -------------------------------------------------------------------------------------------------------- training
def reward_kwargs(config: dict, name: str, sandbox_rewards_dir: str | None = None) -> dict:
    """Keyword arguments of a scorer: from config.rewards, with the sandbox's own folders filled in."""
    kw = dict(config["rewards"].get(name, {}))
    if name.startswith("proxy_") and "model_id" not in kw and sandbox_rewards_dir:
        kw["model_id"] = str(Path(sandbox_rewards_dir) / name)
    if name.startswith("gold"):
        sb = config["sandbox"]
        kw.setdefault("image_size", sb["image_size"])
        kw.setdefault("jitter", sb["jitter"])
        kw.setdefault("tau", sb["judge_tau"])
    return kw


def train(job) -> None:
    """One training run. With ``train.num_processes`` N > 1 a ROCM run locks N devices and runs this stage again
    in N worker processes through ``accelerate launch`` (rocm_rlhf.training.distributed); baselines use one."""
    from .training import distributed

    generator = "lcm" if job.params.method in ("rocm", "rlcm") else "diffusion"
    if distributed.in_worker():  # a worker of a launch below: its parent checked, locked and set the devices
        _train(job)
        return
    _preflight(job.config, generators=[generator], metrics=[], reward=True)
    n = train_processes(job.config, job.params.method)
    with _gpu_slot(job.config, count=n):
        if n == 1:
            _train(job)
        else:
            from .infra.jobs import cli_args

            per_process = max(1, int(getattr(job, "threads", 1) or 1) // n)  # the rule asks threads x n
            with cli_args(job, "train", threads=per_process) as args:
                distributed.launch(n, ["rocm_rlhf.infra.cli", *args], threads=per_process)


def train_processes(config: dict, method: str) -> int:
    """Processes (devices) of one training run: ``train.num_processes`` for ROCM, 1 for the baselines."""
    return int(config["train"]["num_processes"]) if method == "rocm" else 1


def _train(job) -> None:
    from .prompts import read_prompts
    from .training.run import train_run

    cfg, p = job.config, job.params
    name = cfg["train"]["reward"]
    reward_dir = _path(job.input, "reward")
    rewards_dir = str(Path(reward_dir).parent) if reward_dir else None
    kwargs = {"divergence": p.divergence, "beta": float(p.beta)} if p.method == "rocm" else {}
    train_run(cfg, method=p.method, run_id=job.wildcards.run, seed=int(p.seed),
              run_dir=Path(job.output.run_json).parent, model_id=job.params.model_id, reward_name=name,
              reward_kwargs=reward_kwargs(cfg, name, rewards_dir),
              prompts=read_prompts(job.input.prompts)["prompt"].tolist(), **kwargs)


# ------------------------------------------------------------------------------------------------------ evaluation
def sample_eval(job) -> None:
    """Images of one run (or the base model) on the eval prompts, with paired noise per (prompt, sample seed)."""
    _preflight(job.config, generators=["lcm", "diffusion"], metrics=[], reward=False)
    with _gpu_slot(job.config):
        _sample_eval(job)


def _sample_eval(job) -> None:
    from .evaluation import eval_units, generate_diffusion_units, generate_lcm_units, save_samples
    from .models import load_lcm_pipeline, load_sd_pipeline
    from .prompts import read_prompts
    from .training.run import DIFFUSION_METHODS, DTYPES
    from .infra.utils import pick_device

    cfg = job.config
    device = pick_device(cfg["device"])
    dtype = DTYPES[cfg["model"]["dtype"]]
    diffusion = (job.params.method if "method" in job.params.keys() else "base") in DIFFUSION_METHODS
    pipe = (load_sd_pipeline if diffusion else load_lcm_pipeline)(job.params.model_id, dtype=dtype, device=device)
    if _path(job.input, "adapter"):
        pipe.load_lora_weights(_path(job.input, "adapter"))  # the standard diffusers call a user makes
    units = eval_units(read_prompts(job.input.prompts), cfg["evaluation"]["images_per_prompt"])
    if diffusion:  # the method's own DDIM sampler, as in its training
        from .training.run import diffusion_sampling

        d = diffusion_sampling(cfg, job.params.method)
        images = generate_diffusion_units(pipe, units, num_steps=d["sample_steps"], guidance_scale=d["guidance_scale"],
                                          eta=d["eta"], batch_size=cfg["evaluation"]["batch_size"])
    else:
        images = generate_lcm_units(pipe, units, num_steps=cfg["model"]["num_steps"],
                                    guidance_scale=cfg["model"]["guidance_scale"],
                                    batch_size=cfg["evaluation"]["batch_size"])
    save_samples(images.float().cpu(), units, job.output.images, job.output.grid)
    print(f"generated {len(units)} images on {device}")


def evaluate(job) -> None:
    """Every configured metric on every image of one run: results/scores/<run>.csv (long format)."""
    _preflight(job.config, generators=[], reward=False)
    with _gpu_slot(job.config):
        _evaluate(job)


def _evaluate(job) -> None:
    from .evaluation import SCORE_COLUMNS, load_samples, run_identity, score_images
    from .rewards import load_scorer
    from .infra.utils import atomic_path, pick_device

    cfg = job.config
    device = pick_device(cfg["device"])
    reward_dir = _path(job.input, "rewards")
    rewards_dir = str(Path(reward_dir).parent) if reward_dir else None
    images, units = load_samples(job.input.images)
    scorers = {m: load_scorer(m, **reward_kwargs(cfg, m, rewards_dir)).to(device)
               for m in cfg["evaluation"]["metrics"]}
    scores = score_images(images, units, scorers, batch_size=cfg["evaluation"]["batch_size"], device=device)
    ident = run_identity(job.wildcards.run)
    scores = scores.assign(run_id=job.wildcards.run, **ident)[SCORE_COLUMNS]
    with atomic_path(job.output[0]) as tmp:
        scores.to_csv(tmp, index=False)
    print(scores.groupby("metric")["value"].mean().to_string())


# ------------------------------------------------------------------------------------- statistics, tables, figures
def _read_scores(paths) -> "pd.DataFrame":
    import pandas as pd

    return pd.concat([pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in paths], ignore_index=True)


def _control_arms(scores) -> list[str]:
    """Controls of the comparisons: the base model and every baseline that was run."""
    arms = set(scores["arm"])
    return ["base"] + sorted(a for a in arms if a in {"rlcm", "ddpo", "d3po", "dpok"})


def _figure_metrics(config: dict) -> tuple[str, str]:
    f = config["figures"]
    reward = f["reward_metric"] or config["train"]["reward"]
    quality = f["quality_metric"] or ("gold" if config["setting"] == "sandbox" else reward)
    return reward, quality


def collect_scores(job) -> None:
    from .infra.utils import atomic_path

    scores = _read_scores(job.input.scores)
    with atomic_path(job.output[0]) as tmp:
        scores.to_csv(tmp, index=False)
    print(f"{len(scores)} scores of {scores['run_id'].nunique()} runs")


def stats(job) -> None:
    """Paired comparisons of every ROCM arm against the base model and the baselines, and seed summaries."""
    from .stats import compare_all, seed_summary
    from .infra.utils import atomic_path

    scores = _read_scores([job.input.scores])
    controls = _control_arms(scores)
    treatments = sorted(set(scores["arm"]) - set(controls))
    comp = compare_all(scores, treatments, controls, n_boot=job.config["figures"]["n_boot"],
                       rng_seed=job.config["seed"])
    with atomic_path(job.output.comparisons) as tmp:
        comp.to_csv(tmp, index=False)
    with atomic_path(job.output.summary) as tmp:
        seed_summary(scores).to_csv(tmp, index=False)
    print(f"{len(comp)} comparisons, {int(comp['significant'].sum())} significant after Holm")


def table1(job) -> None:
    from .tables import table1 as make

    scores = _read_scores([job.input.scores])
    _, quality = _figure_metrics(job.config)
    metrics = [m for m in job.config["evaluation"]["metrics"] + ["diversity"] if m != quality]
    make(scores, metrics, quality, _control_arms(scores), Path(job.output.md).with_suffix(""),
         n_boot=job.config["figures"]["n_boot"], rng_seed=job.config["seed"])


def table_divergence_beta(job) -> None:
    from .tables import divergence_beta_table

    _, quality = _figure_metrics(job.config)
    divergence_beta_table(_read_scores([job.input.scores]), quality, Path(job.output.md).with_suffix(""))


def fig_beta_sweep(job) -> None:
    from .figures import fig_beta_sweep as make

    reward, quality = _figure_metrics(job.config)
    make(_read_scores([job.input.scores]), reward, quality, Path(job.output.pdf).with_suffix(""))


def _logs(job):
    from .figures import load_training_logs

    return load_training_logs([Path(p).parent for p in job.input.logs])


def fig_efficiency(job) -> None:
    from .figures import fig_efficiency as make
    from .tables import choose_beta

    _, quality = _figure_metrics(job.config)
    make(_logs(job), Path(job.output.pdf).with_suffix(""),
         chosen_betas=choose_beta(_read_scores([job.input.scores]), quality))


def fig_training_curves(job) -> None:
    from .figures import fig_training_curves as make

    make(_logs(job), Path(job.output.pdf).with_suffix(""))


def fig_divergence_gallery(job) -> None:
    """Base model and each divergence at its chosen beta (first training seed), same prompts and noise."""
    import numpy as np

    from .figures import fig_divergence_gallery as make
    from .tables import choose_beta, fmt_beta

    _, quality = _figure_metrics(job.config)
    chosen = choose_beta(_read_scores([job.input.scores]), quality)
    samples = {Path(p).parent.name: p for p in job.input.samples}
    seed = min(job.config["rocm"]["seeds"])
    n = job.config["figures"]["gallery_prompts"]
    rows = {"base": samples["base"]}
    if job.config["rocm"]["unregularised"]:
        rows["rocm-none-b0"] = samples[f"rocm-none-b0-s{seed}"]
    for div, beta in chosen.items():
        rows[f"rocm-{div}-b{fmt_beta(beta)}"] = samples[f"rocm-{div}-b{fmt_beta(beta)}-s{seed}"]
    images, prompts = {}, None
    for arm, path in rows.items():
        with np.load(path, allow_pickle=False) as z:
            keep = np.flatnonzero(z["sample_seed"] == 0)[:n]
            images[arm] = z["images"][keep].astype(np.float32) / 255.0
            if prompts is None:
                prompts = [str(p) for p in z["prompt"][keep]]
    make(images, prompts, Path(job.output.pdf).with_suffix(""))


# --------------------------------------------------------------------------------------------------------- staging
def stage_models(job) -> None:
    from .infra.staging import stage

    write_json(job.output[0], stage(job.config))


# -------------------------------------------------------------------------------------------------------- tiny hub
def tiny_hub(job) -> None:
    """Tiny random stand-ins of every hub model and of the Pick-a-Pic captions, in the hub layouts
    (config/paper-tiny.yaml; rocm_rlhf.infra.tiny_hub), and a manifest of the files written."""
    from .infra.tiny_hub import build_tiny_hub

    manifest = build_tiny_hub(job.output.models, seed=job.config["seed"])
    write_json(job.output.manifest, manifest)
    print(json.dumps(manifest, indent=1))
