"""Entropy of the policy: analytic for a Gaussian, Monte Carlo -log pi(a|s) for a
tanh-squashed one."""

# --8<-- [start:entropy_estimates]
import math

import torch

from snippets.sac.distributions import diagonal_gaussian, tanh_normal


def gaussian_entropy(std):
    """Analytic entropy of N(mean, diag(std^2)). std: (batch, act_dim) -> (batch,)."""
    # H = sum_j (1/2) log(2 pi e sigma_j^2)
    return (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).sum(-1)


def mc_entropy(dist, num_samples, sample_from=None):
    """Monte Carlo entropy: H = E_{a~pi}[-log pi(a|s)] ~ -(1/N) sum_n log pi(a_n|s).
    -> (batch,). The a_n must come from pi itself (sample_from=None); drawn from
    another policy (say, the buffer's) the average is the cross-entropy H + KL."""
    source = dist if sample_from is None else sample_from
    a = source.rsample((num_samples,))  # (N, batch, act_dim); keeps the gradient path
    return -dist.log_prob(a).mean(0)


def squashed_entropy_decomposition(mean, std, num_samples):
    """H(tanh U) = H(U) + E[log(1 - tanh(U)^2)]
    (change of variables, Eq. (21) of arXiv:1801.01290).

    mean, std: (batch, act_dim). returns (H of the squashed policy by MC, H(U) analytic,
    E[log(1 - tanh^2 U)] by MC), each (batch,).
    """
    u = mean + std * torch.randn(num_samples, *mean.shape)
    a = torch.tanh(u)
    h_squashed = -tanh_normal(mean, std).log_prob(a).mean(0)
    # <= 0: tanh shrinks volume
    log_det = torch.log1p(-a.pow(2).clamp(max=1 - 1e-7)).sum(-1).mean(0)
    return h_squashed, gaussian_entropy(std), log_det


# --8<-- [end:entropy_estimates]


# --8<-- [start:homework_entropy]
import torch


def homework_entropy(action_distribution):
    """What the homework's entropy(dist) computes: a ONE-sample estimate per state,
    -log pi(a~|s). -> (batch,)."""
    action = action_distribution.rsample()  # its own sample, drawn inside
    return -action_distribution.log_prob(action)


# --8<-- [end:homework_entropy]


def squashed_entropy_by_quadrature(mu, sigma):
    """For U ~ N(mu, sigma^2): (H(U), E[log(1 - tanh(U)^2)], H(tanh U)), the middle
    term by the trapezoidal rule on a float64 grid (mu +- 12 sigma)."""
    u = torch.linspace(mu - 12 * sigma, mu + 12 * sigma, 48_001, dtype=torch.float64)
    w = torch.exp(-((u - mu) ** 2) / (2 * sigma**2)) / (sigma * (2 * math.pi) ** 0.5)
    # log(1 - tanh(u)^2) in the stable form 2 (log 2 - u - softplus(-2u))
    log_det = 2 * (math.log(2) - u - torch.nn.functional.softplus(-2 * u))
    h_u = 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    e_log_det = torch.trapezoid(w * log_det, u).item()
    return h_u, e_log_det, h_u + e_log_det


def older_policy(mean, std):
    """A behaviour policy one unit of mean away from pi: the buffer's, not pi's."""
    return diagonal_gaussian(mean + 1.0, std)


def test_mc_entropy_matches_analytic_entropy_of_a_gaussian(behaviour=diagonal_gaussian):
    torch.manual_seed(0)
    mean, std = torch.randn(4, 2), torch.rand(4, 2) + 0.2
    dist = diagonal_gaussian(mean, std)
    torch.testing.assert_close(gaussian_entropy(std), dist.entropy(), atol=1e-6, rtol=0)
    # Any batch shape: the sum runs over the last (action) dimension only.
    std3 = torch.rand(2, 3, 4) + 0.2
    reference = diagonal_gaussian(torch.zeros_like(std3), std3).entropy()
    torch.testing.assert_close(gaussian_entropy(std3), reference, atol=1e-6, rtol=0)
    est = mc_entropy(dist, 100_000, sample_from=behaviour(mean, std))
    # Var[-log N] = d/2 = 1 for 2 dims: standard error 1/sqrt(1e5) = 0.003; 0.015 is 5.
    torch.testing.assert_close(est, dist.entropy(), atol=0.015, rtol=0)


def test_squashing_term_by_quadrature_is_even_and_saturates_linearly():
    # log(1 - tanh(u)^2) = -2 log cosh(u) is even in u: E[log(1 - tanh^2 U)] takes the
    # same value at mu and -mu (grids symmetric about mu; float64 rounding: 1e-10).
    for mu, sigma in ((1.0, 0.5), (1.0, 2.0), (3.0, 1.0)):
        e_plus = squashed_entropy_by_quadrature(mu, sigma)[1]
        assert abs(e_plus - squashed_entropy_by_quadrature(-mu, sigma)[1]) < 1e-10
    # Far from 0, for u > 0: log(1 - tanh^2 u) = 2 log 2 - 2u - 2 softplus(-2u), and
    # E[softplus(-2U)] = sum_k (-1)^(k+1) E[e^(-2kU)] / k, E[e^(-2kU)] =
    # e^(-2k mu + 2 k^2 sigma^2). mu = 5, sigma = 0.5: u < 0 is 10 sd away and five
    # terms leave < 1e-15; 1e-11 is the rounding of a float64 sum of 48,001 terms.
    mu, sigma = 5.0, 0.5
    h_u, e_log_det, h_tanh = squashed_entropy_by_quadrature(mu, sigma)
    tail = sum(
        (-1) ** (k + 1) * math.exp(-2 * k * mu + 2 * k**2 * sigma**2) / k
        for k in range(1, 6)
    )
    assert abs(e_log_det - (2 * math.log(2) - 2 * mu - 2 * tail)) < 1e-11
    std = torch.tensor([[sigma]], dtype=torch.float64)
    assert abs(h_u - gaussian_entropy(std).item()) < 1e-12
    assert h_tanh == h_u + e_log_det


def test_squashed_entropy_decomposition_terms_match_quadrature():
    torch.manual_seed(0)
    n = 100_000
    mean = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    std = torch.tensor([[1.0, 0.5], [0.8, 1.0]])
    h_sq, h_gauss, log_det = squashed_entropy_decomposition(mean, std, n)
    assert h_sq.shape == h_gauss.shape == log_det.shape == (2,)
    # E[log|J|] sums over the action dims, one quadrature per dim. The per-sample sum
    # has sd 1.29 and 1.47 (float64 MC, 4e5 samples): 4 standard errors < 6/sqrt(n).
    exact = torch.tensor(
        [
            sum(squashed_entropy_by_quadrature(m, s)[1] for m, s in zip(m_row, s_row))
            for m_row, s_row in zip(mean.tolist(), std.tolist())
        ]
    )
    assert (log_det - exact).abs().max() < 6 / n**0.5, (log_det, exact)
    # H(tanh U) - E[log|J|] is the MC estimate of H(U) = E[-log mu(U)], whose per-sample
    # sd is sqrt(d/2) = 1 for d = 2: within 4 standard errors of the analytic value.
    assert ((h_sq - log_det) - h_gauss).abs().max() < 4 / n**0.5
    # Far out, float32 tanh rounds to exactly 1: the clamp keeps log(1 - a^2) finite.
    far = squashed_entropy_decomposition(
        torch.full((1, 1), 10.0), torch.ones(1, 1), num_samples=100
    )
    assert torch.isfinite(far[2]).all()


def test_qualifies_analytic_entropy_in_actor_loss():
    torch.manual_seed(0)
    # Holds: for an unsquashed Gaussian policy the analytic entropy IS E[-log pi(a|s)]
    # (200,000 samples, sd of -log pi 0.71: standard error 0.0016; 0.01 is 6).
    g = diagonal_gaussian(torch.zeros(1, 1), torch.ones(1, 1))
    assert abs(mc_entropy(g, 200_000).item() - g.entropy().item()) < 0.01
    # Does not hold for SAC's tanh-squashed policy: torch has no closed form ...
    squashed = tanh_normal(torch.zeros(1, 1), torch.ones(1, 1))
    try:
        squashed.entropy()
        raise AssertionError("tanh_normal(...).entropy() was expected to raise")
    except NotImplementedError:
        pass
    # ... and the Gaussian's entropy is the wrong number: H(tanh U) = H(U) + E[log|J|],
    # with E[log(1 - tanh^2 U)] < 0, and it depends on the mean. The Monte Carlo
    # estimate agrees with the quadrature within 4 standard errors.
    n = 400_000
    mean, std = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    h_sq, h_gauss, log_det = squashed_entropy_decomposition(mean, std, n)
    exact = [
        squashed_entropy_by_quadrature(0.0, 1.0),
        squashed_entropy_by_quadrature(2.0, 1.0),
    ]
    for i, (h_u, e_log_det, h_tanh) in enumerate(exact):
        assert abs(h_gauss[i].item() - h_u) < 1e-6
        assert e_log_det < 0 and h_tanh < h_u  # the Gaussian entropy overstates H
        # sd of -log pi(tanh U): 0.22 (mu = 0) and 1.8 (mu = 2) on 1e5 samples;
        # 2.5 bounds both, so 4 standard errors are < 0.016
        assert abs(h_sq[i].item() - h_tanh) < 4 * 2.5 / n**0.5, (h_sq[i], h_tanh)
    # The Gaussian entropy is blind to saturation at +-1; the true one falls with mu.
    assert h_gauss[0] == h_gauss[1] and exact[1][2] < exact[0][2] - 1.0
    assert h_sq[1] < h_sq[0] - 1.0
    # And the homework's entropy(dist) is itself a one-sample estimate: unbiased over
    # many states, but a random number for each (two calls differ).
    batch = tanh_normal(torch.zeros(n, 1), torch.ones(n, 1))
    one_sample = homework_entropy(batch)
    se = one_sample.std().item() / n**0.5
    assert abs(one_sample.mean().item() - exact[0][2]) < 4 * se
    e1, e2 = homework_entropy(squashed), homework_entropy(squashed)
    assert (e1 - e2).abs().item() > 1e-3
