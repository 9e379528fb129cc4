"""KL between the policy's and the reference model's Gaussian step (arXiv:2505.05470, Sec. 4,
"From ODE to SDE", the unnumbered closed form after Eq. (9)).

Both steps are N(mean, s^2 I) with the same s = sigma_t sqrt(|dt|) (the noise does not depend
on the network), so the KL is closed form:
    KL = |mean_theta - mean_ref|^2 / (2 s^2)
       = |dt| / 2 * (sigma_t (1 - t) / (2t) + 1 / sigma_t)^2 * |v_theta - v_ref|^2.
"""

# --8<-- [start:step_kl]
import torch


def step_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std, sigma, sigma_next) -> torch.Tensor:
    """KL(N(mean, s^2 I) || N(ref_mean, s^2 I)), s = std * sqrt(sigma - sigma_next).
    mean, ref_mean: (batch, *dims); std, sigma, sigma_next broadcastable. returns (batch,)."""
    var = std ** 2 * (sigma - sigma_next)
    kl = (mean - ref_mean) ** 2 / (2 * var)
    return kl.reshape(kl.shape[0], -1).sum(1)  # sum over non-batch dims
# --8<-- [end:step_kl]


def test_step_kl_matches_torch_and_the_velocity_form():
    from snippets.flow_grpo.sde import sde_step_with_logprob

    g = torch.Generator().manual_seed(0)
    x, v, v_ref = (torch.randn(5, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    t, t_next = 0.6, 0.5
    _, _, mean, std = sde_step_with_logprob(v, x, t, t_next)
    _, _, ref_mean, _ = sde_step_with_logprob(v_ref, x, t, t_next)
    kl = step_kl(mean, ref_mean, std, t, t_next)
    s = std * (t - t_next) ** 0.5
    N = lambda m: torch.distributions.Independent(torch.distributions.Normal(m, s.expand_as(m)), 2)
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(N(mean), N(ref_mean)), atol=1e-10, rtol=0)
    # The paper's velocity form of the same quantity.
    sig = 0.7 * (t / (1 - t)) ** 0.5
    paper = (t - t_next) / 2 * (sig * (1 - t) / (2 * t) + 1 / sig) ** 2 * (v - v_ref).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(kl, paper, atol=1e-10, rtol=0)
