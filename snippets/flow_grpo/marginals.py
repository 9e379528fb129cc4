"""The SDE of Flow-GRPO keeps the ODE's marginals p_t (arXiv:2505.05470, Eq. (8); proof
in App. A).

Checked on Gaussian data N(MU, COV) with the exact marginal velocity, where p_t is known
in closed form (snippets/flow_matching/gaussian.py): run many particles through the ODE
and through the SDE (sde.py:sde_step) and compare their mean and covariance with p_t at
several t.
"""

import math

# --8<-- [start:simulate]
import torch

from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.flow_matching.gaussian import (
    COV,
    MU,
    marginal_mean_cov,
    marginal_velocity,
)


def simulate_moments(
    t_start=0.96,
    num_steps=192,
    n=20_000,
    checkpoints=(0.75, 0.5, 0.25, 0.0),
    noise_level=0.7,
    seed=0,
    drop_correction=False,
    step=sde_step_with_logprob,
):
    """Particles start from the exact p_{t_start}; integrate down to t = 0 with the ODE
    (Euler) and the SDE (Euler-Maruyama, one `step` each). returns
    {t: (ode_mean, ode_cov, sde_mean, sde_cov, exact_mean, exact_cov)}.
    drop_correction: SDE with only v in the drift (noise added without the score term).
    """
    g = torch.Generator().manual_seed(seed)
    m0, C0 = marginal_mean_cov(t_start, MU, COV)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_ode = m0 + z @ torch.linalg.cholesky(C0).T
    x_sde = x_ode.clone()
    grid = torch.linspace(t_start, 0.0, num_steps + 1, dtype=torch.float64)
    out = {}
    for t, t_next in zip(grid[:-1], grid[1:]):
        x_ode = x_ode + marginal_velocity(x_ode, t, MU, COV) * (t_next - t)
        v = marginal_velocity(x_sde, t, MU, COV)
        noise = torch.randn(x_sde.shape, generator=g, dtype=torch.float64)
        if drop_correction:
            std = noise_level * (t / (1 - t)).sqrt()
            x_sde = x_sde + v * (t_next - t) + std * (t - t_next).sqrt() * noise
        else:
            x_sde, _, _, _ = step(
                v, x_sde, t, t_next, noise_level=noise_level, noise=noise
            )
        for c in checkpoints:  # grid step 0.005: the checkpoints are grid points
            if abs(t_next.item() - c) < 1e-6:
                em, ec = marginal_mean_cov(c, MU, COV)
                out[c] = (
                    x_ode.mean(0),
                    torch.cov(x_ode.T),
                    x_sde.mean(0),
                    torch.cov(x_sde.T),
                    em,
                    ec,
                )
    return out


# --8<-- [end:simulate]


def sde_step_doubled_correction(
    velocity, x, sigma, sigma_next, *, noise_level=0.7, noise=None
):
    """sde.py's step with the score correction counted twice (sigma_t^2 / t instead of
    sigma_t^2 / (2t) in front of x + (1 - t) v): a counterfactual of Eq. (8)."""
    _, _, mean, std = sde_step_with_logprob(
        velocity, x, sigma, sigma_next, noise_level=noise_level, noise=noise
    )
    dt = sigma_next - sigma
    mean = mean + std**2 / (2 * sigma) * (x + (1 - sigma) * velocity) * dt
    return mean + std * (-dt).sqrt() * noise, None, mean, std


def test_sde_and_ode_marginals_agree(drop_correction=False, step=sde_step_with_logprob):
    # 20 000 particles: standard errors <= sqrt(0.75 / 20 000) = 0.006 for a mean and
    # <= 0.75 sqrt(2 / 20 000) = 0.0075 for a covariance entry (variances here are
    # <= 0.75); 0.03 is 4-5 of them. Checked for three noise levels a (the claim is for
    # every a).
    for a in (0.3, 0.7, 1.0):
        res = simulate_moments(
            noise_level=a, drop_correction=drop_correction, step=step
        )
        assert set(res) == {0.75, 0.5, 0.25, 0.0}
        for t, (om, oc, sm, sc, em, ec) in res.items():
            for name, m, c in (("ODE", om, oc), ("SDE", sm, sc)):
                assert (m - em).abs().max() < 0.03, f"a={a} t={t} {name} mean {m}"
                assert (c - ec).abs().max() < 0.03, f"a={a} t={t} {name} cov {c}"


def test_refutes_noise_without_score_correction_keeps_marginals(noise_level=0.7):
    # The correction term sigma_t^2/(2t) (x + (1 - t) v) is what keeps p_t: adding the
    # same noise to the plain ODE step inflates the covariance far beyond the sampling
    # error (0.2 is more than 25 standard errors).
    res = simulate_moments(
        drop_correction=True, checkpoints=(0.0,), noise_level=noise_level
    )
    _, _, _, sc, _, ec = res[0.0]
    assert (sc - ec).abs().max() > 0.2, f"covariance without correction {sc} vs {ec}"


# --8<-- [start:explore]
import torch

from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.flow_matching.gaussian import COV, MU, marginal_velocity


def spread_from_one_start(n=20_000, num_steps=10, noise_level=0.7, seed=0):
    """n runs from ONE state at t = 0.9 with the ODE and with the SDE (10 steps to
    t = 0). returns the end points of the ODE runs and of the SDE runs, (n, 2) each,
    and the SDE's summed per-step log-probs (n,)."""
    g = torch.Generator().manual_seed(seed)
    x_start = torch.tensor([[0.4, -0.2]], dtype=torch.float64).expand(n, 2)
    grid = torch.linspace(0.9, 0.0, num_steps + 1, dtype=torch.float64)
    x_ode, x_sde, logp = x_start, x_start, torch.zeros(n, dtype=torch.float64)
    for t, t_next in zip(grid[:-1], grid[1:]):
        x_ode = x_ode + marginal_velocity(x_ode, t, MU, COV) * (t_next - t)
        noise = torch.randn(n, 2, generator=g, dtype=torch.float64)
        v = marginal_velocity(x_sde, t, MU, COV)
        x_sde, lp, _, _ = sde_step_with_logprob(
            v, x_sde, t, t_next, noise_level=noise_level, noise=noise
        )
        logp = logp + lp
    return x_ode, x_sde, logp


# --8<-- [end:explore]


def test_sde_spreads_from_one_state_with_its_exact_law():
    def sde_law_from_one_start(
        noise_level, x=(0.4, -0.2), num_steps=10, mu=MU, cov=COV
    ):
        """Exact law of both end points from the start x at t = 0.9 (the grid of
        spread_from_one_start), for data N(mu, cov) and the exact velocity
        v* = G x + b, G = K_t C_t^{-1}, b = -mu - (1 - t) G mu, affine in x. An Euler
        step of the ODE is x <- (I + dt G) x + dt b; an SDE step is
        x <- M x + c + s z with s = sigma_t sqrt(|dt|),
        w = 1 + sigma_t^2 (1 - t) / (2t), M = (1 + sigma_t^2 dt / (2t)) I + w dt G and
        c = w dt b.
        returns the ODE end point (d,), the SDE end point's mean (d,) and covariance
        (d, d), and the step stds (num_steps,)."""
        eye = torch.eye(cov.shape[0], dtype=cov.dtype)
        grid = torch.linspace(0.9, 0.0, num_steps + 1, dtype=torch.float64)
        x_ode = m = torch.tensor(x, dtype=torch.float64)
        P, steps = torch.zeros_like(cov), []
        for t, t_next in zip(grid[:-1], grid[1:]):
            dt = t_next - t
            sig2 = noise_level**2 * t / (1 - t)
            C, K = (1 - t) ** 2 * cov + t**2 * eye, t * eye - (1 - t) * cov
            G = K @ torch.linalg.inv(C)
            b = -mu - (1 - t) * G @ mu
            x_ode = x_ode + dt * (G @ x_ode + b)
            w = 1 + sig2 * (1 - t) / (2 * t)
            M = (1 + sig2 * dt / (2 * t)) * eye + w * dt * G
            m = M @ m + w * dt * b
            P = M @ P @ M.T + sig2 * (-dt) * eye
            steps.append((sig2 * (-dt)).sqrt())
        return x_ode, m, P, torch.stack(steps)

    n, d = 20_000, 2
    for a in (0.7, 0.3):  # the claim is for any noise level: two of them
        x_ode, x_sde, logp = spread_from_one_start(n=n, noise_level=a)
        ode_end, mean, P, s = sde_law_from_one_start(a)
        # The ODE: one start, one end point, every time: the Euler solution.
        assert torch.equal(x_ode, x_ode[:1].expand(n, d)), x_ode.std(0)
        torch.testing.assert_close(x_ode[0], ode_end, atol=1e-12, rtol=0)
        # The SDE: the end points scatter with the exact law N(mean, P): the sample
        # mean within 5 standard errors sqrt(diag P / n), the sample std within 5
        # relative standard errors 1 / sqrt(2n) = 0.5 % of sqrt(diag P).
        assert ((x_sde.mean(0) - mean).abs() < 5 * (P.diag() / n).sqrt()).all(), a
        rtol = 5 / (2 * n) ** 0.5
        torch.testing.assert_close(x_sde.std(0), P.diag().sqrt(), atol=0, rtol=rtol)
        # Every trajectory has a finite log-likelihood: at the sampled point
        # x_next = mean_k + s_k z_k each step scores exactly
        # -|z_k|^2 / 2 - d log s_k - d/2 log(2 pi), z_k the seeded noise of step k.
        g = torch.Generator().manual_seed(0)
        z = torch.stack(
            [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in s]
        )  # (k, n, d), drawn in the function's order
        const = -d * s.log()[:, None] - d / 2 * math.log(2 * math.pi)
        exact = (-z.pow(2).sum(-1) / 2 + const).sum(0)
        torch.testing.assert_close(logp, exact, atol=1e-9, rtol=0)
        # Over k = 10 steps in d = 2 the sum is -chi2_20 / 2 + const: its mean is
        # known and its std is sqrt(40) / 2.
        k = len(s)
        mean_lp = -d * k / 2 - d * s.log().sum() - d * k / 2 * math.log(2 * math.pi)
        std = (d * k / 2) ** 0.5  # 3.16 nats
        assert abs(logp.mean() - mean_lp) < 5 * std / n**0.5, (logp.mean(), mean_lp)
        # chi2_20 has excess kurtosis 0.6: the sample std's relative standard error
        # is sqrt(2.6 / (4 n)); 5 of them.
        assert abs(logp.std() / std - 1) < 5 * (2.6 / (4 * n)) ** 0.5, logp.std()


# --8<-- [start:group]
import torch

from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.flow_matching.gaussian import COV, MU, marginal_velocity
from snippets.flow_matching.sampling import euler_sample


def ode_group(n=20_000, num_steps=100, shared_noise=False, seed=0):
    """A GRPO group of n ODE samples (Euler, num_steps, exact velocity) for one
    condition. Each trajectory draws its own x1 ~ N(0, I), as train.py:rollout does;
    shared_noise: one x1 for the whole group. returns the end points, (n, 2)."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(1 if shared_noise else n, 2, generator=g, dtype=torch.float64)
    v = lambda x, t: marginal_velocity(x, t, MU, COV)
    return euler_sample(v, x1.expand(n, 2), num_steps)


def step_log_prob(theta, x, x_next, t, t_next, noise_level):
    """log pi_theta(x_next | x) of one SDE step (sde.py) of the policy whose velocity
    is v* + theta; theta (2,) stands for the network's parameters. x, x_next: (n, 2).
    returns the log-probs (n,) and d sum(log-probs) / d theta, (2,)."""
    theta = theta.clone().requires_grad_(True)
    v = marginal_velocity(x, t, MU, COV) + theta
    _, lp, _, _ = sde_step_with_logprob(
        v, x, t, t_next, noise_level=noise_level, prev_sample=x_next
    )
    (grad,) = torch.autograd.grad(lp.sum(), theta)
    return lp.detach(), grad


# --8<-- [end:group]


def test_ode_group_varies_through_x1_but_only_the_sde_step_has_a_log_prob(
    shared_noise=False,
):
    n = 20_000
    # (1) Given x1 the ODE is one map: 200 runs from one x1 end at one point.
    one = ode_group(n=200, shared_noise=True)
    assert torch.equal(one, one[:1].expand_as(one))
    # (2) A group as GRPO draws it (a fresh x1 per trajectory) is NOT one point: the
    # end points are all distinct and spread like the data N(MU, COV). Tolerance
    # 0.05 on each std: its standard error is sqrt(0.5 / (2n)) = 0.0035, the rest is
    # for the 100-step Euler bias (RMS 0.013, diffusion.py).
    group = ode_group(n=n, shared_noise=shared_noise)
    assert torch.unique(group, dim=0).shape[0] == n, "ODE group has repeated samples"
    assert ((group.std(0) - COV.diag().sqrt()).abs() < 0.05).all(), group.std(0)
    # (3) What the ODE lacks is a per-step density. One SDE step from x ~ p_0.6 to
    # t = 0.5: log pi_theta is differentiable in theta, with the Gaussian's gradient
    # sum_n (x' - mu_n) / s^2 * w dt, w = 1 + sigma_t^2 (1 - t) / (2t) (Eq. (9),
    # arXiv:2505.05470), and its score has mean 0 over the sampled x' (a genuine
    # density): within 5 standard errors |w dt| / (s sqrt(n)).
    t, t_next, a = 0.6, 0.5, 0.7
    g = torch.Generator().manual_seed(1)
    # x_t = (1 - t) x0 + t x1 with x0 from the ODE (~ data), t = 0.6
    x = 0.4 * ode_group(n=n, seed=2) + 0.6 * torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )
    theta = torch.zeros(2, dtype=torch.float64)
    v = marginal_velocity(x, t, MU, COV)
    x_next, _, mean, std = sde_step_with_logprob(
        v,
        x,
        t,
        t_next,
        noise_level=a,
        noise=torch.randn(n, 2, generator=g, dtype=torch.float64),
    )
    lp, grad = step_log_prob(theta, x, x_next, t, t_next, a)
    assert torch.isfinite(lp).all()
    s2, dt = std**2 * (t - t_next), t_next - t
    w = 1 + std**2 * (1 - t) / (2 * t)
    torch.testing.assert_close(
        grad, ((x_next - mean) / s2 * w * dt).sum(0), atol=1e-8, rtol=1e-10
    )
    assert (grad.abs() / n < 5 * abs(w * dt) / (s2.sqrt() * n**0.5)).all(), grad
    # The ODE is the limit a -> 0: a zero-variance step has no finite log-density, and
    # before the limit the ratio of a FIXED small policy change (theta = 0.01 e1) at
    # the recorded x' degenerates: E log r = -|u|^2 / 2 with u = w dt theta / s, and
    # |u| grows like 1 / a.
    lp0 = sde_step_with_logprob(v, x, t, t_next, noise_level=0.0)[1]
    assert not torch.isfinite(lp0).any(), "a zero-variance step has a log-density?"
    d_theta = torch.tensor([0.01, 0.0], dtype=torch.float64)
    mean_log_r = {}
    for a in (0.7, 0.07, 0.007, 0.0007):
        x_a, lp_old, _, std_a = sde_step_with_logprob(
            v,
            x,
            t,
            t_next,
            noise_level=a,
            noise=torch.randn(n, 2, generator=g, dtype=torch.float64),
        )
        lp_new, _ = step_log_prob(d_theta, x, x_a, t, t_next, a)
        w_a = 1 + std_a**2 * (1 - t) / (2 * t)
        u = (w_a * abs(dt) * d_theta.norm() / (std_a * (t - t_next) ** 0.5)).item()
        log_r = lp_new - lp_old  # ~ N(-u^2 / 2, u^2) over the sampled x'
        assert abs(log_r.mean() + u**2 / 2) < 5 * u / n**0.5, (a, log_r.mean(), u)
        mean_log_r[a] = log_r.mean().item()
    assert mean_log_r[0.0007] < -5 < -1e-3 < mean_log_r[0.7], mean_log_r
