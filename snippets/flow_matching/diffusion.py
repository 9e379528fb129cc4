"""Diffusion (DDPM, DDIM) against flow matching, on Gaussian data where the optimal
noise predictor and the marginal velocity are both exact (no training noise in the comparison).

DDPM (arXiv:2006.11239):
    q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)                       # Eq. (4)
    x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) + sigma_t z   # Algorithm 2
DDIM (arXiv:2010.02502):
    x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - s_t^2) eps + s_t z          # Eq. (12)
    s_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})         # Eq. (16)
Here the diffusion index t counts noise levels 1..T (x_T noise), unlike the flow time in [0, 1].
"""

# --8<-- [start:ddpm_forward]
import torch


def ddpm_schedule(T: int = 100, dtype=torch.float64):
    """Linear betas (scaled for T = 100 steps); returns betas, alphas, abar, each (T + 1,), index 0 unused."""
    betas = torch.cat([torch.zeros(1, dtype=dtype), torch.linspace(1e-3, 0.2, T, dtype=dtype)])
    alphas = 1 - betas
    return betas, alphas, torch.cumprod(alphas, 0)


def ddpm_forward(x0: torch.Tensor, t: int, abar: torch.Tensor, generator=None) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x0) by reparameterization: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
    x0: (batch, d). Fresh eps on every call: same x0, same t, different x_t."""
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps  # Eq. (4), arXiv:2006.11239
# --8<-- [end:ddpm_forward]


# --8<-- [start:gaussian_eps]
import torch


def gaussian_eps(x: torch.Tensor, t: int, abar: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor):
    """Optimal noise predictor E[eps | x_t = x] for data N(mu, cov):
    sqrt(1 - abar) (abar cov + (1 - abar) I)^{-1} (x - sqrt(abar) mu). x: (batch, d)."""
    a = abar[t]
    C = a * cov + (1 - a) * torch.eye(x.shape[1], dtype=x.dtype)
    return (1 - a).sqrt() * torch.linalg.solve(C, (x - a.sqrt() * mu).T).T
# --8<-- [end:gaussian_eps]


# --8<-- [start:samplers]
import torch


@torch.no_grad()
def ddpm_ancestral(xT, eps_fn, betas, alphas, abar, generator=None):
    """DDPM ancestral sampling, Algorithm 2 of arXiv:2006.11239 with sigma_t^2 = beta_t.
    xT: (batch, d); eps_fn(x, t) -> (batch, d). Draws a fresh z at every step but the last."""
    x = xT
    for t in range(len(betas) - 1, 0, -1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if t > 1 else torch.zeros_like(x)
        x = (x - betas[t] / (1 - abar[t]).sqrt() * eps_fn(x, t)) / alphas[t].sqrt() + betas[t].sqrt() * z
    return x


@torch.no_grad()
def ddim(xT, eps_fn, abar, eta: float = 0.0, generator=None):
    """DDIM sampling, Eq. (12) of arXiv:2010.02502; eta = 0 draws no noise at all."""
    x = xT
    for t in range(len(abar) - 1, 0, -1):
        eps = eps_fn(x, t)
        x0_hat = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        s = eta * ((1 - abar[t - 1]) / (1 - abar[t])).sqrt() * (1 - abar[t] / abar[t - 1]).sqrt()  # Eq. (16)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if eta > 0 else torch.zeros_like(x)
        x = abar[t - 1].sqrt() * x0_hat + (1 - abar[t - 1] - s ** 2).sqrt() * eps + s * z
    return x
# --8<-- [end:samplers]


from snippets.flow_matching.gaussian import MU, COV, marginal_velocity, sample_gaussian_data
from snippets.flow_matching.path import interpolate
from snippets.flow_matching.sampling import euler_sample


def _spread_from_one_start(sampler, n_runs: int = 2000):
    """Run a sampler n_runs times from ONE initial noise (the rows of a batch, each row drawing
    its own per-step noise); returns the per-dimension std of the n_runs outputs, (d,)."""
    xT = torch.randn(1, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return sampler(xT.expand(n_runs, 2), torch.Generator().manual_seed(8)).std(0)


def _moments_ok(x, tol=0.05):
    mean_err = (x.mean(0) - MU).abs().max().item()
    cov_err = (torch.cov(x.T) - COV).abs().max().item()
    return mean_err < tol and cov_err < tol, (mean_err, cov_err)


# --8<-- [start:forward_noising]
import torch
from snippets.flow_matching.diffusion import ddpm_forward, ddpm_schedule
from snippets.flow_matching.path import interpolate


def forward_spread(n: int = 5000):
    """Same x0 (and x1 for the flow), same t, n calls: std of the resulting x_t."""
    _, _, abar = ddpm_schedule()
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64).expand(n, 2)
    g = torch.Generator().manual_seed(0)
    diffusion = ddpm_forward(x0, 30, abar, g)  # fresh eps each row
    x1 = torch.randn(1, 2, generator=g, dtype=torch.float64).expand(n, 2)
    flow = interpolate(x0, x1, 0.3)  # nothing left to sample
    return diffusion.std(0), flow.std(0), (1 - abar[30]).sqrt()
# --8<-- [end:forward_noising]


def test_ddpm_forward_is_random_given_x0_and_t():
    diff_std, _, expected = forward_spread()
    torch.testing.assert_close(diff_std, expected.expand(2), atol=0.03, rtol=0)


def test_interpolation_is_deterministic_given_x0_and_x1():
    _, flow_std, _ = forward_spread()
    assert torch.equal(flow_std, torch.zeros(2, dtype=torch.float64)), flow_std


def test_ddpm_ancestral_differs_from_one_initial_noise():
    betas, alphas, abar = ddpm_schedule()
    eps_fn = lambda x, t: gaussian_eps(x, t, abar, MU, COV)
    spread = _spread_from_one_start(lambda xT, g: ddpm_ancestral(xT, eps_fn, betas, alphas, abar, g))
    # The final sample given x_T still varies by a sizeable fraction of the data std (~0.7, 0.63).
    assert (spread > 0.3).all(), f"DDPM spread from one x_T: {spread}"
    # ...and the sampler is correct: from random x_T it reproduces N(MU, COV).
    xT = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ok, errs = _moments_ok(ddpm_ancestral(xT, eps_fn, betas, alphas, abar, torch.Generator().manual_seed(2)))
    assert ok, f"DDPM moments off: {errs}"


def test_ddim_eta0_is_deterministic_from_one_initial_noise():
    _, _, abar = ddpm_schedule()
    eps_fn = lambda x, t: gaussian_eps(x, t, abar, MU, COV)
    spread0 = _spread_from_one_start(lambda xT, g: ddim(xT, eps_fn, abar, 0.0, g), n_runs=200)
    spread1 = _spread_from_one_start(lambda xT, g: ddim(xT, eps_fn, abar, 1.0, g), n_runs=2000)
    assert torch.equal(spread0, torch.zeros(2, dtype=torch.float64)), spread0
    assert (spread1 > 0.3).all(), f"DDIM eta=1 should be random again: {spread1}"
    xT = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ok, errs = _moments_ok(ddim(xT, eps_fn, abar, 0.0))
    assert ok, f"DDIM eta=0 moments off: {errs}"


def test_flow_ode_is_deterministic_from_one_initial_noise():
    v = lambda x, t: marginal_velocity(x, t, MU, COV)
    spread = _spread_from_one_start(lambda x1, g: euler_sample(v, x1, 100), n_runs=200)
    assert torch.equal(spread, torch.zeros(2, dtype=torch.float64)), spread
    x1 = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ok, errs = _moments_ok(euler_sample(v, x1, 100))
    assert ok, f"flow ODE moments off: {errs}"
