"""One registry for training rewards and evaluation metrics.

Every scorer is a ``torch.nn.Module`` whose ``forward(images, prompts)`` takes images in [0, 1] (B, 3, H, W) and B
prompts and returns one score per image (B,), preprocessing in torch so that gradients reach the pixels. A scorer is a
class decorated with ``@register("name")``; its constructor's keyword arguments come from the config through its
classmethod ``config_kwargs``. API: :func:`load_scorer` (``load_scorer("pickscore", model_id=...)``),
:func:`scorer_kwargs` (a scorer's arguments from the config), :func:`scorer_class`, :func:`available`,
:class:`Scorer`, :func:`register`. The modules that define scorers are imported on first lookup.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

_REGISTRY: dict[str, Callable[..., "Scorer"]] = {}
# modules that define scorers, imported on first lookup
_PROVIDERS = ("rocm_rlhf.rewards.sandbox", "rocm_rlhf.rewards.hub")


class Scorer(torch.nn.Module):
    """Base class: images in [0, 1] (B, 3, H, W) and B prompts -> scores (B,)."""

    name: str = "scorer"
    #: whether gradients w.r.t. the pixels are meaningful (training rewards must be differentiable)
    differentiable: bool = True
    #: one line saying exactly what is computed (checkpoint, preprocessing, scale); written to run.json and README
    definition: str = ""

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def config_kwargs(cls, name: str, config: dict, sandbox_rewards_dir: str | None = None) -> dict:
        """The constructor's keyword arguments for the scorer registered as ``name``: a copy of the config block
        ``rewards.<name>`` (empty when absent). Scorers that need more from the config override this."""
        return dict(config["rewards"].get(name, {}))


def register(name: str) -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    def deco(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"scorer '{name}' is registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _import_providers() -> None:
    for mod in _PROVIDERS:
        importlib.import_module(mod)


def available() -> list[str]:
    _import_providers()
    return sorted(_REGISTRY)


def scorer_class(name: str):
    """The registered factory (class) of ``name``, without instantiating it (e.g. to read its HUB_ASSETS)."""
    _import_providers()
    if name not in _REGISTRY:
        raise KeyError(f"unknown scorer '{name}'; known scorers: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def scorer_kwargs(name: str, config: dict, sandbox_rewards_dir: str | None = None) -> dict:
    """The keyword arguments :func:`load_scorer` creates scorer ``name`` with, from the validated config: what its
    class's ``config_kwargs`` reads (``rewards.<name>``; the sandbox's proxies add their folder under
    ``sandbox_rewards_dir`` and its gold judge the world's ``sandbox.*`` settings). A factory without
    ``config_kwargs``, or a name not registered (which :func:`load_scorer` then refuses), gets ``rewards.<name>``."""
    _import_providers()
    read = getattr(_REGISTRY.get(name), "config_kwargs", None)
    if read is None:
        return Scorer.config_kwargs(name, config, sandbox_rewards_dir)
    return read(name, config, sandbox_rewards_dir)


def load_scorer(name: str, **kwargs) -> Scorer:
    """Create the scorer registered as ``name`` with the given keyword arguments (from config)."""
    import inspect

    _import_providers()
    if name not in _REGISTRY:
        raise KeyError(f"unknown scorer '{name}'; known scorers: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[name]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:  # before loading anything: an option the scorer does not take is a config error
        accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "_")]
        raise ValueError(f"scorer '{name}' does not take the options {sorted(kwargs)} (from config key "
                         f"'rewards.{name}' or the pipeline): {err}; it takes: {', '.join(accepted) or 'none'}") from err
    scorer = factory(**kwargs)
    scorer.name = name
    return scorer
