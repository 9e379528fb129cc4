"""The actor's two gradient estimators (REINFORCE and reparameterization) and where
the gradient flows.

Both estimate the gradient of J(theta) = E_{a~pi_theta(.|s)}[Q(s, a)]:
  REINFORCE:        grad J = E[grad_theta log pi_theta(a|s) Q(s, a)],
                    a sampled and held constant
  reparameterized:  grad J = E_eps[grad_theta Q(s, f_theta(eps; s))],
                    a = f_theta(eps; s) = tanh(mu + sigma eps)
"""

# --8<-- [start:reinforce]
import torch


def reinforce_actor_loss(dist, q_fn, num_actor_samples, temperature=0.0):
    """dist: policy over (batch, act_dim), log_prob -> (batch,);
    q_fn: (..., batch, act_dim) -> (..., batch).

    returns: scalar loss whose gradient is the REINFORCE estimate of
    -grad E[Q] - temperature grad H.
    """
    with torch.no_grad():
        a = dist.sample((num_actor_samples,))  # (K, batch, act_dim): constants
        q = q_fn(a)  # (K, batch): a weight, no gradient
    # grad J = E[grad log pi(a|s) Q(s,a)]: the gradient flows through log_prob's
    # parameters, not through a
    pg_loss = -(dist.log_prob(a) * q).mean()
    # entropy estimate with its own reparameterized sample:
    # H = E[-log pi(a~|s)], a~ = rsample()
    entropy = -dist.log_prob(dist.rsample()).mean()
    return pg_loss - temperature * entropy


# --8<-- [end:reinforce]


# --8<-- [start:reparameterize]
import torch


def reparam_actor_loss(dist, q_fn, num_actor_samples, temperature=0.0):
    """Same shapes as reinforce_actor_loss.
    rsample: a~ = tanh(mu + sigma * eps), eps ~ N(0, I)."""
    a = dist.rsample((num_actor_samples,))  # (K, batch, act_dim), differentiable
    # J_pi = E_{s~D, eps}[alpha log pi(f(eps;s)|s) - Q(s, f(eps;s))]
    #                                                   Eq. (9), arXiv:1812.05905
    return (temperature * dist.log_prob(a) - q_fn(a)).mean()


# --8<-- [end:reparameterize]


# --8<-- [start:gradient_samples]
import torch

from snippets.sac.distributions import tanh_normal


def q_toy(a, offset=0.0):
    """A fixed critic for one state: Q(s, a) = offset + 1 - 4 (a - 0.5)^2.
    a: (..., act_dim) -> (...)."""
    return offset + 1.0 - 4.0 * ((a - 0.5) ** 2).sum(-1)


def gradient_samples(loss_fn, num_actor_samples, repeats=4000, seed=0, offset=0.0):
    """`repeats` independent estimates of dJ/dmean (J = E[Q]) at mean = 0,
    log_std = -0.5. loss_fn: reinforce_actor_loss or reparam_actor_loss.

    Each row of the batch is its own copy of the parameters, so one backward pass
    gives `repeats` independent gradient estimates. returns: (repeats,) tensor.
    """
    torch.manual_seed(seed)
    mean = torch.zeros(repeats, 1, requires_grad=True)
    std = torch.full((repeats, 1), -0.5).exp()
    loss = loss_fn(
        tanh_normal(mean, std), lambda a: q_toy(a, offset), num_actor_samples
    )
    (loss * repeats).backward()  # the mean over rows -> one estimate per row
    return -mean.grad.squeeze(1)  # gradient of J = -loss


# --8<-- [end:gradient_samples]


import math

SIGMA = torch.tensor(-0.5).exp().item()  # the policy's std in gradient_samples


def exact_moments(offset=0.0):
    """Exact mean and variances of the two one-sample estimators at mean = 0, by
    quadrature over u ~ N(0, SIGMA^2), a = tanh(u) (float64):
      REINFORCE  g = (u / SIGMA^2) (offset + Q(a))    (score of N(u; mean, SIGMA^2))
      pathwise   g = Q'(a) (1 - a^2),  Q'(a) = -8 (a - 0.5)
    returns (dJ/dmean, Var REINFORCE, Var pathwise)."""
    u = torch.linspace(-12 * SIGMA, 12 * SIGMA, 48_001, dtype=torch.float64)
    w = torch.exp(-(u**2) / (2 * SIGMA**2)) / (SIGMA * (2 * torch.pi) ** 0.5)
    a = torch.tanh(u)
    g_rf = u / SIGMA**2 * (offset + 1 - 4 * (a - 0.5) ** 2)
    g_rp = -8 * (a - 0.5) * (1 - a**2)

    def e(x):
        return torch.trapezoid(w * x, u).item()

    return e(g_rp), e(g_rf**2) - e(g_rf) ** 2, e(g_rp**2) - e(g_rp) ** 2


def var_rel_se(x):
    """Relative standard error of the sample variance of x: sqrt((kurtosis - 1) / n)."""
    c = x.double() - x.double().mean()
    return (((c**4).mean() / (c**2).mean() ** 2 - 1) / len(x)).sqrt().item()


# Alternatives a critic of the claims would raise; the counterfactuals on
# docs/topics/sac/actor.md run the deciding tests with them and require them to fail.


def reparam_straight_through(dist, q_fn, num_actor_samples, temperature=0.0):
    """A pathwise loss that forgets tanh's derivative: the value is Q(tanh(u)), the
    gradient flows as if a = u (da/du = 1 instead of 1 - a^2). dist: tanh_normal."""
    u = dist.base_dist.base_dist.rsample((num_actor_samples,))  # (K, batch, act_dim)
    a = u + (torch.tanh(u) - u).detach()
    return (temperature * dist.log_prob(torch.tanh(u)) - q_fn(a)).mean()


def reinforce_repeated_sample(dist, q_fn, num_actor_samples, temperature=0.0):
    """reinforce_actor_loss with ONE action per state copied K times."""
    with torch.no_grad():
        one = dist.sample()  # (batch, act_dim)
        a = one.expand(num_actor_samples, *one.shape)  # (K, batch, act_dim)
        q = q_fn(a)
    pg_loss = -(dist.log_prob(a) * q).mean()
    entropy = -dist.log_prob(dist.rsample()).mean()
    return pg_loss - temperature * entropy


def test_reinforce_and_reparameterization_agree_and_reparam_has_lower_variance(
    reinforce=reinforce_actor_loss, reparam=reparam_actor_loss
):
    grad, var_rf, var_rp = exact_moments()
    assert grad > 1.0  # the true gradient is far from 0: agreeing on it means something
    rf = gradient_samples(reinforce, 1)
    rp = gradient_samples(reparam, 1, seed=1)
    for est in (rf, rp):  # both unbiased: within 4 standard errors of the exact value
        se = (est.var() / len(est)).sqrt().item()
        assert abs(est.mean().item() - grad) < 4 * se, (est.mean(), grad, se)
    # Their variances are the exact ones, within 4 relative standard errors.
    for est, var in ((rf, var_rf), (rp, var_rp)):
        assert abs(est.var().item() / var - 1) < 4 * var_rel_se(est), (est.var(), var)
    assert var_rf / var_rp > 2  # "much lower": exactly 4.2 here
    # Q-values of a real critic carry a large offset (Pendulum returns: -100 to
    # -1500). The pathwise gradient does not see a constant at all ...
    rf_off = gradient_samples(reinforce, 1, offset=-100.0)
    rp_off = gradient_samples(reparam, 1, seed=1, offset=-100.0)
    torch.testing.assert_close(rp_off, rp, atol=1e-4, rtol=0)
    # ... the score-function one multiplies it: its variance grows to
    # E[(c + Q)^2 s^2] - g^2, about c^2 / sigma^2 = 2.7e4, still unbiased.
    _, var_rf_off, _ = exact_moments(offset=-100.0)
    rel = rf_off.var().item() / var_rf_off - 1
    assert abs(rel) < 4 * var_rel_se(rf_off), (rf_off.var(), var_rf_off)
    assert var_rf_off / var_rp > 1000
    se_off = (rf_off.var() / len(rf_off)).sqrt().item()
    assert abs(rf_off.mean().item() - grad) < 4 * se_off


def test_variance_falls_as_one_over_num_actor_samples(
    reinforce=reinforce_actor_loss, reparam=reparam_actor_loss
):
    """K independent samples per state: Var(K) = Var(1) / K, checked against the
    exact one-sample variance, within 4 relative standard errors."""
    _, var_rf, var_rp = exact_moments()
    for estimator, var1 in ((reinforce, var_rf), (reparam, var_rp)):
        for k in (4, 16):
            est = gradient_samples(estimator, k, seed=3)
            ratio = var1 / est.var().item()
            assert abs(ratio / k - 1) < 4 * var_rel_se(est), (
                estimator.__name__,
                k,
                ratio,
            )


def test_gradient_flows_through_log_prob_in_reinforce_and_through_the_action(
    draw="sample",
):
    torch.manual_seed(0)
    mean = torch.zeros(8, 1, requires_grad=True)
    dist = tanh_normal(mean, torch.ones(8, 1))
    a = getattr(dist, draw)()  # REINFORCE's action: sample()
    assert a.grad_fn is None  # the sampled action: constant
    # ... but log pi(a|s) still depends on theta: d/dmean log N(u; mean, 1) = u - mean,
    # the score, with u = atanh(a) (float32 atanh: 1e-4)
    (g_logp,) = torch.autograd.grad(dist.log_prob(a).sum(), mean)
    torch.testing.assert_close(g_logp, torch.atanh(a), atol=1e-4, rtol=1e-4)
    # -Q(s, sample()) has no gradient at all: the reparameterized loss needs rsample().
    assert q_toy(a).requires_grad is False
    dist = tanh_normal(mean, torch.ones(8, 1))
    a_r = dist.rsample()
    (g_rs,) = torch.autograd.grad(q_toy(a_r).sum(), mean)
    # pathwise: dQ/da * da/du = -8 (a - 0.5) (1 - a^2)
    a_r = a_r.detach()
    torch.testing.assert_close(g_rs, -8 * (a_r - 0.5) * (1 - a_r**2), atol=1e-5, rtol=0)


def test_entropy_gradient_of_a_detached_sample_has_mean_zero(
    draw="sample", detach_weight=True
):
    """H(N(0, sigma^2)) = log sigma + const, so dH/dlog_sigma = 1 exactly.
    Three ways to differentiate -log pi(a) for one sample a per row:
      rsample (pathwise):  exactly 1 per sample;
      sample() directly:   1 - eps^2 per sample, mean 0 (the score has mean 0);
      score function:      (-log pi(a)) grad log pi(a) + grad(-log pi(a)), mean 1."""
    torch.manual_seed(0)
    n = 20_000
    log_std = torch.zeros(n, 1, requires_grad=True)

    def policy():
        normal = torch.distributions.Normal(torch.zeros(n, 1), log_std.exp())
        return torch.distributions.Independent(normal, 1)

    dist = policy()
    (g_r,) = torch.autograd.grad(-dist.log_prob(dist.rsample()).sum(), log_std)
    dist = policy()
    a = getattr(dist, draw)()  # the entropy term's sample taken as a constant
    (g_s,) = torch.autograd.grad(-dist.log_prob(a).sum(), log_std)
    # pathwise: -log N(sigma eps; 0, sigma) = log sigma + eps^2 / 2 + const: exactly 1
    torch.testing.assert_close(g_r, torch.ones_like(g_r), atol=1e-5, rtol=0)
    # detached: d/dlog_sigma [log sigma + a^2 / (2 sigma^2)] = 1 - eps^2, mean 0
    torch.testing.assert_close(g_s, 1 - a.detach() ** 2, atol=1e-5, rtol=0)
    se = g_s.std().item() / n**0.5  # sd of 1 - eps^2 is sqrt(2)
    assert abs(g_s.mean().item()) < 4 * se, (g_s.mean(), se)
    # The score-function (REINFORCE) estimator of the same gradient, on a detached
    # sample: grad E[f(a)] = E[f(a) grad log pi(a)] + E[grad f(a)], f = -log pi.
    # Unbiased too (mean 1 within 4 standard errors), only noisier than rsample's.
    dist = policy()
    a = dist.sample()
    log_p = dist.log_prob(a)
    weight = -log_p.detach() if detach_weight else -log_p
    (g_sf,) = torch.autograd.grad((weight * log_p - log_p).sum(), log_std)
    se_sf = g_sf.std().item() / n**0.5
    assert abs(g_sf.mean().item() - 1.0) < 4 * se_sf, (g_sf.mean(), se_sf)
    assert g_sf.std() > 1.0  # the pathwise estimate has sd 0 here


def test_temperature_term_pushes_log_std_up_at_rate_alpha():
    """With Q = 0 only the entropy term is left. For a Gaussian, -log N(mean + s eps;
    mean, s) = log s + eps^2 / 2 + const: through rsample its gradient is exactly 1 in
    log s and 0 in the mean, so both losses have gradient -alpha in log s."""
    n, alpha = 64, 0.3
    for loss_fn in (reinforce_actor_loss, reparam_actor_loss):
        torch.manual_seed(0)
        mean = torch.zeros(n, 1, requires_grad=True)
        log_std = torch.full((n, 1), -0.5, requires_grad=True)
        dist = torch.distributions.Independent(
            torch.distributions.Normal(mean, log_std.exp()), 1
        )
        loss = loss_fn(dist, lambda a: torch.zeros(a.shape[:-1]), 4, temperature=alpha)
        (loss * n).backward()  # the batch mean -> one gradient per row
        torch.testing.assert_close(
            log_std.grad, torch.full((n, 1), -alpha), atol=1e-6, rtol=0
        )  # float32
        torch.testing.assert_close(mean.grad, torch.zeros(n, 1), atol=1e-6, rtol=0)


def test_toy_critic_and_the_exact_moments():
    # Q(s, a) = offset + 1 - 4 (a - 0.5)^2: its maximum 1 + offset at a = 0.5, roots of
    # the offset-free one at a = 0 and 1.
    a = torch.tensor([[0.5], [0.0], [1.0]])
    torch.testing.assert_close(q_toy(a), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(q_toy(a, offset=-3.0), torch.tensor([-2.0, -3.0, -3.0]))
    # exact_moments by the trapezoidal rule vs Gauss-Hermite quadrature (150 nodes,
    # exact for polynomials of degree < 300; both float64): 1e-12 relative. The two
    # estimators' means agree (Stein's identity E[Q s] = E[Q' da/du]).
    import numpy as np

    x, w = np.polynomial.hermite_e.hermegauss(150)
    w, u = w / math.sqrt(2 * math.pi), SIGMA * x
    act = np.tanh(u)
    for offset in (0.0, -100.0):
        g_rf = u / SIGMA**2 * (offset + 1 - 4 * (act - 0.5) ** 2)
        g_rp = -8 * (act - 0.5) * (1 - act**2)
        mean_rf, mean_rp = (w * g_rf).sum(), (w * g_rp).sum()
        assert abs(mean_rf - mean_rp) < 1e-12 * abs(mean_rp)
        expected = (
            mean_rp,
            (w * g_rf**2).sum() - mean_rf**2,
            (w * g_rp**2).sum() - mean_rp**2,
        )
        for got, want in zip(exact_moments(offset), expected):
            assert abs(got - want) < 1e-12 * abs(want), (offset, got, want)


def test_relative_standard_error_of_a_variance():
    # sqrt((kurtosis - 1) / n): 0 for a fair +-1 coin (its sample variance is always 1),
    # sqrt(2 / n) for a Gaussian (kurtosis 3, estimated from 1e5 samples with sd
    # sqrt(24 / n) = 0.015, which moves the ratio by 0.4 %: 2 % is 5 of those).
    coin = torch.tensor([1.0, -1.0]).repeat(500)
    assert var_rel_se(coin) == 0.0
    gauss = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    assert abs(var_rel_se(gauss) / math.sqrt(2 / 100_000) - 1) < 0.02


def test_pathwise_variance_can_exceed_reinforce_for_a_wiggly_critic():
    """Reparameterization does not always have the lower variance: for a critic that
    oscillates in a, Q(a) = sin(10 a), the pathwise estimate Q'(a)(1 - a^2) swings with
    the slope 10 cos(10 a), while REINFORCE's (u / sigma^2) Q(a) stays bounded by
    |u| / sigma^2. Exact moments by quadrature (float64, as in exact_moments), then
    the two losses themselves, sampled, within 4 relative standard errors."""
    u = torch.linspace(-12 * SIGMA, 12 * SIGMA, 48_001, dtype=torch.float64)
    w = torch.exp(-(u**2) / (2 * SIGMA**2)) / (SIGMA * (2 * torch.pi) ** 0.5)
    a = torch.tanh(u)
    g_rf = u / SIGMA**2 * torch.sin(10 * a)
    g_rp = 10 * torch.cos(10 * a) * (1 - a**2)

    def e(x):
        return torch.trapezoid(w * x, u).item()

    # Same gradient (Stein's identity; float64 quadrature: 1e-10) ...
    assert abs(e(g_rf) - e(g_rp)) < 1e-10, (e(g_rf), e(g_rp))
    var_rf, var_rp = e(g_rf**2) - e(g_rf) ** 2, e(g_rp**2) - e(g_rp) ** 2
    # ... but here the pathwise variance is the larger one: 32.4 against 1.32.
    assert var_rp > 10 * var_rf, (var_rp, var_rf)
    for loss_fn, var in ((reinforce_actor_loss, var_rf), (reparam_actor_loss, var_rp)):
        torch.manual_seed(0)
        mean = torch.zeros(4000, 1, requires_grad=True)
        dist = tanh_normal(mean, torch.full((4000, 1), SIGMA))
        loss = loss_fn(dist, lambda act: torch.sin(10 * act).sum(-1), 1)
        (loss * 4000).backward()
        est = -mean.grad.squeeze(1)
        assert abs(est.var().item() / var - 1) < 4 * var_rel_se(est), (est.var(), var)


def test_entropy_gradient_pathwise_is_not_always_the_quieter_one():
    """For an unsquashed Gaussian the pathwise gradient of the entropy in log sigma is
    exactly 1 (variance 0). For SAC's tanh policy it is not: at mean 0, sigma 1 the
    path through tanh adds -2 sigma eps tanh(u), and the score-function estimate
    (-log pi(a)) grad log pi(a) - grad log pi(a) is the quieter one (sd 0.80 against
    1.26). Both stay unbiased: their means agree within 4 standard errors."""
    n = 20_000
    torch.manual_seed(0)
    log_std = torch.zeros(n, 1, requires_grad=True)
    dist = tanh_normal(torch.zeros(n, 1), log_std.exp())
    (g_path,) = torch.autograd.grad(-dist.log_prob(dist.rsample()).sum(), log_std)
    dist = tanh_normal(torch.zeros(n, 1), log_std.exp())
    log_p = dist.log_prob(dist.sample())
    (g_score,) = torch.autograd.grad((-log_p.detach() * log_p - log_p).sum(), log_std)
    se = ((g_path.var() + g_score.var()) / n).sqrt().item()
    assert abs(g_path.mean().item() - g_score.mean().item()) < 4 * se
    # The pathwise variance is the larger one even with each sample variance moved 4
    # relative standard errors against it (the score's is heavy-tailed: 21 %).
    v_path, v_score = g_path.var().item(), g_score.var().item()
    lower = v_path * (1 - 4 * var_rel_se(g_path.squeeze(1)))
    assert lower > v_score * (1 + 4 * var_rel_se(g_score.squeeze(1))), (v_path, v_score)
