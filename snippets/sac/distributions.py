"""Action distributions for SAC: diagonal Gaussian, Independent, tanh squashing.

A SAC policy outputs a mean and a standard deviation per action dimension. The action is
a = tanh(u), u ~ N(mean, diag(std^2)), so that it lies in (-1, 1) (Appendix C of
arXiv:1801.01290). Everything below is about getting the shapes and log-probabilities
of that distribution right.
"""

# --8<-- [start:independent]
import torch
from torch.distributions import Independent, Normal


def diagonal_gaussian(mean, std):
    """Diagonal Gaussian over a vector action.

    mean, std: (batch, action_dim).
    Normal(mean, std) alone has batch_shape (batch, action_dim), event_shape (): it is
    batch*action_dim independent scalars, and log_prob returns (batch, action_dim).
    Independent(..., 1) moves the last dimension into the event: batch_shape (batch,),
    event_shape (action_dim,), and log_prob returns (batch,), the sum over the last dim.
    """
    # log N(a; mu, diag(s^2)) = sum_j log N(a_j; mu_j, s_j^2): a diagonal Gaussian
    # factorises (Bishop 2006, Sec. 2.3)
    return Independent(Normal(mean, std), 1)


# --8<-- [end:independent]


# --8<-- [start:tanh_normal]
import torch
from torch.distributions import (
    Independent,
    Normal,
    TanhTransform,
    TransformedDistribution,
)


def tanh_normal(mean, std):
    """Tanh-squashed diagonal Gaussian: a = tanh(u), u ~ N(mean, diag(std^2)).

    mean, std: (batch, action_dim). Samples: (batch, action_dim), inside (-1, 1).
    log_prob(a): (batch,). entropy(): no closed form (raises NotImplementedError).
    """
    # log pi(a|s) = log mu(u|s) - sum_j log(1 - tanh(u_j)^2)  Eq. (21), arXiv:1801.01290
    # TanhTransform computes log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the
    # stable form. cache_size=1 keeps u from the last sample: log_prob(a) of that
    # sample needs no atanh(a).
    squashed = TransformedDistribution(Normal(mean, std), [TanhTransform(cache_size=1)])
    return Independent(squashed, 1)  # event = last dim: log_prob sums over action_dim


# --8<-- [end:tanh_normal]


# --8<-- [start:tanh_log_prob]
import math

import torch
import torch.nn.functional as F


def tanh_log_prob_naive(u, mean, std):
    """log pi(tanh(u)) written literally.
    u, mean, std: (batch, action_dim) -> (batch,)."""
    gauss = torch.distributions.Normal(mean, std).log_prob(u)
    # log pi(a) = log mu(u) - log(1 - tanh(u)^2)   Eq. (21), arXiv:1801.01290
    return (gauss - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)


def tanh_log_prob_stable(u, mean, std):
    """Same quantity, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    u, mean, std: (batch, action_dim) -> (batch,)."""
    gauss = torch.distributions.Normal(mean, std).log_prob(u)
    # 1 - tanh(u)^2 = 4 / (e^u + e^-u)^2  =>  log(...) = 2 (log 2 - u - softplus(-2u))
    log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))
    return (gauss - log_det).sum(-1)


# --8<-- [end:tanh_log_prob]


import pytest

# Alternatives a critic of the claims would raise; the counterfactuals on
# docs/topics/sac/distributions.md run the deciding tests with them and require them
# to fail.


def normal_without_independent(mean, std):
    """Normal(mean, std) alone: batch_shape (batch, action_dim), no event dims."""
    return Normal(mean, std)


def independent_over_two_dims(mean, std):
    """Independent(Normal, 2): the batch dimension swallowed into the event too."""
    return Independent(Normal(mean, std), 2)


def gaussian_log_prob_of_u(u, mean, std):
    """log mu(u) alone, the Jacobian term of Eq. (21) left out. -> (batch,)."""
    return torch.distributions.Normal(mean, std).log_prob(u).sum(-1)


def tanh_normal_uncached(mean, std):
    """tanh_normal without TanhTransform's cache: log_prob(a) recomputes atanh(a)."""
    squashed = TransformedDistribution(Normal(mean, std), [TanhTransform()])
    return Independent(squashed, 1)


class _SampleKeepsGradient(Independent):
    """An Independent whose sample() is rsample(): the sample stays in the graph."""

    def sample(self, sample_shape=torch.Size()):
        return self.rsample(sample_shape)


def tanh_normal_sample_with_grad(mean, std):
    """tanh_normal whose sample() carries the gradient, as rsample() does."""
    squashed = TransformedDistribution(Normal(mean, std), [TanhTransform(cache_size=1)])
    return _SampleKeepsGradient(squashed, 1)


def tanh_log_prob_clamped(u, mean, std, eps=1e-6):
    """The common guard log(clamp(1 - tanh(u)^2, eps)): finite, but wrong once
    1 - tanh(u)^2 < eps. u, mean, std: (batch, action_dim) -> (batch,)."""
    gauss = torch.distributions.Normal(mean, std).log_prob(u)
    return (gauss - torch.log((1 - torch.tanh(u) ** 2).clamp(min=eps))).sum(-1)


def test_independent_moves_last_dim_into_event(make=diagonal_gaussian):
    torch.manual_seed(0)
    mean, std = torch.randn(5, 3), torch.rand(5, 3) + 0.5
    a = torch.randn(5, 3)
    per_dim = Normal(mean, std)
    joint = make(mean, std)
    assert per_dim.batch_shape == (5, 3) and per_dim.event_shape == ()
    assert joint.batch_shape == (5,) and joint.event_shape == (3,)
    assert per_dim.log_prob(a).shape == (5, 3) and joint.log_prob(a).shape == (5,)
    # Independent's log_prob is the per-dimension log_prob summed over the last dim
    # (float32 rounding of a sum of 3 terms of size ~1: well below 1e-5).
    torch.testing.assert_close(
        joint.log_prob(a), per_dim.log_prob(a).sum(-1), atol=1e-5, rtol=0
    )


def test_diagonal_gaussian_log_prob_is_sum_over_dims(correlation=0.0):
    """A diagonal Gaussian factorises: the full multivariate density (a Cholesky
    solve in MultivariateNormal) equals the sum of 1-D log densities.
    correlation: the off-diagonal correlation of the covariance (0: diagonal)."""
    for seed, dim in ((0, 1), (1, 3), (2, 8)):
        g = torch.Generator().manual_seed(seed)
        mean = torch.randn(4, dim, generator=g, dtype=torch.float64)
        std = torch.rand(4, dim, generator=g, dtype=torch.float64) + 0.5
        a = torch.randn(4, dim, generator=g, dtype=torch.float64)
        # Equicorrelated: rho 11^T + (1 - rho) I, positive definite for 0 <= rho < 1.
        corr = torch.full((dim, dim), correlation, dtype=torch.float64)
        corr.fill_diagonal_(1.0)
        cov = std[:, :, None] * corr * std[:, None, :]
        mvn = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        # float64: 1e-10 leaves 5 orders of magnitude to the rounding error
        torch.testing.assert_close(
            diagonal_gaussian(mean, std).log_prob(a),
            mvn.log_prob(a),
            atol=1e-10,
            rtol=0,
        )


def test_tanh_normal_shapes_bounds_and_log_prob(
    by_hand_log_prob=tanh_log_prob_naive, make=tanh_normal
):
    torch.manual_seed(0)
    mean, std = torch.randn(64, 2), torch.rand(64, 2) + 0.1
    dist = make(mean, std)
    a = dist.rsample()
    assert a.shape == (64, 2) and dist.log_prob(a).shape == (64,)
    assert a.abs().max() < 1.0, "|u| < 9 here: tanh(u) stays inside (-1, 1)"
    # Change of variables, Eq. (21) of arXiv:1801.01290, by hand from u = atanh(a),
    # all in float64 (|u| < 5 here, so atanh loses < 1e-12): agreement to 1e-9.
    dist64 = make(mean.double(), std.double())
    a64 = dist64.rsample()
    by_hand = by_hand_log_prob(torch.atanh(a64), mean.double(), std.double())
    torch.testing.assert_close(dist64.log_prob(a64), by_hand, atol=1e-9, rtol=0)
    # Without the Jacobian term the density would be off by sum log(1 - a^2) < 0.
    gauss_only = Normal(mean.double(), std.double()).log_prob(torch.atanh(a64)).sum(-1)
    assert (dist64.log_prob(a64) - gauss_only > 0).all()
    # Far in the tail, float32 tanh rounds to exactly 1: the cached u (cache_size=1)
    # keeps log_prob finite; recomputing u = atanh(a) from a copy gives nan.
    far = make(torch.full((1, 1), 10.0), torch.full((1, 1), 0.1))
    a_far = far.rsample()
    assert a_far.item() == 1.0 and torch.isfinite(far.log_prob(a_far)).all()
    assert torch.isnan(far.log_prob(a_far.clone())).all()


def test_stable_tanh_log_prob_matches_naive_and_stays_finite(
    stable_log_prob=tanh_log_prob_stable, u_far=20.0
):
    mean, std = torch.zeros(1, 1), torch.ones(1, 1)
    u_moderate = torch.linspace(-4, 4, 41).reshape(-1, 1)
    # float32: log(1 - tanh(4)^2) = log(1.3e-3) loses about 1e-4 relative precision
    torch.testing.assert_close(
        stable_log_prob(u_moderate, mean, std),
        tanh_log_prob_naive(u_moderate, mean, std),
        atol=1e-4,
        rtol=1e-4,
    )
    u_large = torch.tensor([[u_far]])  # tanh(20) == 1.0 in float32: naive takes log(0)
    # log(1 - tanh^2 u) = log 0 = -inf, so the naive log pi = gauss - (-inf) = +inf
    assert (tanh_log_prob_naive(u_large, mean, std) == math.inf).all()
    stable = stable_log_prob(u_large, mean, std)
    # For large u, log(1 - tanh(u)^2) -> 2 log 2 - 2u (softplus(-40) ~ 4e-18).
    gauss = Normal(mean, std).log_prob(u_large).sum(-1)
    torch.testing.assert_close(
        stable, gauss - (2 * math.log(2) - 2 * u_far), atol=1e-5, rtol=0
    )
    # Any batch shape: both sum over the last (action) dimension only and agree with
    # the density of tanh_normal (float64, |u| < 4 here: atanh(tanh(u)) inside
    # log_prob loses < 1e-12).
    g = torch.Generator().manual_seed(0)
    u3, m3 = torch.randn(2, 2, 5, 3, generator=g, dtype=torch.float64)
    s3 = torch.rand(5, 3, generator=g, dtype=torch.float64) + 0.5
    density = tanh_normal(m3, s3).log_prob(torch.tanh(u3))
    assert density.shape == (2, 5)
    for log_prob in (tanh_log_prob_naive, stable_log_prob):
        torch.testing.assert_close(log_prob(u3, m3, s3), density, atol=1e-10, rtol=0)


def test_rsample_carries_gradient_sample_does_not(make=tanh_normal):
    torch.manual_seed(0)
    n = 20_000
    mean = torch.zeros(n, 1, requires_grad=True)
    std = torch.ones(n, 1)
    dist = make(mean, std)
    assert dist.sample().grad_fn is None
    a = dist.rsample()
    assert a.grad_fn is not None
    # d/dmean tanh(mean + std*eps) = 1 - tanh(u)^2, exactly, sample by sample ...
    (grad,) = torch.autograd.grad(a.sum(), mean)
    torch.testing.assert_close(grad, 1 - a.detach() ** 2, atol=1e-6, rtol=0)
    # ... and its mean estimates E[1 - tanh(U)^2], U ~ N(0, 1), computed here by
    # quadrature: within 4 standard errors (sd of 1 - tanh^2 U is about 0.3).
    u = torch.linspace(-12, 12, 24_001, dtype=torch.float64)
    density = torch.exp(-(u**2) / 2) / math.sqrt(2 * math.pi)
    exact = torch.trapezoid((1 - torch.tanh(u) ** 2) * density, u).item()
    se = grad.std().item() / math.sqrt(n)
    assert abs(grad.mean().item() - exact) < 4 * se, (grad.mean().item(), exact, se)


def test_tanh_normal_has_no_closed_form_entropy(make=tanh_normal):
    # Not because of tanh: TransformedDistribution defines no entropy() for any
    # transform, not even an affine one, whose entropy has a closed form.
    scaled = TransformedDistribution(
        Normal(torch.zeros(2), torch.ones(2)),
        [torch.distributions.AffineTransform(0.0, 2.0)],
    )
    with pytest.raises(NotImplementedError):
        scaled.entropy()
    dist = make(torch.zeros(2, 1), torch.ones(2, 1))
    try:
        dist.entropy()
    except NotImplementedError:
        return
    raise AssertionError("expected NotImplementedError from tanh_normal(...).entropy()")
