"""Staging hub models and datasets into the Hugging Face cache, and checking that they are there.

Run once, with network access (rule ``stage_models``, a local rule)::

    snakemake --cores 1 stage_models --configfile config/paper.yaml

Afterwards GPU jobs and cluster nodes run with ``HF_HUB_OFFLINE=1``. Every hub job first calls :func:`preflight`
with the assets it needs: when one is missing it fails at once, before loading anything, with one error naming every
missing model and the staging command.
"""

from __future__ import annotations

from typing import Iterable

from .hub import ModelNotAvailableError, is_local, is_path_like, stage_hint

Asset = tuple[str, str | None]  # (repo id, file name or None for the whole repository)


def model_assets(config: dict, *, generators: Iterable[str] = ("lcm", "diffusion"),
                 metrics: Iterable[str] | None = None, reward: bool = True) -> list[Asset]:
    """The hub assets a job of this config needs (local folders are skipped)."""
    from ..rewards import scorer_class
    from .scorer_catalogue import reward_terms

    assets: list[Asset] = []
    for g in generators:
        mid = config["model"].get(g) or ""
        if mid and not is_local(mid) and not is_path_like(mid):  # a missing path is the loader's error
            assets.append((mid, None))
    names = list(metrics if metrics is not None else config["evaluation"]["metrics"])
    if reward:  # a scorer, or the terms of a weighted sum
        names += list(reward_terms(config["train"]["reward"]))
    for name in dict.fromkeys(names):
        cls = scorer_class(name)
        kw = config["rewards"].get(name, {})
        for repo, filename in getattr(cls, "HUB_ASSETS", ()):
            repo, filename = _configured_asset(cls, kw, repo, filename)
            if not is_local(repo) and not is_path_like(repo):
                assets.append((repo, filename))
    return list(dict.fromkeys(assets))


def _configured_asset(cls, kwargs: dict, repo: str, filename: str | None) -> Asset:
    """One of a scorer's default assets as its configured keyword arguments change it: the keyword whose default is
    the asset's repo (``model_id``, ``processor_id``, ``tokenizer_id``, ``clip_model_id`` ...) replaces the repo, and
    ``filename`` the file of ``model_id``'s asset."""
    import inspect

    params = inspect.signature(cls).parameters
    key = next((k for k, p in params.items() if p.default == repo), None)
    if key is None or not kwargs.get(key):
        return repo, filename
    if key == "model_id" and filename is not None and kwargs.get("filename"):
        filename = kwargs["filename"]
    return kwargs[key], filename


def dataset_ids(config: dict) -> list[str]:
    p = config["prompts"]
    ds = p["pickapic"]["dataset"]
    if p["source"] == "pickapic" and not is_local(ds) and not is_path_like(ds):
        return [p["pickapic"]["dataset"]]
    return []


def _cached(repo: str, filename: str | None) -> bool:
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if filename is None:
            snapshot_download(repo, local_files_only=True)
        else:
            hf_hub_download(repo, filename, local_files_only=True)
        return True
    except Exception:  # LocalEntryNotFoundError and friends: not in the cache
        return False


def preflight(assets: Iterable[Asset]) -> None:
    """Raise ModelNotAvailableError naming every asset that is not in the local cache (offline) or reachable."""
    from .hub import is_offline

    if not is_offline():
        return  # online: from_pretrained downloads what is missing
    missing = [(repo, filename) for repo, filename in assets if not _cached(repo, filename)]
    if missing:
        names = [repo + (f" ({filename})" if filename else "") for repo, filename in missing]
        raise ModelNotAvailableError(
            "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache: " + ", ".join(names) + ". "
            + stage_hint(missing))


OFFLINE_STAGING = ("HF_HUB_OFFLINE=1 is set, so stage_models can only find what is already in the Hugging Face cache "
                   "({cache}), which lacks {missing}. Run `snakemake --cores 1 stage_models --configfile <your "
                   "config files>` once without HF_HUB_OFFLINE, on a machine with network access (a cluster's login "
                   "node) and with the same HF_HOME as the jobs (on shared storage), then run the workflow again")


def _offline_staging_error(missing: str) -> ModelNotAvailableError:
    from huggingface_hub import constants

    return ModelNotAvailableError(OFFLINE_STAGING.format(cache=constants.HF_HUB_CACHE, missing=missing))


def stage(config: dict) -> dict:
    """Download every model, reward checkpoint and dataset the config names; return what was staged. Offline
    (HF_HUB_OFFLINE=1) it only checks the cache, and fails at once naming what is missing and how to stage it."""
    from huggingface_hub import hf_hub_download, snapshot_download

    from .hub import is_offline

    if is_offline():
        missing = [repo + (f" ({f})" if f else "") for repo, f in model_assets(config) if not _cached(repo, f)]
        if missing:
            raise _offline_staging_error(", ".join(missing))
    out = {"models": [], "datasets": []}
    for repo, filename in model_assets(config):
        if filename is None:
            # weights in safetensors (or bin where a repo has nothing else), configs, tokenizers; no ONNX/flax/tf/ckpt
            path = snapshot_download(repo, ignore_patterns=["*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ckpt",
                                                            "*.ot", "flax_model*", "tf_model*", "*.tflite"])
        else:
            path = hf_hub_download(repo, filename)
        out["models"].append({"repo": repo, "file": filename, "path": str(path)})
        print(f"staged {repo} {filename or ''} -> {path}", flush=True)
    for ds in dataset_ids(config):
        from datasets import load_dataset

        p = config["prompts"]["pickapic"]
        for split in dict.fromkeys((p["split"], p["eval_split"], p["val_split"] or p["eval_split"])):
            try:
                load_dataset(ds, split=split)
            except Exception as err:
                if is_offline():
                    raise _offline_staging_error(f"dataset {ds} (split {split})") from err
                raise
        out["datasets"].append(ds)
        print(f"staged dataset {ds}", flush=True)
    return out
