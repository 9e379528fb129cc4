"""Noising in DDPM and in flow matching: one construction, two schedules.

Both corrupt a data point x0 with one Gaussian noise n ~ N(0, I):

    DDPM          x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps   # Eq. (4), 2006.11239
    linear path   x_t = (1 - t) x0 + t x1                        # Eq. (1), 2209.03003

that is x_t = a_t x0 + b_t n. Given (x0, n, t), x_t is a fixed number for both; given
only (x0, t), x_t ~ N(a_t x0, b_t^2 I) for both. Lipman et al. (arXiv:2210.02747,
Sec. 4 and 4.1) treat both as members of one family of Gaussian conditional paths.

What differs: the schedule (a_t, b_t), hence the parametrisation of the regression
target (eps vs the velocity x1 - x0), and how noise enters the *process*: DDPM defines
the forward process as a Markov chain with fresh noise at every step (Eq. (2)), the
linear path uses one noise for the whole path. The marginal q(x_t | x0), the only thing
training uses, is the same either way.
"""

# --8<-- [start:conditionings]
import torch

from snippets.flow_matching.diffusion import ddpm_forward, ddpm_schedule
from snippets.flow_matching.path import interpolate

_, _, ABAR = ddpm_schedule()  # (T + 1,), T = 100 steps
X0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)  # one data point, (1, 2)


def coefficients(process: str, t) -> tuple[float, float]:
    """(a_t, b_t) of x_t = a_t x0 + b_t n. DDPM: integer step t; flow: t in [0, 1]."""
    if process == "ddpm":
        return ABAR[t].sqrt().item(), (1 - ABAR[t]).sqrt().item()  # Eq. (4)
    return 1.0 - t, float(t)  # Eq. (1), arXiv:2209.03003


def add_noise(process: str, x0: torch.Tensor, t, n: torch.Tensor) -> torch.Tensor:
    """x_t from data x0 (batch, d) and the noise n (batch, d): eps for DDPM, x1 for the
    linear path."""
    if process == "ddpm":
        return ddpm_forward(x0, t, ABAR, eps=n)
    return interpolate(x0, n, t)


def noise_one_point(process: str, t, runs=20_000, same_noise=False, seed=0):
    """`runs` noisings of the SAME x0 at the same t, (runs, 2): a fresh noise each run
    (x_t given (x0, t) only) or one noise shared by all runs (x_t given (x0, n, t))."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(1 if same_noise else runs, 2, generator=g, dtype=torch.float64)
    return add_noise(process, X0.expand(runs, 2), t, n.expand(runs, 2))


# --8<-- [end:conditionings]


import pytest


@pytest.fixture
def conditioning_errors():
    """errors(process, times): departures from x_t | (x0, t) ~ N(a x0, b^2 I), and
    from x_t | (x0, n, t) being one fixed point."""

    def errors(process: str, times, shared=False) -> list[str]:
        eye, found = torch.eye(2, dtype=torch.float64), []
        for t in times:
            a, b = coefficients(process, t)
            # Given (x0, t) only: x_t ~ N(a x0, b^2 I). Tolerances: 5 standard errors
            # of a sample mean (b / sqrt(n)) and of a sample variance (b^2 sqrt(2 / n)).
            xt = noise_one_point(process, t, same_noise=shared)
            n = xt.shape[0]
            mean_err = (xt.mean(0) - a * X0[0]).abs().max().item()
            cov_err = (torch.cov(xt.T) - b**2 * eye).abs().max().item()
            if mean_err > 5 * b / n**0.5 or cov_err > 5 * b**2 * (2 / n) ** 0.5:
                found.append(f"t={t}: mean off by {mean_err:.4f}, cov by {cov_err:.4f}")
            # Given (x0, n, t): every run returns the same point, a x0 + b n.
            xt = noise_one_point(process, t, same_noise=True, seed=3)
            n0 = torch.randn(
                1, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64
            )
            if not torch.equal(xt, xt[:1].expand_as(xt)):
                found.append(f"t={t}: runs with the same noise differ")
            if not torch.allclose(xt[0], (a * X0 + b * n0)[0], atol=1e-12, rtol=0):
                found.append(f"t={t}: x_t is not a x0 + b n")
        return found

    return errors


def test_ddpm_noising_is_gaussian_given_x0_and_fixed_given_the_noise(
    conditioning_errors, shared_noise=False
):
    # shared_noise: every call reuses one eps (x_t a function of (x0, t) alone)
    errors = conditioning_errors("ddpm", (10, 30, 60), shared_noise)
    assert not errors, errors


def test_flow_noising_is_gaussian_given_x0_and_fixed_given_the_noise(
    conditioning_errors, shared_noise=False
):
    errors = conditioning_errors("flow", (0.1, 0.3, 0.7), shared_noise)
    assert not errors, errors


# --8<-- [start:same_family]
import torch

from snippets.flow_matching.diffusion import gaussian_eps
from snippets.flow_matching.gaussian import COV, MU
from snippets.flow_matching.path import interpolate


def matching_time(a, b):
    """tau = b / (a + b): the point of the linear path with DDPM's noise-to-data
    ratio b / a."""
    return b / (a + b)


def ddpm_as_linear_path(x0, eps, t, abar, time_change=matching_time):
    """DDPM's x_t written through the linear path. With a = sqrt(abar_t) and
    b = sqrt(1 - abar_t): a x0 + b eps = (a + b) ((1 - tau) x0 + tau eps),
    tau = b / (a + b). Returns (x_t, tau)."""
    a, b = abar[t].sqrt(), (1 - abar[t]).sqrt()
    tau = time_change(a, b)
    return (a + b) * interpolate(x0, eps, tau), tau


def velocity_from_eps(x, t, abar, mu=MU, cov=COV):
    """The velocity target recovered from DDPM's noise target at the matching time tau.
    On the path x1 - x0 = (x1 - x_tau) / (1 - tau), so
    E[x1 - x0 | x_tau = x] = (E[eps | x_t = (a + b) x] - x) / (1 - tau)."""
    a, b = abar[t].sqrt(), (1 - abar[t]).sqrt()
    tau = b / (a + b)
    return (gaussian_eps((a + b) * x, t, abar, mu, cov) - x) / (1 - tau), tau


# --8<-- [end:same_family]


def noise_coefficient_as_time(a, b):
    """The naive reading tau = b_t (DDPM's noise coefficient taken as the flow
    time): a counterfactual of the time change."""
    return b


def test_ddpm_noising_is_the_linear_path_rescaled(time_change=matching_time):
    from snippets.flow_matching.gaussian import marginal_velocity

    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 2, generator=g, dtype=torch.float64)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64) * 2
    taus = []
    for t in range(1, len(ABAR)):
        # (1) The noising: an identity of the two formulas, at every DDPM step.
        x_lin, tau = ddpm_as_linear_path(x0, eps, t, ABAR, time_change)
        x_ddpm = ddpm_forward(x0, t, ABAR, eps=eps)
        torch.testing.assert_close(x_ddpm, x_lin, atol=1e-12, rtol=0)
        taus.append(tau)
        # (2) The targets: two independently written closed forms (DDPM's E[eps | x_t]
        # by a linear solve, the flow's E[x1 - x0 | x_t] by an eigendecomposition).
        v_eps, tau = velocity_from_eps(x, t, ABAR)
        v_star = marginal_velocity(x, tau.item(), MU, COV)
        atol = 1e-8 / (1 - tau.item())  # float64 round-off, amplified by 1 / (1 - tau)
        torch.testing.assert_close(v_eps, v_star, atol=atol, rtol=1e-8)
    # The time change is monotone: DDPM's steps 1..T sweep the linear path from near
    # the data end to the noise end.
    taus = torch.stack(taus)
    assert (taus.diff() > 0).all() and taus[0] < 0.05 and taus[-1] > 0.99, taus


# --8<-- [start:chain]
import torch

from snippets.flow_matching.diffusion import ddpm_schedule
from snippets.flow_matching.noising import X0, coefficients

BETAS, _, _ = ddpm_schedule()


def chain_step(process: str, x, s, t, z):
    """One forward step from time s to the later time t with fresh noise z (batch, d).
    DDPM (t = s + 1): x_t = sqrt(1 - beta_t) x_s + sqrt(beta_t) z.
    Linear path: x_t = (a_t / a_s) x_s + sqrt(b_t^2 - (a_t b_s / a_s)^2) z, the Gaussian
    step that, composed with q(x_s | x0) = N(a_s x0, b_s^2 I), gives
    N(a_t x0, b_t^2 I)."""
    if process == "ddpm":
        assert t == s + 1
        return (1 - BETAS[t]).sqrt() * x + BETAS[t].sqrt() * z  # Eq. (2), 2006.11239
    (a_s, b_s), (a_t, b_t) = coefficients(process, s), coefficients(process, t)
    r = a_t / a_s
    return r * x + (b_t**2 - (r * b_s) ** 2) ** 0.5 * z


def two_times(
    process: str,
    grid,
    s,
    t,
    fresh_noise_per_step: bool,
    runs=20_000,
    seed=0,
    step=chain_step,
):
    """x_s and x_t (runs, 2) from the same x0: a Markov chain over `grid` with fresh
    noise per step, or the one-shot form a x0 + b n with ONE noise n for the path."""
    g = torch.Generator().manual_seed(seed)
    x0 = X0.expand(runs, 2)
    if not fresh_noise_per_step:
        n = torch.randn(runs, 2, generator=g, dtype=torch.float64)
        (a_s, b_s), (a_t, b_t) = coefficients(process, s), coefficients(process, t)
        return a_s * x0 + b_s * n, a_t * x0 + b_t * n
    x, out = x0, {}
    for u, v in zip(grid[:-1], grid[1:]):
        z = torch.randn(runs, 2, generator=g, dtype=torch.float64)
        x = step(process, x, u, v, z)
        out[v] = x
    return out[s], out[t]


# --8<-- [end:chain]


def chain_step_subtracting_stds(process: str, x, s, t, z):
    """A wrong chain step: std b_t - r b_s (stds subtracted, not variances). Its
    composition does not give q(x_t | x0): a counterfactual."""
    (a_s, b_s), (a_t, b_t) = coefficients(process, s), coefficients(process, t)
    r = a_t / a_s
    return r * x + (b_t - r * b_s) * z


def chain_step_sharing_noise_across_dims(process: str, x, s, t, z):
    """A wrong chain step: one noise for both coordinates. Each coordinate keeps its
    mean and variance, but the two become correlated, so the composed law is not
    N(a_t x0, b_t^2 I): a counterfactual a per-coordinate check cannot see."""
    return chain_step(process, x, s, t, z[:, :1].expand_as(z))


def test_fresh_noise_per_step_changes_the_path_not_the_marginal(step=chain_step):
    cases = {
        "ddpm": (list(range(0, 31)), 10, 30),
        "flow": ([k / 100 for k in range(0, 71)], 0.3, 0.7),
    }
    for process, (grid, s, t) in cases.items():
        (a_s, b_s), (a_t, b_t) = coefficients(process, s), coefficients(process, t)
        rho_chain = a_t * b_s / (a_s * b_t)  # Corr(x_s, x_t | x0) of the chain
        assert rho_chain < 0.3, (process, rho_chain)
        for fresh in (True, False):
            xs, xt = two_times(process, grid, s, t, fresh, step=step)
            n = xt.shape[0]
            # Same marginal q(x_t | x0) = N(a_t x0, b_t^2 I) either way: x_t is a
            # linear map of Gaussians, so its mean and covariance fix it. Tolerance: 5
            # standard errors of a mean and of a variance, b_t^2 sqrt(2 / n) (that of a
            # covariance, b_t^2 / sqrt(n), is smaller).
            eye = torch.eye(2, dtype=torch.float64)
            assert (xt.mean(0) - a_t * X0[0]).abs().max() < 5 * b_t / n**0.5
            cov_err = (torch.cov(xt.T) - b_t**2 * eye).abs().max()
            assert cov_err < 5 * b_t**2 * (2 / n) ** 0.5, (process, fresh, cov_err)
            # Different paths: with one noise x_s and x_t are perfectly correlated; the
            # chain's later noise decorrelates them. Standard error of a correlation:
            # (1 - rho^2) / sqrt(n).
            rho = torch.stack(
                [
                    torch.corrcoef(torch.stack([xs[:, i], xt[:, i]]))[0, 1]
                    for i in range(2)
                ]
            )
            expected = rho_chain if fresh else 1.0
            tol = 5 * (1 - expected**2) / n**0.5 + 1e-9
            assert (rho - expected).abs().max() < tol, (process, fresh, rho, expected)


def test_chain_step_is_the_gaussian_step_between_the_two_marginals():
    # From x with z = 0 a step moves to r x (r = a_t / a_s); from 0 with z = 1 it moves
    # by its std sqrt(b_t^2 - r^2 b_s^2), what composes N(a_s x0, b_s^2 I) into
    # N(a_t x0, b_t^2 I). For DDPM (t = s + 1) that is Eq. (2): r = sqrt(1 - beta_t),
    # std sqrt(beta_t).
    one, zero = (
        torch.ones(1, 2, dtype=torch.float64),
        torch.zeros(1, 2, dtype=torch.float64),
    )
    for process, pairs in (
        ("ddpm", ((0, 1), (10, 11), (59, 60))),
        ("flow", ((0.0, 0.3), (0.3, 0.7), (0.1, 0.11))),
    ):
        for s, t in pairs:
            (a_s, b_s), (a_t, b_t) = coefficients(process, s), coefficients(process, t)
            r = a_t / a_s
            std = (b_t**2 - (r * b_s) ** 2) ** 0.5
            torch.testing.assert_close(
                chain_step(process, one, s, t, zero), r * one, atol=1e-12, rtol=0
            )
            torch.testing.assert_close(
                chain_step(process, zero, s, t, one), std * one, atol=1e-12, rtol=0
            )


def test_one_noise_per_path_is_the_seeded_draw():
    # Without fresh noise, x_s and x_t are a_s x0 + b_s n and a_t x0 + b_t n with the
    # SAME seeded n, exactly; with fresh noise the chain is seeded too (same seed, same
    # paths).
    for process, grid, s, t in (
        ("ddpm", list(range(0, 31)), 10, 30),
        ("flow", [k / 100 for k in range(0, 71)], 0.3, 0.7),
    ):
        xs, xt = two_times(process, grid, s, t, False, runs=50, seed=3)
        n = torch.randn(
            50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64
        )
        for x, u in ((xs, s), (xt, t)):
            a, b = coefficients(process, u)
            torch.testing.assert_close(x, a * X0 + b * n, atol=1e-12, rtol=0)
        first = two_times(process, grid, s, t, True, runs=50, seed=3)
        again = two_times(process, grid, s, t, True, runs=50, seed=3)
        assert all(torch.equal(u, w) for u, w in zip(first, again))
