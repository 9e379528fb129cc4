"""Soft Q, soft value and the soft-optimal policy, on a discrete action set and on a
tiny MDP.

Maximum-entropy objective:
    J(pi) = sum_t E[r(s_t, a_t) + alpha H(pi(.|s_t))]      Eq. (1), arXiv:1801.01290
"""

# --8<-- [start:soft_value]
import math

import torch


def soft_policy(q, alpha):
    """pi*(a|s) = exp((Q(s,a) - V(s)) / alpha) = softmax(Q / alpha).
    q: (..., num_actions)."""
    return torch.softmax(q / alpha, dim=-1)


def soft_value(q, alpha):
    """V(s) = alpha log sum_a exp(Q(s,a) / alpha). q: (..., num_actions) -> (...)."""
    return alpha * torch.logsumexp(q / alpha, dim=-1)


def entropy_augmented_value(q, pi, alpha):
    """E_{a~pi}[Q(s,a) - alpha log pi(a|s)] = E_pi[Q] + alpha H(pi).
    Eq. (3), arXiv:1812.05905."""
    return (pi * (q - alpha * torch.log(pi))).sum(-1)


# --8<-- [end:soft_value]


# --8<-- [start:tiny_mdp]
import torch

from snippets.sac.soft_q import entropy_augmented_value, soft_policy


def tiny_mdp():
    """s0 --a0--> s1 (4 actions, all reward 1);
    s0 --a1--> s2 (reward 1 for one action, -5 for the three others).
    Every action at s1 or s2 ends the episode. Rewards at s0 are 0.
    Returns (rewards, next_state)."""
    rewards = {
        0: torch.tensor([0.0, 0.0]),
        1: torch.tensor([1.0, 1.0, 1.0, 1.0]),
        2: torch.tensor([1.0, -5.0, -5.0, -5.0]),
    }
    next_state = {0: [1, 2], 1: [None] * 4, 2: [None] * 4}
    return rewards, next_state


def policy_iteration(alpha, gamma, backup_entropy, iterations=50):
    """Tabular SAC: evaluate pi with target r + gamma (1-done) V(s'),
    improve pi <- softmax(Q / alpha).

    V(s') = E_pi[Q(s',a') - alpha log pi(a'|s')] if backup_entropy else E_pi[Q(s',a')].
    returns: (Q, pi) dicts keyed by state.
    """
    rewards, nxt = tiny_mdp()
    pi = {s: torch.full_like(r, 1 / len(r)) for s, r in rewards.items()}
    for _ in range(iterations):
        q = {}
        for s in (1, 2, 0):  # terminal side first: evaluation is exact in one sweep
            q[s] = rewards[s].clone()
            for a, s2 in enumerate(nxt[s]):
                if s2 is not None:
                    if backup_entropy:
                        v = entropy_augmented_value(q[s2], pi[s2], alpha)
                    else:
                        v = (pi[s2] * q[s2]).sum()
                    q[s][a] += gamma * v  # soft Bellman backup, Eq. (2), 1812.05905
        # pi_new = argmin KL(pi || exp(Q / alpha) / Z)       Eq. (4), arXiv:1812.05905
        pi = {s: soft_policy(q[s], alpha) for s in q}
    return q, pi


def max_ent_return(pi, alpha, gamma):
    """Exact J(pi) from s0: E[sum_t gamma^t (r_t + alpha H(pi(.|s_t)))], the
    discounted objective (Appendix A of arXiv:1801.01290; its Eq. (1) has no
    discount)."""
    rewards, nxt = tiny_mdp()
    v = {s: entropy_augmented_value(rewards[s], pi[s], alpha) for s in (1, 2)}
    q0 = torch.stack([gamma * v[1], gamma * v[2]])
    return entropy_augmented_value(q0, pi[0], alpha).item()


# --8<-- [end:tiny_mdp]


# Alternatives a critic of the claims would raise; the counterfactuals on
# docs/topics/sac/entropy.md run the deciding tests with them and require them to fail.


def expected_q(q, alpha):
    """The journal's "value = E_pi[Q]" under pi = softmax(Q / alpha), no entropy term.
    q: (..., num_actions) -> (...)."""
    return (soft_policy(q, alpha) * q).sum(-1)


def softmax_ignoring_temperature(q, alpha):
    """softmax(Q): the temperature forgotten."""
    return torch.softmax(q, dim=-1)


def test_soft_value_equals_expected_q_minus_alpha_log_pi_under_softmax_policy(
    value=soft_value, policy=soft_policy
):
    torch.manual_seed(0)
    q = torch.randn(5, 6, dtype=torch.float64) * 3
    for alpha in (0.1, 1.0, 5.0):
        pi = policy(q, alpha)
        # an identity: log pi = Q / alpha - logsumexp(Q / alpha) (float64: 1e-10)
        torch.testing.assert_close(
            value(q, alpha), entropy_augmented_value(q, pi, alpha), atol=1e-10, rtol=0
        )
        # softmax(Q/alpha) maximises E_pi[Q] + alpha H(pi): no random policy does better
        dirichlet = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64))
        others = dirichlet.sample((2000, 5))
        best = value(q, alpha) + 1e-10
        assert (entropy_augmented_value(q, others, alpha) <= best).all()
        # ... and moving away from it costs exactly alpha KL(pi' || pi*) (Gibbs).
        kl = (others * (others.log() - pi.log())).sum(-1)
        torch.testing.assert_close(
            value(q, alpha) - entropy_augmented_value(q, others, alpha),
            alpha * kl,
            atol=1e-9,
            rtol=0,
        )
    # Limits: alpha -> 0 gives the hard max (within alpha log |A| = 1.8e-3), alpha
    # -> inf gives mean(Q) + alpha log |A| (error ~ Var(Q) / (2 alpha) < 1e-2).
    torch.testing.assert_close(
        value(q, 1e-3), q.max(-1).values, atol=1e-3 * math.log(6), rtol=0
    )
    log6 = torch.log(torch.tensor(6.0, dtype=torch.float64))
    torch.testing.assert_close(
        value(q, 1e4) - 1e4 * log6, q.mean(-1), atol=1e-2, rtol=0
    )


def test_entropy_in_the_backup_makes_the_critic_value_future_entropy(gamma=0.9):
    """Closed forms (alpha = 1, gamma = 0.9): with the entropy backup the values at
    s1, s2 are the soft values log sum exp r, so Q(s0, .) = gamma (1 + log 4,
    1 + log(1 + 3 e^-6)) and pi(a0|s0) = sigmoid of their difference; without it the
    critic sees only E_pi[r]: 1 at s1 and (e - 15 e^-5) / (e + 3 e^-5) at s2."""
    alpha = 1.0
    q_soft, pi_soft = policy_iteration(alpha, gamma, backup_entropy=True)
    q_hard, pi_hard = policy_iteration(alpha, gamma, backup_entropy=False)
    v1, v2 = 1 + math.log(4), 1 + math.log(1 + 3 * math.exp(-6))
    torch.testing.assert_close(
        q_soft[0], gamma * torch.tensor([v1, v2]), atol=1e-6, rtol=0
    )  # float32 rounding
    e = math.e
    hard2 = (e - 15 * math.exp(-5)) / (e + 3 * math.exp(-5))
    torch.testing.assert_close(
        q_hard[0], gamma * torch.tensor([1.0, hard2]), atol=1e-6, rtol=0
    )
    # The soft critic's gap is gamma alpha times the difference of future entropies
    # (log 4 vs about 0 at the optimum): the policy goes to s1 with probability
    p_soft = 1 / (1 + math.exp(-gamma * (v1 - v2) / alpha))  # 0.776
    p_hard = 1 / (1 + math.exp(-gamma * (1 - hard2) / alpha))  # 0.510
    assert abs(pi_soft[0][0].item() - p_soft) < 1e-6
    assert abs(pi_hard[0][0].item() - p_hard) < 1e-6
    # Scored by the maximum-entropy return itself, the soft critic's policy is the
    # optimum, V_soft(s0); the other policy agrees with it at s1 and s2 and loses
    # exactly alpha KL(pi_hard || pi_soft) at s0.
    j_soft = max_ent_return(pi_soft, alpha, gamma)
    j_hard = max_ent_return(pi_hard, alpha, gamma)
    torch.testing.assert_close(
        torch.tensor(j_soft), soft_value(q_soft[0], alpha), atol=1e-5, rtol=0
    )
    p, p_star = pi_hard[0], pi_soft[0]
    kl = (p * (p.log() - p_star.log())).sum().item()
    assert kl > 1e-3, kl
    assert abs((j_soft - j_hard) - alpha * kl) < 1e-5, (j_soft, j_hard, kl)
