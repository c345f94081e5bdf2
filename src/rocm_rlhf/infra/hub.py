"""Loading models from the Hugging Face hub or a local folder, with one clear error when offline and missing.

Every ``from_pretrained`` of a hub id in the library goes through :func:`from_pretrained`, so that a missing model
gives the same message everywhere: which model, and the command that stages it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _download_cli() -> str:
    """huggingface_hub's command-line tool: ``hf`` from 0.34 on (1.x has no other), ``huggingface-cli`` before."""
    import huggingface_hub
    from packaging.version import Version

    return "hf" if Version(huggingface_hub.__version__) >= Version("0.34") else "huggingface-cli"


def download_command(repo_id: str, filename: str | None = None) -> str:
    """The shell command that puts ``repo_id`` (the whole repository, or its one file ``filename``) in the cache."""
    words = [_download_cli(), "download", str(repo_id)] + ([filename] if filename else [])
    return " ".join(shlex.quote(w) for w in words)


def stage_hint(assets: Iterable[tuple[str, str | None]]) -> str:
    """How to stage the missing (repo id, file name or None) ``assets``: the pipeline's rule, or one download each."""
    assets = list(assets)
    commands = "; ".join(f"`{download_command(repo, filename)}`" for repo, filename in assets)
    return (
        f"Stage {'it' if len(assets) == 1 else 'them'} once on a machine with network access: "
        f"`snakemake --cores 1 stage_models --configfile <your config>` (or {commands}), then run offline with "
        "HF_HUB_OFFLINE=1."
    )


class ModelNotAvailableError(RuntimeError):
    """A model or dataset named in the config is neither a local folder nor in the Hugging Face cache."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def is_local(model_id: str | os.PathLike) -> bool:
    return Path(model_id).expanduser().exists()


def is_path_like(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` can only be a local path, never a hub repo id (``name`` or ``org/name``): absolute, starting
    with ``.`` or ``~``, with a backslash, or with more than one ``/``. A missing one is a mistyped path, not a model
    to download."""
    text = str(ref)
    return os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or text.count("/") > 1


def _missing_path(ref: str | os.PathLike) -> FileNotFoundError:
    return FileNotFoundError(f"no local file or folder '{ref}' (a path, not a hub repo id): check the path in your "
                             f"config")


def from_pretrained(cls: Any, model_id: str | os.PathLike, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model_id, **kwargs)``, turning a missing model into :class:`ModelNotAvailableError`.

    ``model_id`` is a local folder (used as is) or a hub id (looked up in the cache; downloaded unless
    HF_HUB_OFFLINE is set).
    """
    if not is_local(model_id) and is_path_like(model_id):
        raise _missing_path(model_id)
    model_id = str(Path(model_id).expanduser()) if is_local(model_id) else str(model_id)
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:  # missing files surface as OSError/ValueError
        if is_local(model_id):
            raise
        where = "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache" if is_offline() else "not reachable"
        raise ModelNotAvailableError(
            f"model '{model_id}' ({getattr(cls, '__name__', cls)}) is {where}. " + stage_hint([(model_id, None)])
        ) from err


def hf_file(repo_id: str | os.PathLike, filename: str, **kwargs: Any) -> str:
    """Local path of one file of a hub repository, turning a missing file into :class:`ModelNotAvailableError`.

    ``repo_id`` is either a local file (returned as is; ``filename`` is then ignored), a local folder (the path
    ``repo_id/filename``, which must exist) or a hub id (``huggingface_hub.hf_hub_download(repo_id, filename)``: looked
    up in the cache, downloaded unless HF_HUB_OFFLINE is set). Extra keyword arguments go to ``hf_hub_download``.
    """
    path = Path(repo_id).expanduser()
    if path.is_file():
        return str(path)
    if path.is_dir():
        target = path / filename
        if not target.is_file():
            raise FileNotFoundError(
                f"local folder '{path}' has no file '{filename}': put the file there or pass its path directly"
            )
        return str(target)
    if is_path_like(repo_id):
        raise _missing_path(repo_id)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    kwargs.setdefault("local_files_only", is_offline())
    try:
        return hf_hub_download(str(repo_id), filename, **kwargs)
    except (OSError, ValueError, EntryNotFoundError) as err:
        where = "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache" if is_offline() else "not reachable"
        raise ModelNotAvailableError(
            f"model '{repo_id}' (file '{filename}') is {where}. " + stage_hint([(str(repo_id), filename)])
        ) from err
