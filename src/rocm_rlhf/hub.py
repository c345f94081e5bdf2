"""Loading models from the Hugging Face hub or a local folder, with one clear error when offline and missing.

Every ``from_pretrained`` of a hub id in the library goes through :func:`from_pretrained`, so that a missing model
gives the same message everywhere: which model, and the command that stages it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STAGE_HINT = (
    "Stage it once on a machine with network access: `snakemake --cores 1 stage_models --configfile <your config>` "
    "(or `huggingface-cli download {model_id}`), then run offline with HF_HUB_OFFLINE=1."
)


class ModelNotAvailableError(RuntimeError):
    """A model or dataset named in the config is neither a local folder nor in the Hugging Face cache."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def is_local(model_id: str | os.PathLike) -> bool:
    return Path(model_id).expanduser().exists()


def from_pretrained(cls: Any, model_id: str | os.PathLike, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model_id, **kwargs)``, turning a missing model into :class:`ModelNotAvailableError`.

    ``model_id`` is a local folder (used as is) or a hub id (looked up in the cache; downloaded unless
    HF_HUB_OFFLINE is set).
    """
    model_id = str(Path(model_id).expanduser()) if is_local(model_id) else str(model_id)
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:  # missing files surface as OSError/ValueError
        if is_local(model_id):
            raise
        where = "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache" if is_offline() else "not reachable"
        raise ModelNotAvailableError(
            f"model '{model_id}' ({getattr(cls, '__name__', cls)}) is {where}. "
            + STAGE_HINT.format(model_id=model_id)
        ) from err
