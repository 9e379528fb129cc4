"""How many Euler steps does a sample need? Exact velocity fields (no training error),
so what is left is the discretisation error against a fine-grid solution of the same
ODE.

Two ODEs that carry N(0, I) to the same data distribution, both solved with uniform
Euler steps:
  * flow matching's linear path, x_t = (1 - t) x0 + t x1
    (snippets/flow_matching/path.py);
  * the VP diffusion probability-flow ODE (Song et al., arXiv:2011.13456, Eq. (13) for
    the VP SDE of Eq. (11), beta(s) = 0.1 + 19.9 s), the ODE behind DDIM-style
    deterministic sampling.
Two data sets: the broad Gaussian N(MU, COV) (snippets/flow_matching/gaussian.py) and
the 8-Gaussians mixture with narrow modes (snippets/flow_matching/toy2d.py).
"""

# --8<-- [start:mixture_velocity]
import torch

from snippets.flow_matching.toy2d import MEANS, MODE_STD


def _mixture_posterior(x, a, noise_var, means=MEANS):
    """Component k of x = a x0 + noise: N(a m_k, (a^2 s^2 + noise_var) I). Returns the
    responsibilities w (batch, 8) and the variance (batch, 1, 1).
    a, noise_var: (batch,)."""
    var = (a**2 * MODE_STD**2 + noise_var)[:, None]
    d2 = ((x[:, None, :] - a[:, None, None] * means) ** 2).sum(-1)
    return torch.softmax(-d2 / (2 * var), dim=1), var[..., None]


def mixture_fm_velocity(x, t, means=MEANS):
    """Exact marginal velocity of the linear path for the 8-Gaussians mixture:
    v*(x, t) = sum_k w_k(x, t) v*_k(x, t), v*_k the Gaussian one of
    gaussian.py:closed_form with Sigma = s^2 I. x: (batch, 2), t: (batch,)."""
    t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
    w, var = _mixture_posterior(x, 1 - t, t**2, means)
    tb = t[:, None, None]
    gain = (tb - (1 - tb) * MODE_STD**2) / var  # K_t C_t^{-1} of component k
    v_k = -means + gain * (x[:, None, :] - (1 - tb) * means)
    return (w[..., None] * v_k).sum(1)


# --8<-- [end:mixture_velocity]


# --8<-- [start:vp_velocity]
import torch

from snippets.flow_matching.steps import _mixture_posterior
from snippets.flow_matching.toy2d import MEANS

B_MIN, B_MAX = 0.1, 20.0


def vp_alpha(s):
    """alpha(s) = exp(-1/2 int_0^s beta), beta(s) = B_MIN + s (B_MAX - B_MIN);
    Eq. (11), arXiv:2011.13456."""
    return torch.exp(-0.25 * s**2 * (B_MAX - B_MIN) - 0.5 * s * B_MIN)


def vp_gaussian_velocity(x, s, mu, cov):
    """dx/ds = -1/2 beta(s) (x + grad log p_s(x)), Eq. (13), arXiv:2011.13456, for data
    N(mu, cov): p_s = N(alpha mu, alpha^2 cov + (1 - alpha^2) I).
    x: (batch, d), s: (batch,)."""
    s = torch.as_tensor(s, dtype=x.dtype).expand(x.shape[0])[:, None, None]
    a, beta = vp_alpha(s), B_MIN + s * (B_MAX - B_MIN)
    C = a**2 * cov + (1 - a**2) * torch.eye(x.shape[1], dtype=x.dtype)
    score = -torch.linalg.solve(C, (x - a[:, :, 0] * mu)[..., None])[..., 0]
    return -0.5 * beta[:, :, 0] * (x + score)


def vp_mixture_velocity(x, s, means=MEANS):
    """Same ODE for the 8-Gaussians mixture: the score is the responsibility-weighted
    sum."""
    s = torch.as_tensor(s, dtype=x.dtype).expand(x.shape[0])
    a, beta = vp_alpha(s), B_MIN + s * (B_MAX - B_MIN)
    w, var = _mixture_posterior(x, a, 1 - a**2, means)
    score = (w[..., None] * -(x[:, None, :] - a[:, None, None] * means) / var).sum(1)
    return -0.5 * beta[:, None] * (x + score)


# --8<-- [end:vp_velocity]


# --8<-- [start:errors]
import torch

from snippets.flow_matching.sampling import euler_sample


def euler_error_curve(velocity, x1, steps=(1, 2, 4, 8, 16, 32, 64), ref_steps=1024):
    """RMS distance between the Euler solution with n steps and a ref_steps-step
    solution from the same start x1 (batch, d). returns {n: error}."""
    ref = euler_sample(velocity, x1, ref_steps)
    rms = lambda d: d.pow(2).sum(-1).mean().sqrt().item()
    return {n: rms(euler_sample(velocity, x1, n) - ref) for n in steps}


# --8<-- [end:errors]


import functools
import os


@functools.lru_cache(maxsize=1)
def _four_curves(pid: int, steps=(4, 8, 16, 32, 64)):
    """Euler error curves of the four (data, ODE) pairs from the same 1000 starts,
    shared by two tests. pid (the caller's process id) is in the cache key so that a
    forked process (mutation testing) computes its own."""
    from snippets.flow_matching.gaussian import COV, MU, marginal_velocity

    g = torch.Generator().manual_seed(0)
    z = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    fm_g = lambda x, t: marginal_velocity(x, t, MU, COV)
    vp_g = lambda x, s: vp_gaussian_velocity(x, s, MU, COV)
    return {
        "fm_mix": euler_error_curve(mixture_fm_velocity, z, steps),
        "vp_mix": euler_error_curve(vp_mixture_velocity, z, steps),
        "fm_g": euler_error_curve(fm_g, z, steps),
        "vp_g": euler_error_curve(vp_g, z, steps),
    }


def test_qualifies_straight_paths_need_few_steps():
    c = _four_curves(os.getpid())
    # Holds: narrow modes (concentrated data) -> the linear path's trajectories are
    # nearly straight, and the flow ODE needs fewer Euler steps than the VP
    # probability-flow ODE (at most 0.6 of its error at every step count), and 8 steps
    # already bring the error below one mode standard deviation (MODE_STD = 0.1):
    # samples land in the right mode.
    for n in (4, 8, 16):
        assert c["fm_mix"][n] < 0.6 * c["vp_mix"][n], (n, c["fm_mix"], c["vp_mix"])
    assert c["fm_mix"][8] < MODE_STD, f"mixture, FM with 8 steps: {c['fm_mix'][8]:.4f}"
    # Does not hold in general: for broad Gaussian data (variance comparable to the
    # noise) the VP ODE is the straighter one and beats the flow ODE at the same number
    # of steps.
    for n in (4, 8, 16):
        assert c["vp_g"][n] < c["fm_g"][n], (n, c["fm_g"][n], c["vp_g"][n])


def test_euler_error_is_first_order_once_steps_resolve_the_path():
    # Euler's global error is C h + O(h^2); measured against the 1024-step solution the
    # ratio err(64) / err(32) tends to (1/64 - 1/1024) / (1/32 - 1/1024) = 0.48. The
    # band [0.4, 0.6] leaves room for the O(h^2) remainder.
    for name, c in _four_curves(os.getpid()).items():
        assert 0.4 < c[64] / c[32] < 0.6, (name, c)


def test_mixture_velocities_are_posterior_weighted_gaussian_velocities():
    # For a mixture, E[x1 - x0 | x_t] = sum_k P(k | x_t) E[x1 - x0 | x_t, k]: the
    # Gaussian closed form of each mode, weighted by Bayes' rule with that mode's
    # marginal N(a m_k, (a^2 s^2 + noise_var) I); the same holds for the score in the
    # VP ODE. Checked against separately written pieces (gaussian.py's
    # eigendecomposition, torch.distributions for Bayes' rule) on three unequal modes,
    # with t as a Python float (the result must keep float64).
    from snippets.flow_matching.gaussian import marginal_velocity

    F64 = torch.float64
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, generator=g, dtype=F64)
    means = torch.tensor([[1.0, -0.5], [-0.8, 0.3], [0.2, 1.1]], dtype=F64)
    cov = MODE_STD**2 * torch.eye(2, dtype=F64)
    for t in (0.2, 0.37, 0.8):
        alpha = vp_alpha(torch.tensor(t, dtype=F64)).item()
        cases = (
            (mixture_fm_velocity, marginal_velocity, 1 - t, t**2),
            (vp_mixture_velocity, vp_gaussian_velocity, alpha, 1 - alpha**2),
        )
        for velocity, gaussian, a, noise_var in cases:
            scale = (a**2 * MODE_STD**2 + noise_var) ** 0.5
            log_lik = torch.stack(
                [
                    torch.distributions.Normal(a * m, scale).log_prob(x).sum(-1)
                    for m in means
                ],
                dim=1,
            )
            w = torch.softmax(log_lik, dim=1)  # Bayes' rule, equal priors
            expected = sum(
                w[:, k, None] * gaussian(x, t, means[k], cov) for k in range(3)
            )
            out = velocity(x, t, means)
            assert out.dtype == F64
            torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


def test_vp_alpha_solves_its_ode():
    # alpha(s) = exp(-1/2 int_0^s beta(u) du), beta(u) = B_MIN + u (B_MAX - B_MIN)
    # (Eq. (11), arXiv:2011.13456): alpha(0) = 1 and d log alpha / ds = -beta(s) / 2.
    s = torch.linspace(0, 1, 11, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(vp_alpha(s).log().sum(), s)
    beta = B_MIN + s.detach() * (B_MAX - B_MIN)
    torch.testing.assert_close(slope, -beta / 2, atol=1e-12, rtol=0)
    assert vp_alpha(torch.zeros((), dtype=torch.float64)).item() == 1.0
