"""The actor's two gradient estimators (REINFORCE and reparameterization) and where the gradient flows.

Both estimate the gradient of J(theta) = E_{a~pi_theta(.|s)}[Q(s, a)]:
  REINFORCE:        grad J = E[grad_theta log pi_theta(a|s) Q(s, a)],  a sampled and held constant
  reparameterized:  grad J = E_eps[grad_theta Q(s, f_theta(eps; s))], a = f_theta(eps; s) = tanh(mu + sigma eps)
"""

# --8<-- [start:reinforce]
import torch


def reinforce_actor_loss(dist, q_fn, num_actor_samples, temperature=0.0):
    """dist: policy over (batch, act_dim) with log_prob -> (batch,); q_fn: (..., batch, act_dim) -> (..., batch).

    returns: scalar loss whose gradient is the REINFORCE estimate of -grad E[Q] - temperature grad H.
    """
    with torch.no_grad():
        a = dist.sample((num_actor_samples,))        # (K, batch, act_dim): constants, no gradient
        q = q_fn(a)                                   # (K, batch): a weight, no gradient
    # grad J = E[grad log pi(a|s) Q(s,a)]: the gradient flows through log_prob's parameters, not through a
    pg_loss = -(dist.log_prob(a) * q).mean()
    # entropy estimate with its own reparameterized sample: H = E[-log pi(a~|s)], a~ = rsample()
    entropy = -dist.log_prob(dist.rsample()).mean()
    return pg_loss - temperature * entropy
# --8<-- [end:reinforce]


# --8<-- [start:reparameterize]
import torch


def reparam_actor_loss(dist, q_fn, num_actor_samples, temperature=0.0):
    """Same shapes as reinforce_actor_loss. rsample: a~ = tanh(mu + sigma * eps), eps ~ N(0, I)."""
    a = dist.rsample((num_actor_samples,))            # (K, batch, act_dim), differentiable in theta
    # J_pi = E_{s~D, eps}[alpha log pi(f(eps;s)|s) - Q(s, f(eps;s))]   Eq. (9), arXiv:1812.05905
    return (temperature * dist.log_prob(a) - q_fn(a)).mean()
# --8<-- [end:reparameterize]


# --8<-- [start:gradient_samples]
import torch

from snippets.sac.distributions import tanh_normal


def q_toy(a, offset=0.0):
    """A fixed critic for one state: Q(s, a) = offset + 1 - 4 (a - 0.5)^2.  a: (..., act_dim) -> (...)."""
    return offset + 1.0 - 4.0 * ((a - 0.5) ** 2).sum(-1)


def gradient_samples(estimator, num_actor_samples, repeats=4000, seed=0, offset=0.0):
    """Draw `repeats` independent estimates of dJ/dmean (J = E[Q]) at mean = 0, log_std = -0.5.

    Each row of the batch is its own copy of the parameters, so one backward pass gives
    `repeats` independent gradient estimates. returns: (repeats,) tensor.
    """
    torch.manual_seed(seed)
    mean = torch.zeros(repeats, 1, requires_grad=True)
    std = torch.full((repeats, 1), -0.5).exp()
    loss_fn = reinforce_actor_loss if estimator == "reinforce" else reparam_actor_loss
    loss = loss_fn(tanh_normal(mean, std), lambda a: q_toy(a, offset), num_actor_samples)
    (loss * repeats).backward()                       # the mean over rows -> one estimate per row
    return -mean.grad.squeeze(1)                      # gradient of J = -loss
# --8<-- [end:gradient_samples]


def test_reinforce_and_reparameterization_estimate_the_same_gradient_with_much_lower_variance():
    rf = gradient_samples("reinforce", 1)
    rp = gradient_samples("reparameterize", 1, seed=1)
    se = (rf.var() / len(rf) + rp.var() / len(rp)).sqrt()
    assert abs(rf.mean() - rp.mean()) < 4 * se, (rf.mean(), rp.mean(), se)
    # The true gradient (large-sample pathwise estimate) is well away from 0, so the agreement means something.
    true = gradient_samples("reparameterize", 64, repeats=4000, seed=2).mean()
    assert true > 1.0 and abs(rp.mean() - true) < 4 * se, (rp.mean(), true)
    ratio = (rf.var() / rp.var()).item()
    assert ratio > 3, f"variance ratio REINFORCE / reparam = {ratio:.1f}"
    # Q-values of a real critic carry a large offset (Pendulum returns are around -100 to -1500).
    # The pathwise gradient does not see a constant; the score-function one multiplies it.
    rf_off = gradient_samples("reinforce", 1, offset=-100.0)
    rp_off = gradient_samples("reparameterize", 1, seed=1, offset=-100.0)
    torch.testing.assert_close(rp_off, rp, atol=1e-4, rtol=0)
    ratio_off = (rf_off.var() / rp_off.var()).item()
    assert ratio_off > 1000, f"variance ratio with offset -100 = {ratio_off:.0f}"
    se_off = (rf_off.var() / len(rf_off)).sqrt()
    assert abs(rf_off.mean() - rp.mean()) < 4 * se_off, (rf_off.mean(), rp.mean(), se_off)


def test_variance_falls_as_one_over_num_actor_samples():
    for estimator in ("reinforce", "reparameterize"):
        v1 = gradient_samples(estimator, 1).var()
        v16 = gradient_samples(estimator, 16, seed=3).var()
        assert 12 < v1 / v16 < 20, f"{estimator}: var(K=1)/var(K=16) = {v1 / v16:.1f}, ideal 16"


def test_gradient_flows_through_log_prob_in_reinforce_and_through_the_action_in_reparam():
    mean = torch.zeros(8, 1, requires_grad=True)
    dist = tanh_normal(mean, torch.ones(8, 1))
    a = dist.sample()
    assert a.grad_fn is None                              # the sampled action is a constant
    (g_logp,) = torch.autograd.grad(dist.log_prob(a).sum(), mean)
    assert g_logp.abs().sum() > 0                         # ... but log pi(a|s) still depends on theta
    # -Q(s, sample()) has no gradient at all: the reparameterized loss needs rsample().
    assert q_toy(a).requires_grad is False
    dist = tanh_normal(mean, torch.ones(8, 1))
    (g_rs,) = torch.autograd.grad(q_toy(dist.rsample()).sum(), mean)
    assert g_rs.abs().sum() > 0


def test_entropy_term_needs_rsample_a_detached_sample_gives_zero_expected_gradient():
    """H(N(mu, sigma^2)) = log sigma + const, so dH/dlog_sigma = 1 exactly."""
    torch.manual_seed(0)
    log_std = torch.zeros(20000, 1, requires_grad=True)

    def policy():
        return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(20000, 1), log_std.exp()), 1)

    dist = policy()
    (g_r,) = torch.autograd.grad(-dist.log_prob(dist.rsample()).sum(), log_std)
    dist = policy()
    (g_s,) = torch.autograd.grad(-dist.log_prob(dist.sample()).sum(), log_std)
    assert abs(g_r.mean().item() - 1.0) < 1e-5           # pathwise: exactly 1 per sample
    assert abs(g_s.mean().item()) < 0.05                  # score of a detached sample: mean 0 (true value 1)
