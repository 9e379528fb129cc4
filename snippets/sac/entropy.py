"""Entropy of the policy: analytic for a Gaussian, Monte Carlo -log pi(a|s) for a tanh-squashed one."""

# --8<-- [start:entropy_estimates]
import math

import torch

from snippets.sac.distributions import diagonal_gaussian, tanh_normal


def gaussian_entropy(std):
    """Analytic entropy of N(mean, diag(std^2)). std: (batch, act_dim) -> (batch,)."""
    # H = sum_j (1/2) log(2 pi e sigma_j^2)
    return (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).sum(-1)


def mc_entropy(dist, num_samples):
    """Monte Carlo entropy: H = E_{a~pi}[-log pi(a|s)] ~ -(1/N) sum_n log pi(a_n|s). -> (batch,)."""
    a = dist.rsample((num_samples,))                 # (N, batch, act_dim); rsample keeps the gradient path
    return -dist.log_prob(a).mean(0)


def squashed_entropy_decomposition(mean, std, num_samples):
    """H(tanh U) = H(U) + E[log(1 - tanh(U)^2)]  (change of variables, Eq. (21) of arXiv:1801.01290).

    mean, std: (batch, act_dim). returns (H of the squashed policy by MC, H(U) analytic,
    E[log(1 - tanh^2 U)] by MC), each (batch,).
    """
    u = mean + std * torch.randn(num_samples, *mean.shape)
    a = torch.tanh(u)
    h_squashed = -tanh_normal(mean, std).log_prob(a).mean(0)
    log_det = torch.log1p(-a.pow(2).clamp(max=1 - 1e-7)).sum(-1).mean(0)  # <= 0: tanh shrinks volume
    return h_squashed, gaussian_entropy(std), log_det
# --8<-- [end:entropy_estimates]


# --8<-- [start:homework_entropy]
import torch


def homework_entropy(action_distribution):
    """What the homework's entropy(dist) computes: a ONE-sample estimate per state, -log pi(a~|s). -> (batch,)."""
    action = action_distribution.rsample()            # its own sample, drawn inside
    return -action_distribution.log_prob(action)
# --8<-- [end:homework_entropy]


def test_mc_entropy_matches_analytic_entropy_of_a_gaussian():
    torch.manual_seed(0)
    mean, std = torch.randn(4, 2), torch.rand(4, 2) + 0.2
    dist = diagonal_gaussian(mean, std)
    torch.testing.assert_close(gaussian_entropy(std), dist.entropy(), atol=1e-6, rtol=0)
    est = mc_entropy(dist, 100_000)
    # Var[-log N] = d/2 = 1 for 2 dims, so the standard error is 1/sqrt(1e5) = 0.003.
    torch.testing.assert_close(est, dist.entropy(), atol=0.015, rtol=0)


def test_qualifies_analytic_entropy_in_actor_loss():
    torch.manual_seed(0)
    # Holds: for an unsquashed Gaussian policy the analytic entropy IS the expectation of -log pi(a|s),
    # so using it in the actor loss is a zero-variance replacement of the sampled estimate.
    g = diagonal_gaussian(torch.zeros(1, 1), torch.ones(1, 1))
    assert abs(mc_entropy(g, 200_000).item() - g.entropy().item()) < 0.01
    # Does not hold for SAC's tanh-squashed policy: torch has no closed form ...
    squashed = tanh_normal(torch.zeros(1, 1), torch.ones(1, 1))
    try:
        squashed.entropy()
        raise AssertionError("tanh_normal(...).entropy() was expected to raise")
    except NotImplementedError:
        pass
    # ... and the Gaussian's entropy is the wrong number: it ignores the squashing term,
    mean, std = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    h_sq, h_gauss, log_det = squashed_entropy_decomposition(mean, std, 400_000)
    torch.testing.assert_close(h_sq, h_gauss + log_det, atol=0.01, rtol=0)  # H(tanh U) = H(U) + E[log|J|]
    assert (h_gauss - h_sq > 0.7).all(), (h_gauss, h_sq)
    # ... which depends on the mean: the Gaussian entropy is blind to saturation at +-1, the true one is not.
    assert h_gauss[0] == h_gauss[1] and h_sq[0] - h_sq[1] > 1.0, h_sq
    # And the homework's entropy(dist) is itself a one-sample estimate: two calls give different values.
    torch.manual_seed(1)
    e1, e2 = homework_entropy(squashed), homework_entropy(squashed)
    assert (e1 - e2).abs().item() > 1e-3
