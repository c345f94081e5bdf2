"""Divergences between two Gaussian transitions with equal variance, with a name registry.

ROCM's regulariser compares the policy's transition N(mean_p, std^2 I) with the reference's N(mean_q, std^2 I) at the
same state, per latent dimension, through ``delta = (mean_p - mean_q) / std``: ``kl`` delta^2 / 2, ``hellinger``
1 - exp(-delta^2 / 8), ``js`` (Gauss-Hermite quadrature, a custom autograd function) and ``fisher`` delta^2 / std^2,
each zero with zero gradient at delta = 0. API: :func:`gaussian_divergence` (reduced by ``"mean"`` or ``"sum"`` over
the non-batch dimensions), :func:`divergence_per_dim`, :func:`register_divergence` (a new divergence is one
elementwise function of (delta, std)), :func:`available`, ``REGISTRY``.
The formulas, the JS quadrature and its measured accuracy: docs/method.md, section 'The sampler and ROCM's objective'.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from numpy.polynomial.hermite_e import hermegauss

Tensor = torch.Tensor
DivergenceFn = Callable[[Tensor, Tensor], Tensor]

#: name -> elementwise function of (delta, std); fill it with :func:`register_divergence`
REGISTRY: dict[str, DivergenceFn] = {}

REDUCTIONS = ("mean", "sum")

#: Gauss-Hermite nodes for the JS quadrature (float64 error < 1.4e-7 for all delta, docs/method.md)
JS_QUADRATURE_NODES = 96
#: |delta| above which JS is taken as log 2 (the exact deficit there is below 1e-300)
JS_DELTA_MAX = 60.0
# below this |delta| JS uses the cancellation-free small-delta form
_JS_SMALL_DELTA = 1.0
_LOG2 = math.log(2.0)


def _standard_normal_gauss_hermite(n: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights with sum_i w_i f(z_i) ~ E_{z ~ N(0,1)} f(z), float64."""
    z, w = hermegauss(n)
    w = w / math.sqrt(2.0 * math.pi)
    return torch.from_numpy(np.ascontiguousarray(z)), torch.from_numpy(np.ascontiguousarray(w))


_GH_NODES, _GH_WEIGHTS = _standard_normal_gauss_hermite(JS_QUADRATURE_NODES)
_GH_CACHE: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}


def _gh(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    key = (dtype, device)
    if key not in _GH_CACHE:
        _GH_CACHE[key] = (_GH_NODES.to(device=device, dtype=dtype), _GH_WEIGHTS.to(device=device, dtype=dtype))
    return _GH_CACHE[key]


def register_divergence(name: str) -> Callable[[DivergenceFn], DivergenceFn]:
    """Decorator registering an elementwise divergence ``fn(delta, std) -> Tensor`` under ``name``.

    ``delta`` is the signed standardised difference (mean_p - mean_q) / std and ``std`` is broadcast to its shape
    and dtype. The function must be even in delta, zero at delta = 0 and differentiable there.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a divergence name must be a non-empty string, got {name!r}")

    def deco(fn: DivergenceFn) -> DivergenceFn:
        if name in REGISTRY and REGISTRY[name] is not fn:
            raise ValueError(f"divergence '{name}' is registered twice; pick another name")
        REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    """Names of the registered divergences, sorted."""
    return sorted(REGISTRY)


# --------------------------------------------------------------------------------------------- the divergences


@register_divergence("kl")
def kl(delta: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean_p, std^2) || N(mean_q, std^2)) = delta^2 / 2 (equal to the reverse KL)."""
    return 0.5 * delta * delta


@register_divergence("hellinger")
def hellinger(delta: Tensor, std: Tensor) -> Tensor:
    """Squared Hellinger distance H^2 = 1 - int sqrt(p q) = 1 - exp(-delta^2 / 8), in [0, 1]."""
    return -torch.expm1(-0.125 * delta * delta)


@register_divergence("js")
def js(delta: Tensor, std: Tensor) -> Tensor:
    """Jensen-Shannon divergence (natural log, M = (P+Q)/2) by Gauss-Hermite quadrature, in [0, log 2]."""
    return _JSFunction.apply(delta.clamp(-JS_DELTA_MAX, JS_DELTA_MAX))


@register_divergence("fisher")
def fisher(delta: Tensor, std: Tensor) -> Tensor:
    """Fisher divergence E_p (d/dx log p - d/dx log q)^2 = (mean_p - mean_q)^2 / std^4 = delta^2 / std^2."""
    return (delta / std) ** 2


# --------------------------------------------------------------------------------------------- JS quadrature


def _logcosh(x: Tensor) -> Tensor:
    """log(cosh(x)) accurate for tiny |x| (log1p(2 sinh(x/2)^2)) and without overflow for large |x|."""
    small = x.abs() < 1.0
    xs = torch.where(small, x, torch.zeros_like(x))  # masked inputs keep the unused branch finite (no NaN grads)
    xl = torch.where(small, torch.ones_like(x), x.abs())
    return torch.where(
        small,
        torch.log1p(2.0 * torch.sinh(0.5 * xs) ** 2),
        xl + torch.log1p(torch.exp(-2.0 * xl)) - _LOG2,
    )


def _js_quadrature(d: Tensor, derivative: bool) -> Tensor:
    """JS(d) or dJS/dd elementwise for the signed delta ``d`` (already clamped), by Gauss-Hermite quadrature.

    u = d z - d^2/2, z ~ N(0, 1).  Small |d|:  JS = d^2/4 - E[logcosh(u/2)],   JS' = d/2 - E[tanh(u/2) (z - d)] / 2.
    Otherwise:                                JS = log 2 - E[softplus(u)],      JS' = -E[sigmoid(u) (z - d)].
    (The forms agree because E[u] = -d^2/2 and softplus(u) = log 2 + u/2 + logcosh(u/2).)
    """
    z, w = _gh(d.dtype, d.device)
    small = d.abs() < _JS_SMALL_DELTA
    d_small = torch.where(small, d, torch.zeros_like(d)).unsqueeze(-1)
    d_large = torch.where(small, torch.full_like(d, 2.0 * _JS_SMALL_DELTA), d).unsqueeze(-1)
    u_small = d_small * z - 0.5 * d_small * d_small
    u_large = d_large * z - 0.5 * d_large * d_large
    if derivative:
        val_small = 0.5 * d_small.squeeze(-1) - 0.5 * (w * torch.tanh(0.5 * u_small) * (z - d_small)).sum(-1)
        val_large = -(w * torch.sigmoid(u_large) * (z - d_large)).sum(-1)
    else:
        val_small = 0.25 * d_small.squeeze(-1) ** 2 - (w * _logcosh(0.5 * u_small)).sum(-1)
        val_large = _LOG2 - (w * F.softplus(u_large, beta=1.0, threshold=40.0)).sum(-1)
    return torch.where(small, val_small, val_large)


class _JSFunction(torch.autograd.Function):
    """JS(delta) saving only delta; the backward recomputes dJS/ddelta with differentiable ops (double backward)."""

    @staticmethod
    def forward(ctx, d: Tensor) -> Tensor:
        ctx.save_for_backward(d)
        return _js_quadrature(d, derivative=False)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:
        (d,) = ctx.saved_tensors
        return grad_out * _js_quadrature(d, derivative=True)


# --------------------------------------------------------------------------------------------- public entry points


def _check_name(name: str) -> DivergenceFn:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown divergence {name!r}; known divergences: {', '.join(available())}")
    return REGISTRY[name]


def _prepare_std(std: Tensor | float, mean_p: Tensor) -> Tensor:
    """std as a tensor of mean_p's dtype and device, broadcastable to mean_p, checked positive and finite."""
    if isinstance(std, bool) or not isinstance(std, (numbers.Real, Tensor)):
        raise TypeError(f"std must be a float or a tensor, got {type(std).__name__}")
    if not isinstance(std, Tensor):
        if not (math.isfinite(std) and std > 0):
            raise ValueError(f"std must be positive and finite, got std={std!r}")
        return torch.tensor(float(std), dtype=mean_p.dtype, device=mean_p.device)
    if std.is_complex() or std.dtype == torch.bool:
        raise TypeError(f"std must be a real tensor, got dtype {std.dtype}")
    std = std.to(device=mean_p.device, dtype=mean_p.dtype)
    if std.ndim == 1 and mean_p.ndim > 1:
        if std.shape[0] not in (1, mean_p.shape[0]):
            raise ValueError(
                f"a 1-d std is read as one value per sample and needs length {mean_p.shape[0]} (the batch size of "
                f"mean_p {tuple(mean_p.shape)}) or 1, got length {std.shape[0]}; for a per-dimension std pass a "
                f"tensor with as many dimensions as mean_p"
            )
        std = std.view(-1, *([1] * (mean_p.ndim - 1)))
    try:
        shape = torch.broadcast_shapes(std.shape, mean_p.shape)
    except RuntimeError:
        shape = None
    if shape != mean_p.shape:
        raise ValueError(
            f"std of shape {tuple(std.shape)} does not broadcast to mean_p's shape {tuple(mean_p.shape)}; pass a "
            f"float, a 0-d tensor, a per-sample tensor of shape [{mean_p.shape[0] if mean_p.ndim else ''}] or a "
            f"tensor broadcastable to mean_p"
        )
    bad = ~(torch.isfinite(std) & (std > 0))
    if bool(bad.any()):
        first = std.detach()[bad].flatten()[0].item()
        raise ValueError(
            f"std must be positive and finite everywhere, got {int(bad.sum())} bad value(s), e.g. std={first!r}"
        )
    return std


def divergence_per_dim(name: str, mean_p: Tensor, mean_q: Tensor, std: Tensor | float) -> Tensor:
    """Elementwise divergence between N(mean_p, std^2) and N(mean_q, std^2): same shape and dtype as ``mean_p``.

    ``name`` is a registered divergence (:func:`available`). ``mean_p`` and ``mean_q`` are floating tensors of the
    same shape, dtype and device. ``std`` is a positive float, a 0-d tensor, a tensor of shape [B] (one value per
    sample: the first dimension of mean_p is the batch) or a tensor broadcastable to mean_p; it is cast to
    mean_p's dtype and device. Half-precision inputs are computed in float32 and returned in their own dtype.
    Gradients flow to mean_p, mean_q and std.
    """
    fn = _check_name(name)
    for label, t in (("mean_p", mean_p), ("mean_q", mean_q)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{label} must be a floating-point tensor, got dtype {t.dtype}")
    if mean_p.shape != mean_q.shape:
        raise ValueError(
            f"mean_p and mean_q must have the same shape, got {tuple(mean_p.shape)} and {tuple(mean_q.shape)}"
        )
    if mean_p.dtype != mean_q.dtype:
        raise ValueError(f"mean_p and mean_q must have the same dtype, got {mean_p.dtype} and {mean_q.dtype}")
    if mean_p.device != mean_q.device:
        raise ValueError(f"mean_p and mean_q must be on the same device, got {mean_p.device} and {mean_q.device}")
    std_t = _prepare_std(std, mean_p)
    out_dtype = mean_p.dtype
    if torch.finfo(out_dtype).bits < 32:
        mean_p, mean_q, std_t = mean_p.float(), mean_q.float(), std_t.float()
    delta = (mean_p - mean_q) / std_t
    out = fn(delta, std_t.expand_as(delta))
    if out.shape != delta.shape:
        raise RuntimeError(f"divergence {name!r} returned shape {tuple(out.shape)}, expected {tuple(delta.shape)}")
    return out.to(out_dtype)


def gaussian_divergence(
    name: str, mean_p: Tensor, mean_q: Tensor, std: Tensor | float, reduction: str = "mean"
) -> Tensor:
    """Divergence ``name`` between N(mean_p, std^2 I) and N(mean_q, std^2 I), one value per sample: shape [B].

    The first dimension is the batch; the per-dimension divergences (:func:`divergence_per_dim`) are reduced over
    all other dimensions: ``"mean"`` averages them (default, so beta does not scale with resolution), ``"sum"`` adds
    them. For kl and fisher the sum is the exact divergence of the joint isotropic Gaussians; for js and hellinger
    it is the sum of the marginal divergences, NOT the joint divergence. A 1-d ``mean_p`` (shape [B]) has one
    dimension per sample, so both reductions return the per-dimension values.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; use one of {', '.join(REDUCTIONS)}")
    _check_name(name)
    if isinstance(mean_p, Tensor) and mean_p.ndim == 0:
        raise ValueError("mean_p must have a batch dimension (shape [B, ...]), got a 0-d tensor")
    per = divergence_per_dim(name, mean_p, mean_q, std)
    if per.ndim == 1:
        return per
    per = per.flatten(1)
    return per.mean(1) if reduction == "mean" else per.sum(1)
