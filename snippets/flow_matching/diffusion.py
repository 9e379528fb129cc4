"""Diffusion (DDPM, DDIM) against flow matching, on Gaussian data where the optimal
noise predictor and the marginal velocity are both exact (no training noise in the
comparison).

DDPM (arXiv:2006.11239):
    q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)                          # Eq. (4)
    x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) / sqrt(alpha_t)
              + sigma_t z                                               # Algorithm 2
DDIM (arXiv:2010.02502):
    x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - s_t^2) eps
              + s_t z                                                      # Eq. (12)
    s_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})
                                                                           # Eq. (16)
Here the diffusion index t counts noise levels 1..T (x_T noise), unlike the flow time
in [0, 1].
"""

# --8<-- [start:ddpm_forward]
import torch


def ddpm_schedule(T: int = 100, dtype=torch.float64):
    """Linear betas (scaled for T = 100 steps); returns betas, alphas, abar, each
    (T + 1,), index 0 unused (abar_0 = 1: no noise)."""
    betas = torch.linspace(1e-3, 0.2, T, dtype=dtype)
    betas = torch.cat([torch.zeros(1, dtype=dtype), betas])
    alphas = 1 - betas
    return betas, alphas, torch.cumprod(alphas, 0)


def ddpm_forward(x0: torch.Tensor, t: int, abar, generator=None, eps=None):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, a draw of q(x_t | x0) by
    reparameterization. x0, eps: (batch, d). Without eps a fresh one is drawn on every
    call (same x0, same t, different x_t); with eps given, x_t is fixed."""
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps  # Eq. (4), arXiv:2006.11239


# --8<-- [end:ddpm_forward]


# --8<-- [start:gaussian_eps]
import torch


def gaussian_eps(x: torch.Tensor, t: int, abar: torch.Tensor, mu, cov) -> torch.Tensor:
    """Optimal noise predictor E[eps | x_t = x] for data N(mu, cov):
    sqrt(1 - abar) (abar cov + (1 - abar) I)^{-1} (x - sqrt(abar) mu). x: (batch, d)."""
    a = abar[t]
    C = a * cov + (1 - a) * torch.eye(x.shape[1], dtype=x.dtype)
    return (1 - a).sqrt() * torch.linalg.solve(C, (x - a.sqrt() * mu).T).T


# --8<-- [end:gaussian_eps]


# --8<-- [start:samplers]
import torch


def ddpm_ancestral(xT, eps_fn, betas, alphas, abar, generator=None):
    """DDPM ancestral sampling, Algorithm 2 of arXiv:2006.11239 with sigma_t^2 = beta_t.
    xT: (batch, d); eps_fn(x, t) -> (batch, d). Draws a fresh z at every step but the
    last. No autograd graph."""
    x = xT
    with torch.no_grad():
        for t in range(len(betas) - 1, 0, -1):
            z = torch.zeros_like(x)
            if t > 1:
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            # Algorithm 2, line 4
            x = (x - betas[t] / (1 - abar[t]).sqrt() * eps_fn(x, t)) / alphas[t].sqrt()
            x = x + betas[t].sqrt() * z
    return x


def ddim(xT, eps_fn, abar, eta: float = 0.0, generator=None):
    """DDIM sampling, Eq. (12) of arXiv:2010.02502; eta = 0 draws no noise at all.
    No autograd graph."""
    x = xT
    with torch.no_grad():
        for t in range(len(abar) - 1, 0, -1):
            eps = eps_fn(x, t)
            x0_hat = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
            # Eq. (16)
            s = eta * ((1 - abar[t - 1]) / (1 - abar[t])).sqrt()
            s = s * (1 - abar[t] / abar[t - 1]).sqrt()
            z = torch.zeros_like(x)
            if eta > 0:
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            # Eq. (12)
            x = abar[t - 1].sqrt() * x0_hat + (1 - abar[t - 1] - s**2).sqrt() * eps
            x = x + s * z
    return x


# --8<-- [end:samplers]


import pytest

from snippets.flow_matching.gaussian import COV, MU, exact_flow, marginal_velocity
from snippets.flow_matching.sampling import euler_sample

F64 = torch.float64


@pytest.fixture
def randn():
    """randn(seed, *shape): float64 standard normal draws from their own seed."""
    return lambda seed, *shape: torch.randn(
        *shape, generator=torch.Generator().manual_seed(seed), dtype=F64
    )


@pytest.fixture
def spread_from_one_start(randn):
    """spread(sampler, n_runs): run a sampler n_runs times from ONE initial noise (the
    rows of a batch, each row drawing its own per-step noise); returns the
    per-dimension std of the outputs."""

    def spread(sampler, n_runs=2000):
        x_start = randn(7, 1, 2).expand(n_runs, 2)
        return sampler(x_start, torch.Generator().manual_seed(8)).std(0)

    return spread


@pytest.fixture
def moments_ok():
    """moments_ok(x): whether samples x have the data's mean and covariance. 20 000
    samples: standard errors ~0.005 (mean) and ~0.007 (covariance entries); the rest of
    the 0.05 budget is for the bias of a 100-step sampler."""

    def check(x, tol=0.05):
        mean_err = (x.mean(0) - MU).abs().max().item()
        cov_err = (torch.cov(x.T) - COV).abs().max().item()
        return mean_err < tol and cov_err < tol, (mean_err, cov_err)

    return check


def test_ddpm_schedule_is_linear_in_float64():
    # beta_1..beta_T evenly spaced from 1e-3 to 0.2 (T = 100: the page's numbers are
    # for this schedule), beta_0 = 0 (abar_0 = 1, no noise), abar the running product.
    betas, alphas, abar = ddpm_schedule()
    assert betas.dtype == alphas.dtype == abar.dtype == F64 and len(betas) == 101
    assert betas[0] == 0 and betas[1] == 1e-3 and betas[100] == 0.2
    torch.testing.assert_close(
        betas[2:] - betas[1:-1],
        torch.full((99,), 0.199 / 99, dtype=F64),
        atol=1e-15,
        rtol=0,
    )
    torch.testing.assert_close(alphas, 1 - betas, atol=0, rtol=0)
    torch.testing.assert_close(abar, torch.cumprod(1 - betas, 0), atol=0, rtol=0)


def test_ddpm_noise_enters_as_in_algorithm_2():
    # With a zero noise predictor each step is x <- x / sqrt(alpha_t) + sqrt(beta_t) z_t
    # (no z at t = 1), so from x_T = 0 the sample is
    # sum_{t=2..T} sqrt(beta_t / abar_{t-1}) z_t, z_T drawn first.
    betas, alphas, abar = ddpm_schedule()
    zero = lambda x, t: torch.zeros_like(x)
    out = ddpm_ancestral(
        torch.zeros(3, 2, dtype=F64),
        zero,
        betas,
        alphas,
        abar,
        torch.Generator().manual_seed(4),
    )
    g = torch.Generator().manual_seed(4)
    expected = torch.zeros(3, 2, dtype=F64)
    for t in range(100, 1, -1):
        z = torch.randn(3, 2, generator=g, dtype=F64)
        expected = expected + (betas[t] / abar[t - 1]).sqrt() * z
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_ddim_with_eta_1_is_the_ddpm_posterior_step():
    # Song et al. 2020, Eq. (16): with eta = 1 a DDIM step draws from the forward
    # process posterior q(x_{t-1} | x_t, x0 = x0_hat) of Ho et al. 2020, Eqs. (6)-(7):
    # mean  sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat
    #       + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    # variance beta_t (1 - abar_{t-1}) / (1 - abar_t). A two-level schedule
    # (abar_{t-1}, abar_t) makes ddim take exactly that one step; eta = 0 keeps the
    # mean of Eq. (12) and draws no random number.
    betas, alphas, abar = ddpm_schedule()
    g = torch.Generator().manual_seed(5)
    x, eps = (torch.randn(5, 2, generator=g, dtype=F64) for _ in range(2))
    for t in (2, 30, 90):
        pair = abar[[t - 1, t]]
        x0_hat = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        c0 = abar[t - 1].sqrt() * betas[t] / (1 - abar[t])
        ct = alphas[t].sqrt() * (1 - abar[t - 1]) / (1 - abar[t])
        var = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
        z = torch.randn(5, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
        out = ddim(x, lambda x_, k: eps, pair, 1.0, torch.Generator().manual_seed(6))
        torch.testing.assert_close(
            out, c0 * x0_hat + ct * x + var.sqrt() * z, atol=1e-12, rtol=0
        )
        g0 = torch.Generator().manual_seed(6)
        out0 = ddim(x, lambda x_, k: eps, pair, 0.0, g0)
        mean0 = abar[t - 1].sqrt() * x0_hat + (1 - abar[t - 1]).sqrt() * eps
        torch.testing.assert_close(out0, mean0, atol=1e-12, rtol=0)
        assert torch.equal(g0.get_state(), torch.Generator().manual_seed(6).get_state())


def ddpm_mean_only(xT, eps_fn, betas, alphas, abar, generator=None):
    """Algorithm 2 of arXiv:2006.11239 without its sigma_t z term: each step keeps
    only its mean, no noise after x_T (a counterfactual sampler). xT: (batch, d)."""
    x = xT
    with torch.no_grad():
        for t in range(len(betas) - 1, 0, -1):
            x = (x - betas[t] / (1 - abar[t]).sqrt() * eps_fn(x, t)) / alphas[t].sqrt()
    return x


def test_ddpm_ancestral_differs_from_one_initial_noise(
    spread_from_one_start, randn, moments_ok, sampler_fn=ddpm_ancestral
):
    def ancestral_given_xT(betas, alphas, abar, mu=MU, cov=COV):
        """Exact law of DDPM's ancestral sample given x_T, for data N(mu, cov) and the
        exact eps predictor: eps is affine in x, so each step is
        x <- M_t x + c_t + sqrt(beta_t) z, M_t = (I - beta_t C_t^{-1}) / sqrt(alpha_t),
        C_t = abar_t cov + (1 - abar_t) I. returns (A, P): the sample is
        A x_T + const + N(0, P)."""
        eye = torch.eye(cov.shape[0], dtype=cov.dtype)
        A, P = eye.clone(), torch.zeros_like(cov)
        for t in range(len(betas) - 1, 0, -1):
            C = abar[t] * cov + (1 - abar[t]) * eye
            M = (eye - betas[t] * torch.linalg.inv(C)) / alphas[t].sqrt()
            A, P = M @ A, M @ P @ M.T + (betas[t] * eye if t > 1 else 0 * eye)
        return A, P

    betas, alphas, abar = ddpm_schedule()
    eps_fn = lambda x, t: gaussian_eps(x, t, abar, MU, COV)
    sampler = lambda xT, g: sampler_fn(xT, eps_fn, betas, alphas, abar, g)
    spread = spread_from_one_start(sampler)
    # From one x_T the outputs scatter with the exact conditional std sqrt(diag P); a
    # sample std of 2000 runs has relative standard error 1 / sqrt(2 * 2000) = 1.6 %:
    # 5 of them.
    A, P = ancestral_given_xT(betas, alphas, abar)
    rtol = 5 / (2 * 2000) ** 0.5
    torch.testing.assert_close(spread, P.diag().sqrt(), atol=0, rtol=rtol)
    # Nearly all of that randomness comes from the per-step z: x_T moves the sample by
    # less than 1 % of its own change (operator norm of A), and the conditional variance
    # is as large as the data's.
    assert torch.linalg.matrix_norm(A, 2) < 0.01
    assert (P.diag() > 0.9 * COV.diag()).all(), P
    # ...and the sampler is correct: from random x_T it reproduces N(MU, COV).
    x = sampler(randn(1, 20_000, 2), torch.Generator().manual_seed(2))
    ok, errs = moments_ok(x)
    assert ok, f"DDPM moments off: {errs}"


def ddpm_without_noise(xT, eps_fn, abar, eta=0.0, generator=None):
    """DDPM's ancestral step with its noise left out (ddpm_mean_only), called like ddim:
    deterministic, but not DDIM (a counterfactual of the eta = 0 sampler)."""
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return ddpm_mean_only(xT, eps_fn, 1 - alphas, alphas, abar, generator)


def test_ddim_eta0_is_deterministic_from_one_initial_noise(
    spread_from_one_start, randn, moments_ok, eta=0.0, sampler=ddim
):
    # sampler = ddpm_without_noise: deterministic too, does it reach the data?
    _, _, abar = ddpm_schedule()
    eps_fn = lambda x, t: gaussian_eps(x, t, abar, MU, COV)
    run = lambda xT, g: sampler(xT, eps_fn, abar, eta, g)
    spread0 = spread_from_one_start(run, 200)
    spread1 = spread_from_one_start(lambda xT, g: ddim(xT, eps_fn, abar, 1.0, g), 2000)
    assert torch.equal(spread0, torch.zeros(2, dtype=torch.float64)), spread0
    # eta = 1 is random again: a spread of the order of the data std (0.71, 0.63), far
    # above the 1.6 % relative sampling error of a std over 2000 runs.
    assert (spread1 > 0.5 * COV.diag().sqrt()).all(), f"DDIM eta=1: {spread1}"
    ok, errs = moments_ok(sampler(randn(1, 20_000, 2), eps_fn, abar, eta))
    assert ok, f"DDIM eta=0 moments off: {errs}"


def marginal_preserving_sde_sample(velocity, x1, num_steps, noise_level=0.7):
    """A counterfactual of euler_sample: from x1 at t = 1, Flow-GRPO's SDE
    (snippets/flow_grpo/sde.py, Eq. (8), arXiv:2505.05470), which has the ODE's
    marginals but draws fresh noise at every step (seeded; every row its own noise).
    The first step, where sigma_t is infinite, is a plain Euler step. x1: (batch, d)."""
    from snippets.flow_grpo.sde import sde_step_with_logprob
    from snippets.flow_matching.sampling import time_grid

    ts, n = time_grid(num_steps, x1.dtype), x1.shape[0]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = x1 + velocity(x1, ts[0].expand(n)) * (ts[1] - ts[0])
        for t, t_next in zip(ts[1:-1], ts[2:]):
            z = torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = sde_step_with_logprob(
                velocity(x, t.expand(n)), x, t, t_next, noise_level=noise_level, noise=z
            )[0]
    return x


def test_flow_ode_is_deterministic_from_one_initial_noise(
    spread_from_one_start, randn, moments_ok, sampler=euler_sample
):
    # sampler = marginal_preserving_sde_sample: same marginals, fresh noise per step
    v = lambda x, t: marginal_velocity(x, t, MU, COV)
    spread = spread_from_one_start(lambda x1, g: sampler(v, x1, 100), n_runs=200)
    assert torch.equal(spread, torch.zeros(2, dtype=torch.float64)), spread
    # The path is the ODE's unique solution from x1, not an artefact of the sampler:
    # Euler converges to the closed-form solution x_0 = mu + Sigma^{1/2} x1 at first
    # order (doubling the steps halves the error).
    x1 = randn(3, 2000, 2)
    exact = exact_flow(x1, 0.0, MU, COV)
    err = {
        n: (sampler(v, x1, n) - exact).pow(2).sum(-1).mean().sqrt().item()
        for n in (50, 100, 200)
    }
    assert err[200] < 0.01, err
    for n in (50, 100):
        assert 0.4 < err[2 * n] / err[n] < 0.6, err
    ok, errs = moments_ok(sampler(v, randn(1, 20_000, 2), 100))
    assert ok, f"flow ODE moments off: {errs}"
