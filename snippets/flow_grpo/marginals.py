"""The SDE of Flow-GRPO keeps the ODE's marginals p_t (arXiv:2505.05470, Eq. (8); proof in App. A).

Checked on Gaussian data N(MU, COV) with the exact marginal velocity, where p_t is known in
closed form (snippets/flow_matching/gaussian.py): run many particles through the ODE and
through the SDE (sde.py:sde_step) and compare their mean and covariance with p_t at several t.
"""

# --8<-- [start:simulate]
import torch
from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.flow_matching.gaussian import COV, MU, marginal_mean_cov, marginal_velocity


@torch.no_grad()
def simulate_moments(t_start=0.96, num_steps=192, n=20_000, checkpoints=(0.75, 0.5, 0.25, 0.0),
                     noise_level=0.7, seed=0, drop_correction=False):
    """Particles start from the exact p_{t_start}; integrate down to t = 0 with the ODE (Euler)
    and the SDE (Euler-Maruyama). returns {t: (ode_mean, ode_cov, sde_mean, sde_cov, exact_mean, exact_cov)}.
    drop_correction: SDE with only v in the drift (noise added without the score term)."""
    g = torch.Generator().manual_seed(seed)
    m0, C0 = marginal_mean_cov(t_start, MU, COV)
    x0 = m0 + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(C0).T
    x_ode, x_sde = x0.clone(), x0.clone()
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
            x_sde, _, _, _ = sde_step_with_logprob(v, x_sde, t, t_next, noise_level=noise_level, noise=noise)
        for c in checkpoints:  # grid step 0.005: the checkpoints are grid points
            if abs(t_next.item() - c) < 1e-6:
                em, ec = marginal_mean_cov(c, MU, COV)
                out[c] = (x_ode.mean(0), torch.cov(x_ode.T), x_sde.mean(0), torch.cov(x_sde.T), em, ec)
    return out
# --8<-- [end:simulate]


def test_sde_and_ode_marginals_agree():
    res = simulate_moments()
    assert set(res) == {0.75, 0.5, 0.25, 0.0}
    for t, (om, oc, sm, sc, em, ec) in res.items():
        for name, m, c in (("ODE", om, oc), ("SDE", sm, sc)):
            assert (m - em).abs().max() < 0.03, f"t={t} {name} mean {m} vs {em}"
            assert (c - ec).abs().max() < 0.03, f"t={t} {name} cov {c} vs {ec}"


def test_refutes_noise_without_score_correction_keeps_marginals():
    # The correction term sigma_t^2/(2t) (x + (1 - t) v) is what keeps p_t: adding the same noise
    # to the plain ODE step inflates the covariance far beyond the sampling error.
    res = simulate_moments(drop_correction=True, checkpoints=(0.0,))
    _, _, _, sc, _, ec = res[0.0]
    assert (sc - ec).abs().max() > 0.2, f"covariance without correction {sc} vs exact {ec}"


# --8<-- [start:explore]
import torch
from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.flow_matching.gaussian import COV, MU, marginal_velocity


@torch.no_grad()
def spread_from_one_start(n=2000, num_steps=10, noise_level=0.7, seed=0):
    """n runs from ONE state at t = 0.9 with the ODE and with the SDE (10 steps to t = 0):
    per-dimension std of the end points, and the SDE's summed per-step log-probs (n,)."""
    g = torch.Generator().manual_seed(seed)
    x_start = torch.tensor([[0.4, -0.2]], dtype=torch.float64).expand(n, 2)
    grid = torch.linspace(0.9, 0.0, num_steps + 1, dtype=torch.float64)
    x_ode, x_sde, logp = x_start, x_start, torch.zeros(n, dtype=torch.float64)
    for t, t_next in zip(grid[:-1], grid[1:]):
        x_ode = x_ode + marginal_velocity(x_ode, t, MU, COV) * (t_next - t)
        noise = torch.randn(n, 2, generator=g, dtype=torch.float64)
        x_sde, lp, _, _ = sde_step_with_logprob(marginal_velocity(x_sde, t, MU, COV), x_sde, t, t_next,
                                                noise_level=noise_level, noise=noise)
        logp = logp + lp
    return x_ode.std(0), x_sde.std(0), logp
# --8<-- [end:explore]


def test_sde_explores_where_the_ode_cannot():
    ode_std, sde_std, logp = spread_from_one_start()
    assert torch.equal(ode_std, torch.zeros(2, dtype=torch.float64)), ode_std
    assert (sde_std > 0.3).all(), f"SDE end points from one start: std {sde_std}"
    # Every SDE trajectory has a finite log-likelihood, a sum of per-step Gaussian terms.
    assert torch.isfinite(logp).all() and logp.std() > 0.5
