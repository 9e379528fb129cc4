"""One step of Flow-GRPO's SDE sampler and the Gaussian log-density of the step
(Liu et al., Flow-GRPO, arXiv:2505.05470, Sec. 4 "From ODE to SDE", Eqs. (8)-(9)).

Convention of snippets/flow_matching/path.py: x_t = (1 - t) x0 + t x1, t = 1 is noise;
the sampler goes from sigma (= t) down to sigma_next, so dt = sigma_next - sigma < 0.
The ODE dx = v dt and the SDE (Eq. (8))

    dx = [v + sigma_t^2 / (2t) (x + (1 - t) v)] dt + sigma_t dw,
    sigma_t = a sqrt(t / (1 - t))

have the same marginals p_t (the extra drift is -sigma_t^2/2 times the score
grad log p_t(x) = -(x + (1 - t) v) / t). Euler-Maruyama makes one step a Gaussian
(Eq. (9)):

    x_{t+dt} = x_t + [v + sigma_t^2/(2t) (x_t + (1 - t) v)] dt + sigma_t sqrt(-dt) eps.
"""

# --8<-- [start:sde_step]
import math

import torch


def _per_batch(s, x: torch.Tensor) -> torch.Tensor:
    """float, () or (batch,) -> a tensor broadcastable against x (batch, *dims), on x's
    device and in x's dtype ((batch,) becomes (batch, 1, ..., 1))."""
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def sde_step_with_logprob(
    velocity, x, sigma, sigma_next, *, noise_level=0.7, prev_sample=None, noise=None
):
    """One Flow-GRPO SDE step from sigma down to sigma_next,
    0 <= sigma_next < sigma < 1.

    velocity, x: (batch, *dims), the model output v(x, sigma) and the current sample.
    sigma, sigma_next: floats or tensors broadcastable per batch element ((batch,) is
    reshaped). returns (x_next, log_prob, mean, std):
      mean     (batch, *dims)  the drift formula, grouped as in the reference
      std      noise_level * sqrt(sigma / (1 - sigma)), before the sqrt(|dt|) factor
      x_next   prev_sample if given, else mean + std * sqrt(sigma - sigma_next) * noise
      log_prob (batch,)        log N(x_next; mean, std^2 |dt| I), SUMMED over all
                               non-batch dims (the reference averages them); x_next is
                               a fixed action (no gradient through it).
    """
    sigma, sigma_next = _per_batch(sigma, x), _per_batch(sigma_next, x)
    dt = sigma_next - sigma  # < 0: from noise towards data
    # sigma_t = a sqrt(t / (1 - t)), after Eq. (9)
    std = noise_level * torch.sqrt(sigma / (1 - sigma))
    # Eq. (9)'s mean x + [v + sigma_t^2/(2t) (x + (1 - t) v)] dt with the x terms and
    # the v terms collected:
    # x (1 + sigma_t^2 dt / (2t)) + v (1 + sigma_t^2 (1 - t) / (2t)) dt
    mean = (
        x * (1 + std**2 / (2 * sigma) * dt)
        + velocity * (1 + std**2 * (1 - sigma) / (2 * sigma)) * dt
    )
    step_std = std * torch.sqrt(-dt)  # sigma_t sqrt(|dt|)
    if prev_sample is None:
        if noise is None:
            noise = torch.randn_like(x)
        prev_sample = mean + step_std * noise
    x_next = prev_sample
    log_prob = (
        -((x_next.detach() - mean) ** 2) / (2 * step_std**2)
        - torch.log(step_std)
        - 0.5 * math.log(2 * math.pi)
    )
    log_prob = log_prob.reshape(x.shape[0], -1).sum(dim=1)  # sum over non-batch dims
    return x_next, log_prob, mean, std


# --8<-- [end:sde_step]


# --8<-- [start:paper_form]
import torch


def paper_mean(velocity, x, t, dt, noise_level=0.7):
    """The Euler-Maruyama mean as the paper writes it (Eq. (9), arXiv:2505.05470):
    x + [v + sigma_t^2 / (2t) (x + (1 - t) v)] dt. Scalars t, dt."""
    sigma_t = noise_level * (t / (1 - t)) ** 0.5
    return x + (velocity + sigma_t**2 / (2 * t) * (x + (1 - t) * velocity)) * dt


# --8<-- [end:paper_form]


def paper_mean_correcting_v_only(velocity, x, t, dt, noise_level=0.7):
    """A misreading of Eq. (9) with the score correction on v alone,
    x + [v + sigma_t^2 / (2t) (1 - t) v] dt (the x_t term dropped): a
    counterfactual of paper_mean."""
    sigma_t = noise_level * (t / (1 - t)) ** 0.5
    return x + (velocity + sigma_t**2 / (2 * t) * (1 - t) * velocity) * dt


def sde_step_mean_over_dims(velocity, x, sigma, sigma_next, **kw):
    """sde_step_with_logprob with the log-prob AVERAGED over the non-batch dims, as
    the reference does: a counterfactual of the summed log-density."""
    x_next, log_prob, mean, std = sde_step_with_logprob(
        velocity, x, sigma, sigma_next, **kw
    )
    return x_next, log_prob / x[0].numel(), mean, std


F64 = torch.float64


def test_grouped_mean_is_the_paper_formula(paper=paper_mean):
    g = torch.Generator().manual_seed(0)
    x, v, noise = (torch.randn(6, 4, 3, 3, generator=g, dtype=F64) for _ in range(3))
    for t, t_next in [(0.9, 0.8), (0.5, 0.45), (0.1, 0.02)]:
        _, _, mean, _ = sde_step_with_logprob(v, x, t, t_next, noise=noise)
        expected = paper(v, x, t, t_next - t)
        torch.testing.assert_close(mean, expected, atol=1e-12, rtol=0)


def test_step_log_prob_matches_torch_distributions(step=sde_step_with_logprob):
    g = torch.Generator().manual_seed(1)
    x, v, noise = (torch.randn(6, 4, 3, 3, generator=g, dtype=F64) for _ in range(3))
    # one sigma per batch element
    sigma = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    sigma_next = sigma - 0.05
    x_next, log_prob, mean, std = step(v, x, sigma, sigma_next, noise=noise)
    assert log_prob.shape == (6,)
    scale = 0.7 * (sigma / (1 - sigma)).sqrt() * 0.05**0.5
    scale = scale.reshape(6, 1, 1, 1).expand_as(x)
    dist = torch.distributions.Independent(torch.distributions.Normal(mean, scale), 3)
    torch.testing.assert_close(log_prob, dist.log_prob(x_next), atol=1e-10, rtol=0)
    torch.testing.assert_close(x_next, mean + scale * noise, atol=1e-12, rtol=0)
    # prev_sample given: it is returned unchanged and scored under the same Gaussian.
    x_given = torch.randn_like(x)
    out, lp, _, _ = sde_step_with_logprob(v, x, sigma, sigma_next, prev_sample=x_given)
    assert out is x_given
    torch.testing.assert_close(lp, dist.log_prob(x_given), atol=1e-10, rtol=0)
    # x of shape (batch,): no non-batch dims, the log-prob stays per element, (batch,).
    v1, x1, n1 = v[:, 0, 0, 0], x[:, 0, 0, 0], noise[:, 0, 0, 0]
    x1_next, lp1, mean1, _ = sde_step_with_logprob(v1, x1, sigma, sigma_next, noise=n1)
    assert lp1.shape == (6,)
    expected = torch.distributions.Normal(mean1, scale[:, 0, 0, 0]).log_prob(x1_next)
    torch.testing.assert_close(lp1, expected, atol=1e-10, rtol=0)
    # x of shape (batch, d) with one sigma per row (6 rows, d = 4): each row is scored
    # under its own sigma, as the same rows of the 4-D case.
    v2, x2, n2 = (a[:, :, 0, 0] for a in (v, x, noise))
    _, lp2, _, _ = sde_step_with_logprob(v2, x2, sigma, sigma_next, noise=n2)
    dist2 = torch.distributions.Independent(
        torch.distributions.Normal(mean[:, :, 0, 0], scale[:, :, 0, 0]), 1
    )
    torch.testing.assert_close(
        lp2, dist2.log_prob(x_next[:, :, 0, 0]), atol=1e-10, rtol=0
    )


def test_step_runs_on_the_device_of_the_sample():
    # The sigmas of a schedule often live on the CPU while x sits on an accelerator;
    # they are moved to x's device. The "meta" device (shapes only) stands in for a
    # GPU: a CPU tensor of shape (batch,) cannot be mixed with it.
    x = torch.zeros(6, 4, 3, 3, device="meta")
    sigma = torch.linspace(0.9, 0.4, 6)
    for s, s_next in ((sigma, sigma - 0.05), (0.6, 0.5)):
        x_next, log_prob, mean, std = sde_step_with_logprob(x, x, s, s_next)
        assert x_next.device == x.device and x_next.shape == x.shape
        assert log_prob.device == x.device and log_prob.shape == (6,)


# --8<-- [start:note_formula]
import torch

from snippets.flow_grpo.sde import sde_step_with_logprob


def note_vs_actual_step(x, v, t, t_next, noise):
    """The note writes x_{t+dt} | x_t ~ N(mu(x_t, t) dt, sigma_t^2 dt I). Returns the
    log-densities of the sampled x_{t+dt} under the note's mean mu dt and under the
    actual mean x_t + mu dt, both with variance sigma_t^2 |dt| (dt < 0 here, so
    sigma_t^2 dt would be negative)."""
    x_next, log_prob, mean, std = sde_step_with_logprob(v, x, t, t_next, noise=noise)
    dt = t_next - t
    mu_dt = mean - x  # mu(x_t, t) dt: the drift alone
    scale = std * abs(dt) ** 0.5
    logpdf = lambda m: torch.distributions.Normal(m, scale).log_prob(x_next).flatten(1)
    return logpdf(mu_dt).sum(1), logpdf(x + mu_dt).sum(1), log_prob


# --8<-- [end:note_formula]


def test_qualifies_note_transition_formula():
    g = torch.Generator().manual_seed(2)
    x, v, noise = (torch.randn(8, 2, generator=g, dtype=F64) for _ in range(3))
    note, actual, log_prob = note_vs_actual_step(x, v, 0.6, 0.5, noise)
    # Holds: the step is an isotropic Gaussian with variance sigma_t^2 |dt| (a
    # multivariate Gaussian density, summed over dimensions) once the mean is
    # x_t + mu dt.
    torch.testing.assert_close(actual, log_prob, atol=1e-10, rtol=0)
    # Does not hold as written: the mean mu(x_t, t) dt leaves out x_t. The sampled point
    # x_t + mu dt + s eps (s = sigma_t sqrt|dt|) then loses
    # (|x_t + s eps|^2 - |s eps|^2) / (2 s^2) nats.
    s = 0.7 * (0.6 / 0.4) ** 0.5 * 0.1**0.5
    gap = ((x + s * noise).pow(2).sum(1) - (s * noise).pow(2).sum(1)) / (2 * s**2)
    torch.testing.assert_close(actual - note, gap, atol=1e-9, rtol=0)
    # On average |x_t|^2 / (2 s^2) = 2 / (2 * 0.0735) = 13.6 nats here (x_t ~ N(0, I)).
    assert (actual - note).mean() > 10, f"note vs actual gap: {actual - note}"


# --8<-- [start:mean_vs_sum]
import torch

from snippets.flow_grpo.sde import sde_step_with_logprob


def ratios_sum_vs_mean(x, v_old, v_new, t, t_next, noise):
    """Importance ratio pi_new / pi_old of one sampled step, (batch,), with the
    log-density summed over the D dimensions (a true density ratio) or averaged over
    them as the reference does (flow_grpo/diffusers_patch/sd3_sde_with_logprob.py:
    log_prob.mean over all but the batch dimension). Returns (r_sum, r_mean, D)."""
    x_next, lp_old, _, _ = sde_step_with_logprob(v_old, x, t, t_next, noise=noise)
    _, lp_new, _, _ = sde_step_with_logprob(v_new, x, t, t_next, prev_sample=x_next)
    D = x.shape[1:].numel()
    return torch.exp(lp_new - lp_old), torch.exp((lp_new - lp_old) / D), D


def is_clipped(ratio: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """Where PPO's clip(ratio, 1 - eps, 1 + eps) is active, (batch,) bool."""
    return (ratio - 1).abs() > clip_eps


# --8<-- [end:mean_vs_sum]


def test_clip_is_active_exactly_where_clamp_stops_the_gradient():
    # PPO's clip(r, 1 - eps, 1 + eps) passes the gradient for r inside the closed
    # interval (torch.clamp does so at the bounds too) and stops it outside: is_clipped
    # marks the second set. eps = 0.25 and the bounds 0.75, 1.25 are exact in binary.
    r = torch.tensor([0.5, 0.75, 0.9, 1.0, 1.25, 1.5], requires_grad=True)
    r.clamp(0.75, 1.25).sum().backward()
    assert torch.equal(is_clipped(r.detach(), 0.25), r.grad == 0), r.grad
    assert is_clipped(r.detach(), 0.25).tolist() == [
        True,
        False,
        False,
        False,
        False,
        True,
    ]


def test_qualifies_mean_over_dims_takes_the_dth_root_of_the_ratio():
    def outside(m, s, lo, hi):
        """P(N(m, s^2) < lo) + P(N(m, s^2) > hi), elementwise."""
        N = torch.distributions.Normal(m, s)
        lo, hi = torch.tensor(lo, dtype=F64), torch.tensor(hi, dtype=F64)
        return N.cdf(lo) + 1 - N.cdf(hi)

    n = 512
    g = torch.Generator().manual_seed(3)
    x, v, noise = (torch.randn(n, 4, 16, 16, generator=g, dtype=F64) for _ in range(3))
    g = torch.Generator().manual_seed(4)
    # a small policy update
    v_new = v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
    t, t_next = 0.5, 0.45
    r_sum, r_mean, D = ratios_sum_vs_mean(x, v, v_new, t, t_next, noise)
    assert D == 1024
    # Holds, as an identity: exp(mean log-ratio) = (true ratio)^(1/D).
    torch.testing.assert_close(r_mean, r_sum ** (1 / D), atol=1e-12, rtol=1e-9)
    # Theory of the true log-ratio at the sampled point x_next = m_old + s z: with
    # u = (m_new - m_old) / s per dimension, log r = sum_d (z_d u_d - u_d^2 / 2)
    # exactly (checked on this noise z), hence ~ N(-|u|^2 / 2, |u|^2) over z.
    _, _, m_old, std = sde_step_with_logprob(v, x, t, t_next)
    _, _, m_new, _ = sde_step_with_logprob(v_new, x, t, t_next)
    u_d = ((m_new - m_old) / (std * (t - t_next) ** 0.5)).flatten(1)
    log_r = (noise.flatten(1) * u_d - u_d**2 / 2).sum(1)
    torch.testing.assert_close(r_sum.log(), log_r, atol=1e-8, rtol=1e-8)
    u = u_d.norm(dim=1)
    frac = lambda mask: mask.double().mean().item()
    se5 = lambda p: 5 * (p * (1 - p) / n) ** 0.5  # 5 standard errors of a fraction
    # Holds at clip range 0.2: the true ratio leaves [0.8, 1.2] for most samples (the
    # theory says how many), the averaged one never does (that would take
    # |log r| > D log 1.2 = 187).
    p = outside(-(u**2) / 2, u, math.log(0.8), math.log(1.2)).mean().item()
    measured = frac(is_clipped(r_sum, 0.2))
    assert p > 0.5 and abs(measured - p) < se5(p), (p, measured)
    assert frac(is_clipped(r_mean, 0.2)) == 0.0
    # Does not hold at the reference's clip range 1e-4 (config/base.py:
    # train.clip_range): clipping r^(1/D) at 1 +- eps IS clipping the true ratio at
    # (1 +- eps)^D = [0.90, 1.11] for D = 1024, and that window is active for most
    # samples here.
    eps = 1e-4
    lo, hi = (1 - eps) ** D, (1 + eps) ** D
    assert abs(lo - 0.9027) < 1e-4 and abs(hi - 1.1078) < 1e-4
    assert torch.equal(is_clipped(r_mean, eps), (r_sum < lo) | (r_sum > hi))
    p = outside(-(u**2) / 2, u, math.log(lo), math.log(hi)).mean().item()
    measured = frac(is_clipped(r_mean, eps))
    assert p > 0.5 and abs(measured - p) < se5(p), (p, measured)
