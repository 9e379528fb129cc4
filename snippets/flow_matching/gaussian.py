"""Gaussian data N(mu, Sigma): every quantity of the linear path has a closed form.

With x0 ~ N(mu, Sigma), x1 ~ N(0, I) independent and x_t = (1 - t) x0 + t x1:

    x_t ~ N((1 - t) mu, C_t),   C_t = (1 - t)^2 Sigma + t^2 I
    Cov(x1 - x0, x_t) = K_t = t I - (1 - t) Sigma
    v*(x, t) = E[x1 - x0 | x_t = x] = -mu + K_t C_t^{-1} (x - (1 - t) mu)
               (Gaussian conditioning)

The ODE dx/dt = v*(x, t) from x1 at t = 1 has the exact solution
    x_t = (1 - t) mu + C_t^{1/2} x1
(C_t, K_t and Sigma share eigenvectors), so x_0 = mu + Sigma^{1/2} x1 is an exact
sample. The marginal velocity is the minimiser of the flow matching loss (Theorem 2,
arXiv:2210.02747; the conditional-mean fact: docs/foundations/mse-conditional-mean.md).
"""

# --8<-- [start:closed_form]
import torch


def marginal_mean_cov(t, mu: torch.Tensor, cov: torch.Tensor):
    """p_t = N((1 - t) mu, (1 - t)^2 Sigma + t^2 I). t: float or (batch,); mu: (d,);
    cov: (d, d). returns mean (batch, d) or (d,), cov (batch, d, d) or (d, d)."""
    t = torch.as_tensor(t, dtype=mu.dtype)
    eye = torch.eye(mu.shape[0], dtype=mu.dtype)
    tt = t[..., None, None]
    return (1 - t)[..., None] * mu, (1 - tt) ** 2 * cov + tt**2 * eye


def marginal_velocity(x: torch.Tensor, t, mu: torch.Tensor, cov: torch.Tensor):
    """v*(x, t) = E[x1 - x0 | x_t = x] = -mu + K_t C_t^{-1} (x - (1 - t) mu).

    x: (batch, d); t: float or (batch,); mu: (d,); cov: (d, d). returns (batch, d).
    Sigma = U diag(lam) U^T, so
    K_t C_t^{-1} = U diag((t - (1 - t) lam) / ((1 - t)^2 lam + t^2)) U^T.
    """
    t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None]  # (batch, 1)
    lam, U = torch.linalg.eigh(cov)
    # eigenvalues of K_t C_t^{-1}
    gain = (t - (1 - t) * lam) / ((1 - t) ** 2 * lam + t**2)
    return -mu + (((x - (1 - t) * mu) @ U) * gain) @ U.T


# --8<-- [end:closed_form]


# --8<-- [start:exact_flow]
import torch


def exact_flow(x1: torch.Tensor, t, mu: torch.Tensor, cov: torch.Tensor):
    """Exact solution of dx/dt = v*(x, t) started at x1 (t = 1):
    x_t = (1 - t) mu + C_t^{1/2} x1.

    x1: (batch, d); t: float; returns (batch, d). At t = 0: mu + Sigma^{1/2} x1.
    """
    lam, U = torch.linalg.eigh(cov)
    s = torch.sqrt((1 - t) ** 2 * lam + t**2)  # eigenvalues of C_t^{1/2}
    return (1 - t) * mu + x1 @ (U * s) @ U.T


# --8<-- [end:exact_flow]


# --8<-- [start:example]
import torch

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)


def sample_gaussian_data(n: int, generator=None, dtype=torch.float32):
    """n samples of N(MU, COV), (n, 2)."""
    L = torch.linalg.cholesky(COV)
    z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (MU + z @ L.T).to(dtype)


# --8<-- [end:example]


def test_closed_form_is_the_conditional_mean():
    # Conditional mean <=> the residual (x1 - x0) - v*(x_t) is orthogonal to every
    # function of x_t; here to 1, x_t and x_t^2.
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x0 = sample_gaussian_data(n, g, torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    for t in (0.2, 0.5, 0.8):
        xt = (1 - t) * x0 + t * x1
        resid = (x1 - x0) - marginal_velocity(xt, t, MU, COV)
        feats = torch.cat([torch.ones(n, 1, dtype=torch.float64), xt, xt**2], dim=1)
        corr = (resid[:, :, None] * feats[:, None, :]).mean(0)
        assert corr.abs().max() < 0.02, f"t={t}: residual correlates with x_t: {corr}"


def test_exact_flow_solves_the_ode():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        h = 1e-6
        fd = (exact_flow(x1, t + h, MU, COV) - exact_flow(x1, t - h, MU, COV)) / (2 * h)
        v = marginal_velocity(exact_flow(x1, t, MU, COV), t, MU, COV)
        torch.testing.assert_close(fd, v, atol=1e-7, rtol=0)
    torch.testing.assert_close(exact_flow(x1, 1.0, MU, COV), x1, atol=1e-12, rtol=0)


# --8<-- [start:net_vs_closed_form]
import torch

from snippets.flow_matching.gaussian import (
    COV,
    MU,
    marginal_velocity,
    sample_gaussian_data,
)
from snippets.flow_matching.path import interpolate, target_velocity


def velocity_errors(model, n: int = 20_000, seed: int = 123):
    """Relative RMS distance to the closed-form marginal velocity v*, of (a) the trained
    network and (b) the per-pair regression target x1 - x0, on x_t with
    t ~ U[0.02, 0.98]."""
    g = torch.Generator().manual_seed(seed)
    x0 = sample_gaussian_data(n, g, torch.float64)
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64)
    xt = interpolate(x0, x1, t)
    v_star = marginal_velocity(xt, t, MU, COV)
    with torch.no_grad():
        v_net = model(xt.float(), t.float()).double()
    rms = lambda a: a.pow(2).sum(-1).mean().sqrt()
    err_net = rms(v_net - v_star) / rms(v_star)
    err_target = rms(target_velocity(x0, x1) - v_star) / rms(v_star)
    return err_net.item(), err_target.item()


# --8<-- [end:net_vs_closed_form]


def test_trained_network_matches_marginal_velocity(steps=1500):
    from snippets.flow_matching.model import train_flow_matching

    data = lambda n, g: sample_gaussian_data(n, g)
    model = train_flow_matching(data, steps=steps, hidden=128, seed=0)
    err_net, err_target = velocity_errors(model)
    assert velocity_errors(model) == (err_net, err_target)  # seeded
    # The network is trained on the noisy per-pair targets x1 - x0, yet lands on their
    # conditional mean: within 5 % (relative RMS) of v*, while the targets it saw are
    # off by more than 50 %.
    assert err_net < 0.05, f"network vs closed-form v*: relative RMS {err_net:.3f}"
    assert err_target > 0.5, f"per-pair targets should be far from v*: {err_target:.3f}"
    # How far off exactly: E|x1 - x0 - v*|^2 = E tr Cov(x1 - x0 | x_t) =
    # E_t tr(I + Sigma - K_t C_t^{-1} K_t), and E|v*|^2 = E|x1 - x0|^2 minus that, with
    # E|x1 - x0|^2 = tr(I + Sigma) + |mu|^2 (t ~ U[0.02, 0.98], midpoint rule). Over
    # 20 000 samples the ratio's standard error is about 0.0055 (delta method on the two
    # means); 5 of them.
    eye = torch.eye(2, dtype=torch.float64)
    resid = 0.0
    for t in 0.02 + 0.96 * (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000:
        K, C = t * eye - (1 - t) * COV, (1 - t) ** 2 * COV + t**2 * eye
        resid += torch.trace(eye + COV - K @ torch.linalg.solve(C, K)).item() / 1000
    total = torch.trace(eye + COV).item() + (MU @ MU).item()
    expected = (resid / (total - resid)) ** 0.5  # 0.957
    assert abs(err_target - expected) < 0.03, (err_target, expected)


def test_exact_flow_pushes_the_noise_onto_the_marginal():
    # x_t = (1 - t) mu + A_t x1 with A_t = C_t^{1/2} (exact_flow, by eigendecomposition)
    # maps N(0, I) to N((1 - t) mu, A_t A_t^T): marginal_mean_cov (written from the
    # definition of x_t) must give exactly that, for t as a Python float or a batch.
    eye = torch.eye(2, dtype=torch.float64)
    for t in (0.0, 0.3, 0.75, 1.0):
        A_T = exact_flow(eye, t, MU, COV) - exact_flow(0 * eye, t, MU, COV)  # rows
        mean, cov = marginal_mean_cov(t, MU, COV)
        torch.testing.assert_close(
            mean, exact_flow(0 * eye, t, MU, COV)[0], atol=1e-12, rtol=0
        )
        torch.testing.assert_close(cov, A_T.T @ A_T, atol=1e-12, rtol=0)
    ts = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    means, covs = marginal_mean_cov(ts, MU, COV)
    assert means.shape == (3, 2) and covs.shape == (3, 2, 2)
    torch.testing.assert_close(covs[2], eye, atol=0, rtol=0)  # t = 1: the noise
    torch.testing.assert_close(means[0], MU, atol=0, rtol=0)  # t = 0: the data
    torch.testing.assert_close(covs[0], COV, atol=0, rtol=0)
    # Low-precision inputs keep their dtype.
    bf = torch.bfloat16
    assert all(a.dtype == bf for a in marginal_mean_cov(0.3, MU.to(bf), COV.to(bf)))


def test_sample_gaussian_data_is_the_cholesky_construction():
    # x = MU + L z with L L^T = COV and z the generator's standard normal draws (in
    # float64, then cast): seeded, N(MU, COV) by construction.
    x = sample_gaussian_data(5, torch.Generator().manual_seed(3), torch.float64)
    z = torch.randn(
        5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    L = torch.linalg.cholesky(COV)
    torch.testing.assert_close(x, MU + z @ L.T, atol=1e-15, rtol=0)
    x32 = sample_gaussian_data(5, torch.Generator().manual_seed(3))
    assert x32.dtype == torch.float32 and torch.equal(x32, x.float())


def test_flow_matching_loss_prefers_the_marginal_velocity():
    from snippets.flow_matching.path import flow_matching_loss

    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4096, 2, generator=g, dtype=torch.float64)
    x0 = x0 @ torch.linalg.cholesky(COV).T + MU
    # (b) On the same draws the marginal velocity E[x1 - x0 | x_t] scores lower than the
    # zero field or its negation (the velocity of the other time convention), yet not 0:
    # the per-pair targets are noisy, and what is left is
    # int_0^1 tr Cov(x1 - x0 | x_t) dt = int_0^1 tr(I + Sigma - K_t C_t^{-1} K_t) dt.
    loss = lambda m: flow_matching_loss(m, x0, torch.Generator().manual_seed(4)).item()
    v_star = lambda x, t: marginal_velocity(x, t, MU, COV)
    l_star = loss(v_star)
    l_zero = loss(lambda x, t: torch.zeros_like(x))
    l_neg = loss(lambda x, t: -v_star(x, t))
    assert l_star < 0.7 * l_zero < 0.7 * l_neg, (l_star, l_zero, l_neg)
    eye = torch.eye(2, dtype=torch.float64)
    ts = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000  # midpoint rule
    floor = 0.0
    for t in ts:
        K, C = t * eye - (1 - t) * COV, (1 - t) ** 2 * COV + t**2 * eye
        floor += torch.trace(eye + COV - K @ torch.linalg.solve(C, K)).item() / len(ts)
    # 4096 samples: the Monte Carlo error is a few per cent
    assert abs(l_star - floor) < 0.1 * floor, (l_star, floor)
