"""Off-policy, precisely: what the actor and the critic read from the replay buffer."""

# --8<-- [start:actor_reads_states_only]
import torch

from snippets.sac.distributions import tanh_normal


def linear_actor(w, obs):
    """A one-parameter actor: mean = w * s, std = 0.5.
    obs: (batch, 1) -> distribution over (batch, 1)."""
    return tanh_normal(w * obs, torch.full_like(obs, 0.5))


def actor_gradient(w, obs, q_fn, temperature=0.1, seed=0):
    """Reparameterized actor loss on the buffer's states only.
    obs: (batch, 1). returns dJ_pi/dw (float)."""
    torch.manual_seed(seed)
    w = torch.tensor(w, requires_grad=True)
    dist = linear_actor(w, obs)
    a = dist.rsample()  # fresh action from the CURRENT policy
    # J_pi = E_{s~D, eps}[alpha log pi(f(eps;s)|s) - Q(s, f(eps;s))]
    #                                                   Eq. (9), arXiv:1812.05905
    loss = (temperature * dist.log_prob(a) - q_fn(obs, a)).mean()
    (g,) = torch.autograd.grad(loss, w)
    return g.item()


def score_function_gradient(w, obs, actions, q_fn):
    """d/dw of -mean(log pi_w(a|s) Q(s, a)) for GIVEN actions (batch, 1), without
    importance weights. Unbiased for dJ/dw (temperature 0) only if the actions were
    drawn from pi_w itself.
    """
    w = torch.tensor(w, requires_grad=True)
    dist = linear_actor(w, obs)
    # grad J = E_{a~pi_w}[grad log pi_w(a|s) Q(s,a)]: an expectation under the
    # current policy
    loss = -(dist.log_prob(actions) * q_fn(obs, actions)).mean()
    (g,) = torch.autograd.grad(loss, w)
    return g.item()


# --8<-- [end:actor_reads_states_only]


# --8<-- [start:target_bias]
import torch

from snippets.sac.distributions import tanh_normal


def two_step_targets(q_target_fn, n, *, gamma=0.9, alpha=0.2, reward=1.0, seed=0):
    """A two-step episode: (s, a) gives reward r and leads to s'; at s' the action a'
    ends it with reward R(a'). So Q^pi(s', a') = R(a') exactly and
    Q^pi(s, a) = r + gamma E[R(a') - alpha log pi(a'|s')],
    with pi(.|s') = tanh N(0.2, 0.6^2).
    q_target_fn(a', generator) is the target critic at s'.
    returns: n single-sample targets y, (n,).
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.full((n, 1), 0.2), torch.full((n, 1), 0.6)
    a_next = torch.tanh(mean + std * torch.randn(n, 1, generator=g))  # a' ~ pi(.|s')
    log_prob = tanh_normal(mean, std).log_prob(a_next)
    # y = r + gamma (Q_targ(s', a') - alpha log pi(a'|s'))  Eqs. (2)-(3), 1812.05905
    return reward + gamma * (q_target_fn(a_next, g) - alpha * log_prob)


def reward_at_s_prime(a):
    """R(a') = -4 (a' - 0.5)^2 for a' of shape (n, 1) -> (n,)."""
    return -4.0 * (a.squeeze(-1) - 0.5) ** 2


# --8<-- [end:target_bias]


# --8<-- [start:soft_policy_evaluation]
import torch


def soft_bellman_operator(q, reward, transition, pi, *, gamma, alpha):
    """(T^pi Q)(s,a) = r(s,a) + gamma E_{s'}[E_{a'~pi}[Q(s',a') - alpha log pi(a'|s')]]
                                                       Eqs. (2)-(3), arXiv:1812.05905
    q, reward: (S, A); transition: (S, A, S) probabilities; pi: (S, A).
    returns (S, A).
    """
    v = (pi * (q - alpha * torch.log(pi))).sum(-1)  # soft V(s'), (S,)
    return reward + gamma * transition @ v


# --8<-- [end:soft_policy_evaluation]


import math

import pytest


@pytest.fixture
def random_mdp():
    """Test data: random_mdp(seed) -> reward (5, 3), transition (5, 3, 5), pi (5, 3),
    a random finite MDP in float64."""

    def make(seed, S=5, A=3):
        g = torch.Generator().manual_seed(seed)
        reward = torch.randn(S, A, generator=g, dtype=torch.float64)
        logits = torch.randn(S, A, S, generator=g, dtype=torch.float64)
        transition = torch.softmax(2 * logits, -1)
        pi = torch.softmax(torch.randn(S, A, generator=g, dtype=torch.float64), -1)
        return reward, transition, pi

    return make


def exact_q_pi(reward, transition, pi, gamma, alpha):
    """Solve Q = r + gamma P (pi . (Q - alpha log pi)) as a linear system."""
    S, A = reward.shape
    m = gamma * torch.einsum("xas,sb->xasb", transition, pi).reshape(S * A, S * A)
    bonus = gamma * transition @ (-alpha * (pi * torch.log(pi)).sum(-1))
    eye = torch.eye(S * A, dtype=torch.float64)
    return torch.linalg.solve(eye - m, (reward + bonus).reshape(-1)).reshape(S, A)


def test_soft_bellman_iteration_contracts_to_q_pi_from_any_start(
    random_mdp, next_action="current"
):
    """Repeatedly regressing on the target = applying T^pi, a gamma-contraction in
    the sup norm (Lemma 1, arXiv:1801.01290): 5 random MDPs x 3 starting points.
    next_action: "current" draws a' from pi, as SAC's target does; "buffer" from
    another (behaviour) policy mu, as if a' were read from the replay buffer."""
    gamma, alpha = 0.9, 0.3
    for seed in range(5):
        reward, transition, pi = random_mdp(seed)
        q_pi = exact_q_pi(reward, transition, pi, gamma, alpha)
        behaviour = random_mdp(50 + seed)[2]  # another policy mu, (5, 3)
        pi_next = pi if next_action == "current" else behaviour
        op = lambda q: soft_bellman_operator(
            q,
            reward,
            transition,  # noqa: E731
            pi_next,
            gamma=gamma,
            alpha=alpha,
        )
        torch.testing.assert_close(op(q_pi), q_pi, atol=1e-10, rtol=0)  # fixed point
        g = torch.Generator().manual_seed(100 + seed)
        starts = (
            50.0 * torch.randn(5, 3, generator=g, dtype=torch.float64),
            torch.zeros(5, 3, dtype=torch.float64),
            torch.full((5, 3), -1000.0, dtype=torch.float64),
        )
        for q in starts:
            err = err0 = (q - q_pi).abs().max()
            for _ in range(100):
                q = op(q)
                new_err = (q - q_pi).abs().max()
                assert new_err <= gamma * err + 1e-12  # contraction, every step
                err = new_err
            # after 100 steps: error <= 0.9^100 err0 = 2.7e-5 err0
            assert err <= err0 * gamma**100 + 1e-12, (seed, err, err0)


def _chunk_estimates(fn, states, chunks=20):
    """fn(chunk, i) -> float on `chunks` disjoint chunks: (mean, standard error)."""
    vals = torch.tensor(
        [fn(c, i) for i, c in enumerate(states.chunk(chunks))], dtype=torch.float64
    )
    return vals.mean().item(), (vals.std() / chunks**0.5).item()


def test_qualifies_actor_update_is_on_policy(old_state_mean=2.0):
    def q_fn(s, a):  # a fixed critic that prefers a = 0.5 s
        return -((a - 0.5 * s) ** 2).squeeze(-1)

    # Holds: over ACTIONS the actor's objective is an expectation under the current
    # policy, and that is what it samples. On 100k buffer states (w = 1, temperature
    # 0) the reparameterized gradient agrees with the score-function estimate on
    # fresh current-policy actions; standard errors from 20 disjoint chunks.
    g = torch.Generator().manual_seed(1)
    n = 100_000
    states = torch.randn(n, 1, generator=g)
    eps_new, eps_old = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
    fresh = torch.tanh(1.0 * states + 0.5 * eps_new)  # a ~ pi_w(.|s), w = 1
    old = torch.tanh(-1.0 * states + 0.5 * eps_old)  # a ~ an older policy, w = -1
    sa = torch.cat([states, fresh, old], dim=1)
    g_actor, se_actor = _chunk_estimates(
        lambda c, i: actor_gradient(1.0, c[:, :1], q_fn, temperature=0.0, seed=i), sa
    )
    g_fresh, se_fresh = _chunk_estimates(
        lambda c, i: score_function_gradient(1.0, c[:, :1], c[:, 1:2], q_fn), sa
    )
    se = (se_actor**2 + se_fresh**2) ** 0.5
    assert abs(g_actor - g_fresh) < 4 * se, (g_actor, g_fresh, se)
    # Two estimates that agree because both are 0 would show nothing: the gradient
    # they agree on is itself more than 10 standard errors away from 0.
    assert abs(g_actor) > 10 * se_actor, (g_actor, se_actor)
    # Reusing the buffer's actions (from the older policy) without importance
    # weights estimates another quantity: the actor must sample its own actions.
    g_buffer, se_buffer = _chunk_estimates(
        lambda c, i: score_function_gradient(1.0, c[:, :1], c[:, 2:3], q_fn), sa
    )
    assert abs(g_buffer - g_actor) > 10 * (se_buffer**2 + se_actor**2) ** 0.5
    # Does not hold: the STATES come from the buffer, i.e. from the mixture of old
    # policies' visitation, not from the current policy's own state distribution.
    # Move the states, the update changes: it is not the on-policy gradient of J(pi).
    g2 = torch.Generator().manual_seed(2)
    # where an old policy went
    old_states = old_state_mean + 0.3 * torch.randn(n, 1, generator=g2)
    now_states = 0.3 * torch.randn(n, 1, generator=g2)  # where pi_w goes now

    def grad_on(c, i):
        return actor_gradient(1.0, c, q_fn, seed=i)

    g_old, se_old = _chunk_estimates(grad_on, old_states)
    g_now, se_now = _chunk_estimates(grad_on, now_states)
    assert abs(g_old - g_now) > 10 * (se_old**2 + se_now**2) ** 0.5, (g_old, g_now)


def q_pi_two_step(gamma=0.9, alpha=0.2, reward=1.0):
    """Exact Q^pi(s, a) of two_step_targets' episode, by quadrature over
    u ~ N(0.2, 0.6^2), a' = tanh(u) (float64)."""
    m, s = 0.2, 0.6
    u = torch.linspace(m - 12 * s, m + 12 * s, 48_001, dtype=torch.float64)
    log_mu = -((u - m) ** 2) / (2 * s**2) - math.log(s * (2 * math.pi) ** 0.5)
    a = torch.tanh(u)
    log_pi = log_mu - torch.log(1 - a**2)  # Eq. (21), arXiv:1801.01290
    y = reward + gamma * (-4.0 * (a - 0.5) ** 2 - alpha * log_pi)
    return torch.trapezoid(torch.exp(log_mu) * y, u).item()


def test_qualifies_bellman_target_is_unbiased_regression(combine="min"):
    n, gamma = 400_000, 0.9
    q_true = q_pi_two_step()
    # Holds: with the exact target critic the one-sample target is unbiased for Q^pi.
    y = two_step_targets(lambda a, g: reward_at_s_prime(a), n)
    se = (y.var() / n).sqrt().item()
    assert abs(y.mean().item() - q_true) < 4 * se, (y.mean().item(), q_true, se)
    # Does not hold in general: an error e of the target critic enters the target as
    # gamma e, sample by sample (linear, an identity): +0.5 everywhere gives +0.45.
    y_wrong = two_step_targets(lambda a, g: reward_at_s_prime(a) + 0.5, n)
    torch.testing.assert_close(
        y_wrong - y, torch.full_like(y, gamma * 0.5), atol=1e-5, rtol=0
    )
    # Even unbiased but noisy target critics give a biased target once they are
    # combined by min: E[min(Q + e1, Q + e2)] = Q - sigma / sqrt(pi), so the bias is
    # -gamma 0.3 / sqrt(pi) = -0.152.

    def noisy_min(a, g):  # combine="mean": their average, which is unbiased
        q = reward_at_s_prime(a)
        e1, e2 = (0.3 * torch.randn(q.shape, generator=g) for _ in range(2))
        if combine == "mean":
            return q + (e1 + e2) / 2
        return torch.minimum(q + e1, q + e2)

    y_min = two_step_targets(noisy_min, n)
    # (seeded: the critic's noise is drawn from the targets' own generator, so a
    # re-run gives the same targets)
    assert torch.equal(
        two_step_targets(noisy_min, 1000), two_step_targets(noisy_min, 1000)
    )
    se_min = (y_min.var() / n).sqrt().item()
    bias = y_min.mean().item() - q_true
    assert abs(bias + gamma * 0.3 / torch.pi**0.5) < 4 * se_min, (bias, se_min)
