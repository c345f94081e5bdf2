"""One registry for training rewards and evaluation metrics.

Every scorer is a ``torch.nn.Module`` whose ``forward(images, prompts)`` takes images in [0, 1] (B, 3, H, W) and B
prompts and returns one score per image (B,), preprocessing in torch so that gradients reach the pixels. A scorer is a
class decorated with ``@register("name")``; its constructor's keyword arguments come from the config through its
classmethod ``config_kwargs``. API: :func:`load_scorer` (``load_scorer("pickscore", model_id=...)``),
:func:`scorer_kwargs` (a scorer's arguments from the config), :func:`scorer_class`, :func:`available`,
:class:`Scorer`, :func:`register`. The modules that define scorers are imported on first lookup.

Without editing the package, a scorer can be named by its import path, ``module:Class`` (a :class:`Scorer` or any
``torch.nn.Module`` with that ``forward``) or ``module:function`` (``f(images, prompts) -> scores``): it is
registered under that name on first lookup (the protocol: docs/extending.md). :func:`load_reward` builds a training
reward, one scorer or a weighted sum of several (:class:`WeightedSum`, ``train.reward: {name: weight, ...}``).
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from ..infra.scorer_catalogue import is_plugin, load_plugin, reward_label, reward_terms

_REGISTRY: dict[str, Callable[..., "Scorer"]] = {}
# modules that define scorers, imported on first lookup
_PROVIDERS = ("rocm_rlhf.rewards.sandbox", "rocm_rlhf.rewards.hub", "rocm_rlhf.rewards.generic")


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


def scorer_name(scorer) -> str:
    """A scorer in words for messages: its ``definition``, or its class name."""
    return getattr(scorer, "definition", "") or type(scorer).__name__


def scores_of(scorer, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """``scorer(images, prompts)``, checked by :func:`checked_scores` (non-finite scores returned: what to do with
    them is the caller's, e.g. the trainer's loss check)."""
    return checked_scores(scorer(images, prompts), images, scorer, finite=False)


def checked_scores(scores, images: torch.Tensor, scorer, *, finite: bool = True) -> torch.Tensor:
    """``scores``, what ``scorer`` returned for ``images`` [B, 3, H, W], as a float tensor [B] on the images' device,
    or one error naming the scorer and what is wrong: not a tensor (a scorer without gradients may return numbers:
    a list, a tuple or a NumPy array of B of them), not B scores in one dimension ([B, 1] included: squeezing it
    silently would hide a scorer that scores something else), not a real number, or (``finite``) not finite."""
    name = f"scorer {type(scorer).__name__} ({scorer_name(scorer)})"
    b = images.shape[0]
    if not isinstance(scores, torch.Tensor):
        if getattr(scorer, "differentiable", True) or not isinstance(scores, (list, tuple)) and not hasattr(
                scores, "__array__"):
            kind = "a differentiable scorer must return a torch tensor (gradients flow through it)" if getattr(
                scorer, "differentiable", True) else "return a tensor, a list or a NumPy array of numbers"
            raise TypeError(f"{name} returned {type(scores).__name__}, not scores; {kind} of shape [{b}]")
        try:
            scores = torch.as_tensor(scores, dtype=torch.float32, device=images.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} returned {type(scores).__name__} that is not {b} numbers: {err}") from None
    if scores.is_complex() or scores.dtype == torch.bool:
        raise TypeError(f"{name} returned {scores.dtype} scores; return real numbers")
    if tuple(scores.shape) != (b,):
        raise ValueError(f"{name} returned scores of shape {tuple(scores.shape)} for {b} images; return one score per "
                         f"image, shape [{b}]")
    if not scores.dtype.is_floating_point:
        scores = scores.float()
    bad = ~torch.isfinite(scores.detach())
    if finite and bad.any():
        raise ValueError(f"{name} returned {int(bad.sum())} non-finite score(s) of {b} (e.g. "
                         f"{scores.detach()[bad][0].item()}); every image needs a finite score")
    return scores


def register(name: str) -> Callable[[Callable[..., Scorer]], Callable[..., Scorer]]:
    def deco(factory: Callable[..., Scorer]) -> Callable[..., Scorer]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"scorer '{name}' is registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def _import_providers(name: str | None = None) -> None:
    for mod in _PROVIDERS:
        importlib.import_module(mod)
    if name is not None and name not in _REGISTRY and is_plugin(name):
        _REGISTRY[name] = _plugin_factory(name)


def _plugin_factory(name: str):
    """The factory of a plug-in scorer ``module:Class`` (the class itself) or ``module:function`` (a
    :class:`FunctionScorer` around it); :class:`ValueError` naming what is wrong."""
    obj = load_plugin(name)
    if isinstance(obj, type):
        return obj
    return _function_factory(obj)


class FunctionScorer(Scorer):
    """A plug-in function ``f(images, prompts) -> scores`` as a scorer; ``f.differentiable`` (default True) and
    ``f.definition`` (default its docstring's first line) say what :class:`Scorer` says."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn
        self.differentiable = bool(getattr(fn, "differentiable", True))
        doc = (fn.__doc__ or "").strip().splitlines()
        self.definition = getattr(fn, "definition", doc[0] if doc else f"{fn.__module__}.{fn.__qualname__}")

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.fn(images, prompts)


def _function_factory(fn: Callable):
    def factory() -> FunctionScorer:
        return FunctionScorer(fn)

    factory.differentiable = bool(getattr(fn, "differentiable", True))
    return factory


class WeightedSum(Scorer):
    """A training reward ``sum_i w_i * scorer_i(images, prompts)`` (``train.reward: {name: weight, ...}``);
    differentiable when every term is. Its gradient is the weighted sum of the terms' gradients."""

    def __init__(self, scorers: dict[str, Scorer], weights: dict[str, float]):
        super().__init__()
        if set(scorers) != set(weights) or not scorers:
            raise ValueError(f"WeightedSum: scorers {sorted(scorers)} and weights {sorted(weights)} must name the "
                             f"same, non-empty set")
        self.terms = torch.nn.ModuleDict(scorers)
        self.weights = {k: float(w) for k, w in weights.items()}
        self.differentiable = all(getattr(sc, "differentiable", True) for sc in scorers.values())
        self.definition = " + ".join(f"{self.weights[k]:g} * [{k}: {getattr(sc, 'definition', '') or k}]"
                                     for k, sc in scorers.items())

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        total = None
        for name, scorer in self.terms.items():
            term = self.weights[name] * scores_of(scorer, images, prompts).float()
            total = term if total is None else total + term
        return total


def load_reward(spec, kwargs: dict) -> Scorer:
    """The training reward of ``train.reward`` (``spec``): one scorer (``spec`` a name, ``kwargs`` its options) or a
    :class:`WeightedSum` (``spec`` ``{name: weight}`` or a list of ``{name, weight}``, ``kwargs`` ``{name: its
    options}``); its ``name`` is :func:`rocm_rlhf.infra.scorer_catalogue.reward_label`."""
    if isinstance(spec, str):
        return load_scorer(spec, **kwargs)
    terms = reward_terms(spec)
    unknown = sorted(set(kwargs) - set(terms))
    if unknown:
        raise ValueError(f"reward options for {unknown}, which are not terms of the weighted sum {sorted(terms)}")
    scorer = WeightedSum({n: load_scorer(n, **kwargs.get(n, {})) for n in terms}, terms)
    scorer.name = reward_label(spec)
    return scorer


def available() -> list[str]:
    _import_providers()
    return sorted(_REGISTRY)


def scorer_class(name: str):
    """The registered factory (class) of ``name``, without instantiating it (e.g. to read its HUB_ASSETS)."""
    _import_providers(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown scorer '{name}'; known scorers: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def scorer_kwargs(name: str, config: dict, sandbox_rewards_dir: str | None = None) -> dict:
    """The keyword arguments :func:`load_scorer` creates scorer ``name`` with, from the validated config: what its
    class's ``config_kwargs`` reads (``rewards.<name>``; the sandbox's proxies add their folder under
    ``sandbox_rewards_dir`` and its gold judge the world's ``sandbox.*`` settings). A factory without
    ``config_kwargs``, or a name not registered (which :func:`load_scorer` then refuses), gets ``rewards.<name>``."""
    _import_providers(name)
    read = getattr(_REGISTRY.get(name), "config_kwargs", None)
    if read is None:
        return Scorer.config_kwargs(name, config, sandbox_rewards_dir)
    return read(name, config, sandbox_rewards_dir)


def load_scorer(name: str, **kwargs) -> Scorer:
    """Create the scorer registered as ``name`` with the given keyword arguments (from config)."""
    import inspect

    _import_providers(name)
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
