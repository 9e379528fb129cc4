"""Exact log-likelihood of a flow model through the instantaneous change of variables.

Along a trajectory of dx/dt = v(x, t):   d log p_t(x_t) / dt = -div v(x_t, t)
(Chen et al., Neural ODE, arXiv:1806.07366, Theorem 1; FFJORD, arXiv:1810.01367,
Sec. 2.1).
Integrating from the data point x_0 at t = 0 up to the noise end t = 1:

    log p_0(x_0) = log N(x_1; 0, I) + int_0^1 div v(x_t, t) dt

so one likelihood costs a whole ODE solve plus a divergence (d backward passes, or a
Hutchinson estimate as in FFJORD) at every step.
"""

import math

# --8<-- [start:divergence]
import torch


def velocity_and_divergence(velocity, x: torch.Tensor, t: torch.Tensor):
    """v(x, t) and its exact divergence div_x v = tr(dv/dx): one forward pass, then one
    autograd pass per dimension. x: (batch, d), t: (batch,).
    returns v (batch, d), div (batch,)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        div = torch.zeros(x.shape[0], dtype=x.dtype)
        # d backward passes: the cost FFJORD replaces by a Hutchinson estimate
        for i in range(x.shape[1]):
            grad_i = torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0]
            div = div + grad_i[:, i]
    return v.detach(), div.detach()


# --8<-- [end:divergence]


# --8<-- [start:log_likelihood]
import math

import torch

from snippets.flow_matching.likelihood import velocity_and_divergence


def ode_log_likelihood(velocity, x0: torch.Tensor, num_steps: int = 200):
    """log p_0(x0) = log N(x1; 0, I) + int_0^1 div v dt, with RK4 on the augmented state
    (x, accumulated divergence) from t = 0 to t = 1. x0: (batch, d) -> (batch,), and the
    number of velocity evaluations used (each with d extra backward passes)."""

    def f(x, t):
        t = torch.full((x.shape[0],), t, dtype=x.dtype)
        return velocity_and_divergence(velocity, x, t)

    x, acc, h, nfe = x0, torch.zeros(x0.shape[0], dtype=x0.dtype), 1.0 / num_steps, 0
    for k in range(num_steps):
        t = k * h
        k1 = f(x, t)
        k2 = f(x + h / 2 * k1[0], t + h / 2)
        k3 = f(x + h / 2 * k2[0], t + h / 2)
        k4 = f(x + h * k3[0], t + h)
        nfe += 4
        x = x + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        acc = acc + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])  # int div v dt
    log_p1 = -0.5 * (x**2).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    # instantaneous change of variables, Sec. 2.1 of arXiv:1810.01367
    return log_p1 + acc, nfe


# --8<-- [end:log_likelihood]


def noise_density_only(velocity, x0: torch.Tensor, num_steps: int = 200):
    """log N(x1; 0, I) at the ODE's end point, without the divergence integral: a
    counterfactual of ode_log_likelihood (same solver, same end point)."""
    x = x0
    h = 1.0 / num_steps
    with torch.no_grad():
        for k in range(num_steps):
            t = torch.full((x.shape[0],), k * h, dtype=x.dtype)
            th = t + h / 2
            k1 = velocity(x, t)
            k2 = velocity(x + h / 2 * k1, th)
            k3 = velocity(x + h / 2 * k2, th)
            k4 = velocity(x + h * k3, t + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    log_p1 = -0.5 * (x**2).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return log_p1, 4 * num_steps


def test_ode_likelihood_matches_closed_form(log_likelihood=ode_log_likelihood):
    from snippets.flow_matching.gaussian import (
        COV,
        MU,
        marginal_velocity,
        sample_gaussian_data,
    )

    x0 = sample_gaussian_data(64, torch.Generator().manual_seed(0), torch.float64)
    v = lambda x, t: marginal_velocity(x, t, MU, COV)
    logp, nfe = log_likelihood(v, x0, num_steps=25)
    exact = torch.distributions.MultivariateNormal(MU, COV).log_prob(x0)
    torch.testing.assert_close(logp, exact, atol=1e-5, rtol=0)
    # 25 RK4 steps x 4 velocity evaluations, each followed by d = 2 backward passes
    assert nfe == 100
    # The divergence term is not a detail: the noise density at the end point alone is
    # off by -1/2 log det Sigma = +1.10 nats for every point.
    lam, U = torch.linalg.eigh(COV)
    x1 = (x0 - MU) @ (U / lam.sqrt()) @ U.T  # the end point Sigma^{-1/2} (x0 - mu)
    noise_only = -0.5 * (x1**2).sum(-1) - math.log(2 * math.pi)  # log N(x1; 0, I)
    half_logdet = torch.full_like(exact, -0.5 * torch.logdet(COV).item())
    torch.testing.assert_close(exact - noise_only, half_logdet, atol=1e-10, rtol=0)
    assert (exact - noise_only).abs().min() > 1.0


def test_divergence_matches_trace_of_closed_form_jacobian():
    from snippets.flow_matching.gaussian import COV, MU, marginal_velocity

    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    # v* is affine in x with matrix K_t C_t^{-1}: its divergence is the trace, the same
    # for every x.
    eye = torch.eye(2, dtype=torch.float64)
    C, K = 0.7**2 * COV + 0.3**2 * eye, 0.3 * eye - 0.7 * COV
    expected = torch.trace(K @ torch.linalg.inv(C)).expand(5)
    v_star = lambda x, t: marginal_velocity(x, t, MU, COV)
    v, div = velocity_and_divergence(v_star, x, t)
    torch.testing.assert_close(v, marginal_velocity(x, t, MU, COV), atol=0, rtol=0)
    torch.testing.assert_close(div, expected, atol=1e-10, rtol=0)


def test_rk4_stages_and_dtypes():
    # RK4 on [t_k, t_k + h] evaluates the velocity at t_k, t_k + h/2 (twice) and
    # t_k + h, with times in the data's dtype (recorded here for h = 1/3, which no
    # binary float holds exactly). With v = 0 nothing moves and the log-likelihood is
    # the noise density log N(x0; 0, I) itself.
    seen = []

    def still(x, t):
        seen.append(t)
        return 0 * x  # zero, but a function of x: its divergence is 0

    x0 = torch.randn(
        4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    logp, nfe = ode_log_likelihood(still, x0, num_steps=3)
    h = 1.0 / 3
    stages = [
        t for k in range(3) for t in (k * h, k * h + h / 2, k * h + h / 2, k * h + h)
    ]
    assert nfe == len(seen) == 12
    for t, expected in zip(seen, stages):
        assert t.dtype == torch.float64 and t.shape == (4,)
        torch.testing.assert_close(
            t, torch.full((4,), expected, dtype=torch.float64), atol=1e-15, rtol=0
        )
    noise = torch.distributions.Normal(0.0, 1.0).log_prob(x0).sum(-1)
    torch.testing.assert_close(logp, noise, atol=1e-12, rtol=0)
    # Low-precision data stay in their dtype, divergence and likelihood alike:
    # v = 2x has divergence 2 d = 4 at every point.
    xb = x0.to(torch.bfloat16)
    v, div = velocity_and_divergence(lambda x, t: 2 * x, xb, torch.zeros(4))
    assert v.dtype == div.dtype == torch.bfloat16 and (div == 4).all()
    assert ode_log_likelihood(still, xb, num_steps=1)[0].dtype == torch.bfloat16
