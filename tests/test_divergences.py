"""Tests of rocm_rlhf.divergences against the DEFINITIONS of each divergence, integrated numerically.

The references integrate densities from scipy.stats over the real line with scipy.integrate.quad; they share no
code and no closed form with the module under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from rocm_rlhf import divergences as dv
from rocm_rlhf.divergences import (
    REGISTRY,
    available,
    divergence_per_dim,
    gaussian_divergence,
    register_divergence,
)

torch.set_num_threads(1)

NAMES = ["fisher", "hellinger", "js", "kl"]
LOG2 = math.log(2.0)


# ------------------------------------------------------------------------------------ references from definitions


def _quad(f, mp: float, mq: float, s: float) -> float:
    """int_R f(x) dx, split at the means, their midpoint and +-40 std (beyond which the integrands are < 1e-300)."""
    lo, hi = min(mp, mq), max(mp, mq)
    pts = sorted({lo - 40 * s, lo - 5 * s, lo, 0.5 * (lo + hi), hi, hi + 5 * s, hi + 40 * s})
    total = 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        if b > a:
            total += integrate.quad(f, a, b, epsabs=1e-15, epsrel=1e-13, limit=400)[0]
    return total


def _normal_logpdf(x: float, m: float, s: float) -> float:
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_normal_logpdf_is_scipys():
    for x, m, s in [(0.3, -1.0, 0.05), (4.0, 2.0, 7.0), (-30.0, 0.0, 1.0)]:
        assert _normal_logpdf(x, m, s) == pytest.approx(norm.logpdf(x, m, s), rel=1e-14)


def reference(name: str, mp: float, mq: float, s: float) -> float:
    """Divergence between N(mp, s^2) and N(mq, s^2) by numerical integration of its definition."""
    logp = lambda x: _normal_logpdf(x, mp, s)  # noqa: E731
    logq = lambda x: _normal_logpdf(x, mq, s)  # noqa: E731
    if name == "kl":  # int p log(p / q)
        return _quad(lambda x: math.exp(logp(x)) * (logp(x) - logq(x)), mp, mq, s)
    if name == "js":  # 1/2 KL(P || M) + 1/2 KL(Q || M), M = (P + Q) / 2

        def f(x):
            lp, lq = logp(x), logq(x)
            lm = np.logaddexp(lp, lq) - LOG2
            return 0.5 * math.exp(lp) * (lp - lm) + 0.5 * math.exp(lq) * (lq - lm)

        return _quad(f, mp, mq, s)
    if name == "hellinger":  # 1 - int sqrt(p q)
        return 1.0 - _quad(lambda x: math.exp(0.5 * (logp(x) + logq(x))), mp, mq, s)
    if name == "fisher":  # int p (d/dx log p - d/dx log q)^2, scores by central differences of the log-densities
        h = s  # a central difference is exact for a quadratic at any step; a large one keeps rounding small

        def score(logf, x):
            return (logf(x + h) - logf(x - h)) / (2 * h)

        return _quad(lambda x: math.exp(logp(x)) * (score(logp, x) - score(logq, x)) ** 2, mp, mq, s)
    raise AssertionError(name)


# ------------------------------------------------------------------------------------ scalar values vs definitions


@pytest.mark.parametrize("name", NAMES)
def test_matches_definition_by_numerical_integration(name):
    deltas = [0.0, 0.1, 1.0, 3.0, 10.0]
    stds = [0.05, 1.0, 7.0]
    mq = 0.3
    for s in stds:
        for i, d in enumerate(deltas):
            sign = -1.0 if i % 2 else 1.0  # both orderings of the means
            mp = mq + sign * d * s
            got = gaussian_divergence(
                name, torch.tensor([[mp]], dtype=torch.float64), torch.tensor([[mq]], dtype=torch.float64), s
            )
            assert got.shape == (1,) and got.dtype == torch.float64
            ref = reference(name, mp, mq, s)
            assert abs(got.item() - ref) <= 1e-6 * abs(ref) + 1e-10, (name, d, s, got.item(), ref)


def test_reference_quadrature_is_sensitive():
    # guards the test above: the references distinguish the divergences and the scales
    assert abs(reference("kl", 1.0, 0.0, 1.0) - 0.5) < 1e-9
    assert abs(reference("fisher", 1.0, 0.0, 2.0) - 1.0 / 16) < 1e-7
    assert abs(reference("js", 1.0, 0.0, 1.0) - reference("kl", 1.0, 0.0, 1.0)) > 0.1


# ------------------------------------------------------------------------------------ reductions


def test_reductions_on_a_batch_match_per_dimension_integrals():
    g = torch.Generator().manual_seed(0)
    shape = (3, 4, 5, 5)
    mean_q = torch.randn(shape, generator=g, dtype=torch.float64)
    # deltas spread over [-6, 6] so both JS branches (|delta| < 1 and above) are exercised
    std = torch.tensor([0.05, 1.0, 7.0], dtype=torch.float64)
    mean_p = mean_q + std.view(3, 1, 1, 1) * 6.0 * (2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1)
    for name in NAMES:
        per = divergence_per_dim(name, mean_p, mean_q, std)
        assert per.shape == shape and per.dtype == torch.float64
        ref = np.empty(shape)
        for idx in np.ndindex(*shape):
            ref[idx] = reference(name, mean_p[idx].item(), mean_q[idx].item(), std[idx[0]].item())
        np.testing.assert_allclose(per.numpy(), ref, rtol=1e-6, atol=1e-10, err_msg=name)
        mean = gaussian_divergence(name, mean_p, mean_q, std, reduction="mean")
        total = gaussian_divergence(name, mean_p, mean_q, std, reduction="sum")
        assert mean.shape == total.shape == (3,)
        np.testing.assert_allclose(mean.numpy(), ref.reshape(3, -1).mean(1), rtol=1e-6, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(total.numpy(), ref.reshape(3, -1).sum(1), rtol=1e-6, atol=1e-10, err_msg=name)
        # default reduction is the mean
        torch.testing.assert_close(gaussian_divergence(name, mean_p, mean_q, std), mean, rtol=0, atol=0)


def _joint(mp: torch.Tensor, mq: torch.Tensor, s: float):
    d = mp.numel()
    cov = (s**2) * torch.eye(d, dtype=torch.float64)
    P = torch.distributions.MultivariateNormal(mp.flatten(), covariance_matrix=cov)
    Q = torch.distributions.MultivariateNormal(mq.flatten(), covariance_matrix=cov)
    return P, Q


def test_sum_is_the_joint_kl_and_fisher_of_isotropic_gaussians():
    g = torch.Generator().manual_seed(1)
    shape = (2, 3, 4, 4)
    mean_p = torch.randn(shape, generator=g, dtype=torch.float64)
    mean_q = mean_p + 0.7 * torch.randn(shape, generator=g, dtype=torch.float64)
    std = torch.tensor([0.4, 2.5], dtype=torch.float64)
    kl_sum = gaussian_divergence("kl", mean_p, mean_q, std, reduction="sum")
    fisher_sum = gaussian_divergence("fisher", mean_p, mean_q, std, reduction="sum")
    for b in range(shape[0]):
        P, Q = _joint(mean_p[b], mean_q[b], std[b].item())
        # joint KL by torch.distributions' general formula (trace, log-det and Mahalanobis terms)
        torch.testing.assert_close(kl_sum[b], torch.distributions.kl_divergence(P, Q), rtol=1e-10, atol=1e-12)
        # joint Fisher divergence E_P ||grad log p - grad log q||^2 by autograd of the joint log-densities,
        # averaged over samples of P (the score difference is constant, so every sample must agree)
        x = P.sample((5,)).requires_grad_(True)
        gp = torch.autograd.grad(P.log_prob(x).sum(), x)[0]
        gq = torch.autograd.grad(Q.log_prob(x).sum(), x)[0]
        per_sample = ((gp - gq) ** 2).sum(-1)
        torch.testing.assert_close(per_sample, fisher_sum[b].expand(5), rtol=1e-10, atol=1e-12)


def test_js_and_hellinger_sum_is_not_the_joint_divergence():
    # documents the caveat: for 2 dims with delta_i = 1 the joint Hellinger is 1 - exp(-2/8), not 2 (1 - exp(-1/8))
    mp, mq = torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    h_sum = gaussian_divergence("hellinger", mp, mq, 1.0, reduction="sum").item()
    assert h_sum == pytest.approx(2 * (1 - math.exp(-1 / 8)), rel=1e-12)
    assert abs(h_sum - (1 - math.exp(-2 / 8))) > 1e-2


def test_std_forms_agree():
    g = torch.Generator().manual_seed(2)
    mean_p = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    mean_q = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    per_sample = torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64)
    for name in NAMES:
        # per-sample [B] equals a loop over samples with a python float
        got = gaussian_divergence(name, mean_p, mean_q, per_sample)
        loop = torch.stack(
            [gaussian_divergence(name, mean_p[b : b + 1], mean_q[b : b + 1], per_sample[b].item())[0] for b in range(3)]
        )
        torch.testing.assert_close(got, loop, rtol=1e-14, atol=0)
        # python float == 0-d tensor == full-shape tensor; a per-dimension std broadcast over the batch
        a = divergence_per_dim(name, mean_p, mean_q, 1.5)
        b = divergence_per_dim(name, mean_p, mean_q, torch.tensor(1.5, dtype=torch.float64))
        c = divergence_per_dim(name, mean_p, mean_q, torch.full((3, 2, 4), 1.5, dtype=torch.float64))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        per_dim_std = torch.tensor([[0.5], [2.0]], dtype=torch.float64)  # shape [2, 1] broadcasts to [3, 2, 4]
        d = divergence_per_dim(name, mean_p, mean_q, per_dim_std)
        e = divergence_per_dim(name, mean_p, mean_q, per_dim_std.expand(3, 2, 4).clone())
        torch.testing.assert_close(d, e, rtol=0, atol=0)
        ref = reference(name, mean_p[1, 1, 2].item(), mean_q[1, 1, 2].item(), 2.0)
        assert d[1, 1, 2].item() == pytest.approx(ref, rel=1e-6, abs=1e-10)


def test_one_dimensional_means_are_one_dimension_per_sample():
    mp, mq = torch.tensor([0.0, 1.0, -2.0]), torch.zeros(3)
    for red in ("mean", "sum"):
        out = gaussian_divergence("kl", mp, mq, 2.0, reduction=red)
        torch.testing.assert_close(out, torch.tensor([0.0, 0.125, 0.5]))


# ------------------------------------------------------------------------------------ zero, gradients


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_zero_and_zero_gradient_when_means_agree(name, dtype):
    g = torch.Generator().manual_seed(3)
    mean_q = torch.randn(2, 3, 4, generator=g).to(dtype)
    mean_p = mean_q.clone().requires_grad_(True)
    std = torch.tensor([0.3, 2.0], dtype=dtype).requires_grad_(True)
    for red in ("mean", "sum"):
        out = gaussian_divergence(name, mean_p, mean_q, std, reduction=red)
        assert out.dtype == dtype
        assert torch.equal(out.detach(), torch.zeros(2, dtype=dtype))
        gp, gs = torch.autograd.grad(out.sum(), (mean_p, std))
        assert torch.isfinite(gp).all() and torch.isfinite(gs).all()
        assert torch.equal(gp, torch.zeros_like(gp)) and torch.equal(gs, torch.zeros_like(gs))
    # the mean difference exactly zero in the graph (the delicate case for |.| and sqrt)
    diff = torch.zeros(1, 5, dtype=dtype, requires_grad=True)
    out = gaussian_divergence(name, diff, torch.zeros(1, 5, dtype=dtype), 1.0)
    (gd,) = torch.autograd.grad(out.sum(), diff, create_graph=True)
    assert torch.equal(gd, torch.zeros_like(gd))
    # curvature at zero (the local strength of the regulariser): d^2 D / d delta^2 = 1, 1/4, 1/4, 2/std^2
    if dtype == torch.float64:
        s = 0.5
        x = torch.zeros(1, 3, dtype=dtype, requires_grad=True)
        out = gaussian_divergence(name, x, torch.zeros(1, 3, dtype=dtype), s, reduction="sum")
        (g1,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1[0, 0], x)
        curvature = {"kl": 1.0, "hellinger": 0.25, "js": 0.25, "fisher": 2.0 / s**2}[name] / s**2
        torch.testing.assert_close(g2, torch.tensor([[curvature, 0.0, 0.0]], dtype=dtype), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name):
    # deltas on both sides of zero, inside and outside JS's small-delta branch, including large ones
    deltas = torch.tensor(
        [[-12.0, -6.3, -2.5, -0.999, -0.4, 0.03], [0.2, 0.9, 1.001, 1.7, 4.0, 8.5]], dtype=torch.float64
    )
    std = torch.tensor([0.7, 1.9], dtype=torch.float64)
    mean_q = torch.linspace(-1, 1, 12, dtype=torch.float64).view(2, 6)
    mean_p = (mean_q + deltas * std.view(2, 1)).requires_grad_(True)
    mean_q = mean_q.clone().requires_grad_(True)
    std = std.requires_grad_(True)
    for red in ("mean", "sum"):
        assert torch.autograd.gradcheck(
            lambda a, b, s: gaussian_divergence(name, a, b, s, reduction=red),
            (mean_p, mean_q, std),
            eps=1e-6,
            atol=1e-8,
            rtol=1e-6,
        )
    assert torch.autograd.gradgradcheck(
        lambda a: gaussian_divergence(name, a, mean_q.detach(), std.detach(), reduction="sum"),
        (mean_p,),
        eps=1e-6,
        atol=1e-7,
        rtol=1e-5,
    )


def test_js_gradient_is_the_derivative_of_the_definition():
    # dJS/ddelta by central differences of the integrated definition (independent of the quadrature and backward)
    for d in (0.05, 0.8, 1.0, 2.0, 5.0, 6.3):
        x = torch.tensor([[d]], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(gaussian_divergence("js", x, torch.zeros(1, 1, dtype=torch.float64), 1.0).sum(), x)
        h = 1e-3
        fd = (reference("js", d + h, 0.0, 1.0) - reference("js", d - h, 0.0, 1.0)) / (2 * h)
        assert g.item() == pytest.approx(fd, rel=1e-5, abs=1e-6), (d, g.item(), fd)


# ------------------------------------------------------------------------------------ shape of the divergences


def _js(d, dtype=torch.float64):
    d = torch.as_tensor(d, dtype=dtype)
    return divergence_per_dim("js", d, torch.zeros_like(d), 1.0)


def test_js_bounded_monotone_and_saturating():
    d = torch.cat([torch.linspace(0, 20, 4001, dtype=torch.float64), torch.tensor([30.0, 60.0, 100.0, 1e6, 1e30])])
    for dtype in (torch.float64, torch.float32):
        v = _js(d.to(dtype), dtype)
        assert torch.isfinite(v).all()
        assert (v >= 0).all() and (v <= torch.tensor(LOG2, dtype=dtype)).all()
        assert (torch.diff(v) >= 0).all(), "JS must be non-decreasing in |delta|"
        # strictly increasing where it has not saturated (at |delta| = 8, log 2 - JS = 9e-5)
        assert (torch.diff(v[:1601]) > 0).all(), "JS must increase with |delta|"
        torch.testing.assert_close(v, _js(-d.to(dtype), dtype), rtol=0, atol=2e-7)  # even in delta
    v = _js(torch.tensor([12.0, 20.0, 60.0, 1e30]))
    assert abs(v[0].item() - reference("js", 12.0, 0.0, 1.0)) < 3e-11 and 3.0e-9 < LOG2 - v[0].item() < 3.1e-9
    assert abs(v[1].item() - reference("js", 20.0, 0.0, 1.0)) < 3e-11
    assert torch.equal(v[2:], torch.full((2,), LOG2, dtype=torch.float64))  # clamped at JS_DELTA_MAX
    # infinite delta: value log 2, gradient zero, no NaN
    x = torch.tensor([math.inf, -math.inf], dtype=torch.float64, requires_grad=True)
    out = divergence_per_dim("js", x, torch.zeros(2, dtype=torch.float64), 1.0)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(out.detach(), torch.full((2,), LOG2, dtype=torch.float64))
    assert torch.equal(g, torch.zeros(2, dtype=torch.float64))


def test_js_small_delta_expansion_in_float64_and_float32():
    # JS = d^2/8 - d^4/64 + O(d^6) (the d^6 coefficient is about 2.6e-3)
    d = torch.tensor([1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.3, 0.6], dtype=torch.float64)
    series = d**2 / 8 - d**4 / 64
    v64 = _js(d, torch.float64)
    assert ((v64 - series).abs() <= 4e-3 * d**6 + 1e-15 * series).all(), (v64 - series) / d**6
    # float32 keeps relative accuracy for tiny delta (a naive log 2 - E[softplus] would lose it entirely)
    v32 = _js(d.float(), torch.float32)
    assert v32.dtype == torch.float32
    torch.testing.assert_close(v32.double(), v64, rtol=1e-6, atol=0)


def test_hellinger_bounded_and_kl_fisher_scale():
    d = torch.tensor([0.0, 0.5, 3.0, 30.0, 1e3], dtype=torch.float64)
    h = divergence_per_dim("hellinger", d, torch.zeros_like(d), 1.0)
    assert (h >= 0).all() and (h <= 1).all() and h[-1] == 1.0
    # delta is scale free: the same delta gives the same kl/js/hellinger at any std; fisher scales as 1/std^2
    for name in ("kl", "js", "hellinger"):
        a = divergence_per_dim(name, 0.5 * d, torch.zeros_like(d), 0.5)
        b = divergence_per_dim(name, 7.0 * d, torch.zeros_like(d), 7.0)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    f1 = divergence_per_dim("fisher", d, torch.zeros_like(d), 1.0)
    f2 = divergence_per_dim("fisher", 3.0 * d, torch.zeros_like(d), 3.0)
    torch.testing.assert_close(f2, f1 / 9.0, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_kept(name):
    mp, mq = torch.randn(2, 3), torch.randn(2, 3)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        out = gaussian_divergence(name, mp.to(dtype), mq.to(dtype), torch.tensor([0.5, 2.0], dtype=torch.float64))
        assert out.dtype == dtype
        per = divergence_per_dim(name, mp.to(dtype), mq.to(dtype), 1)
        assert per.dtype == dtype and per.shape == (2, 3)
    a = gaussian_divergence(name, mp, mq, 0.8)
    b = gaussian_divergence(name, mp.double(), mq.double(), 0.8)
    torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ registry and errors


def test_registry():
    assert available() == NAMES
    assert set(REGISTRY) == set(NAMES)

    @register_divergence("half_kl_for_test")
    def half_kl(delta, std):
        return 0.25 * delta * delta

    try:
        assert "half_kl_for_test" in available()
        mp, mq = torch.randn(2, 5), torch.randn(2, 5)
        torch.testing.assert_close(
            gaussian_divergence("half_kl_for_test", mp, mq, 0.7), gaussian_divergence("kl", mp, mq, 0.7) / 2
        )
        with pytest.raises(ValueError, match="half_kl_for_test.*registered twice"):
            register_divergence("half_kl_for_test")(lambda delta, std: delta)
    finally:
        REGISTRY.pop("half_kl_for_test", None)


def test_errors_name_the_offending_value():
    mp, mq = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"'tv'.*fisher, hellinger, js, kl"):
        gaussian_divergence("tv", mp, mq, 1.0)
    with pytest.raises(ValueError, match=r"'tv'.*fisher, hellinger, js, kl"):
        divergence_per_dim("tv", mp, mq, 1.0)
    with pytest.raises(ValueError, match=r"'max'.*mean, sum"):
        gaussian_divergence("kl", mp, mq, 1.0, reduction="max")
    for bad in (0.0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=f"std={bad!r}"):
            gaussian_divergence("kl", mp, mq, bad)
    with pytest.raises(ValueError, match=r"1 bad value.*std=-2\.0"):
        gaussian_divergence("kl", mp, mq, torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match=r"std=0\.0"):
        gaussian_divergence("kl", mp, mq, torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        gaussian_divergence("kl", mp, torch.ones(2, 4), 1.0)
    with pytest.raises(ValueError, match=r"length 2.*got length 3"):
        gaussian_divergence("kl", mp, mq, torch.ones(3))
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(2, 3\)"):
        gaussian_divergence("kl", mp, mq, torch.ones(4, 1))
    with pytest.raises(ValueError, match="dtype"):
        gaussian_divergence("kl", mp, mq.double(), 1.0)
    with pytest.raises(TypeError, match="floating"):
        gaussian_divergence("kl", mp.long(), mq.long(), 1.0)
    with pytest.raises(ValueError, match="batch"):
        gaussian_divergence("kl", torch.tensor(0.0), torch.tensor(1.0), 1.0)


def test_quadrature_constants():
    # the nodes/weights are the standard-normal Gauss-Hermite rule: exact moments up to degree 2n - 1
    z, w = dv._GH_NODES, dv._GH_WEIGHTS
    assert z.dtype == torch.float64 and len(z) == dv.JS_QUADRATURE_NODES
    for k, m in [(0, 1.0), (1, 0.0), (2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0)]:
        assert (w * z**k).sum().item() == pytest.approx(m, rel=1e-12, abs=1e-13)
