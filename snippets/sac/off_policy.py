"""Off-policy, precisely: what the actor and the critic read from the replay buffer."""

# --8<-- [start:actor_reads_states_only]
import torch

from snippets.sac.distributions import tanh_normal


def linear_actor(w, obs):
    """A one-parameter actor: mean = w * s, std = 0.5. obs: (batch, 1) -> distribution over (batch, 1)."""
    return tanh_normal(w * obs, torch.full_like(obs, 0.5))


def actor_gradient(w, obs, q_fn, temperature=0.1, seed=0):
    """Reparameterized actor loss on the buffer's states only. obs: (batch, 1). returns dJ_pi/dw (float)."""
    torch.manual_seed(seed)
    w = torch.tensor(w, requires_grad=True)
    dist = linear_actor(w, obs)
    a = dist.rsample()                                   # fresh action from the CURRENT policy
    loss = (temperature * dist.log_prob(a) - q_fn(obs, a)).mean()  # Eq. (9), arXiv:1812.05905
    (g,) = torch.autograd.grad(loss, w)
    return g.item()


def score_function_gradient(w, obs, actions, q_fn):
    """d/dw of -mean(log pi_w(a|s) Q(s, a)) for GIVEN actions (batch, 1), no importance weights.

    Unbiased for dJ/dw (temperature 0) only if the actions were drawn from pi_w itself.
    """
    w = torch.tensor(w, requires_grad=True)
    dist = linear_actor(w, obs)
    # grad J = E_{a~pi_w}[grad log pi_w(a|s) Q(s,a)]: the expectation is under the current policy
    loss = -(dist.log_prob(actions) * q_fn(obs, actions)).mean()
    (g,) = torch.autograd.grad(loss, w)
    return g.item()
# --8<-- [end:actor_reads_states_only]


# --8<-- [start:target_bias]
import torch

from snippets.sac.distributions import tanh_normal


def two_step_targets(q_target_fn, n, *, gamma=0.9, alpha=0.2, reward=1.0, seed=0):
    """A two-step episode: (s, a) gives reward r and leads to s'; at s' the action a' ends it with reward R(a').

    So Q^pi(s', a') = R(a') exactly, and Q^pi(s, a) = r + gamma E[R(a') - alpha log pi(a'|s')].
    q_target_fn(a') is the target critic at s'. returns: n single-sample targets y, (n,).
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.full((n, 1), 0.2), torch.full((n, 1), 0.6)
    a_next = torch.tanh(mean + std * torch.randn(n, 1, generator=g))      # a' ~ pi(.|s')
    log_prob = tanh_normal(mean, std).log_prob(a_next)
    # y = r + gamma (Q_targ(s', a') - alpha log pi(a'|s'))   Eq. (2)-(3), arXiv:1812.05905
    return reward + gamma * (q_target_fn(a_next, g) - alpha * log_prob)


def reward_at_s_prime(a):
    """R(a') = -(a' - 0.5)^2 * 4 for a' of shape (n, 1) -> (n,)."""
    return -4.0 * (a.squeeze(-1) - 0.5) ** 2
# --8<-- [end:target_bias]


# --8<-- [start:soft_policy_evaluation]
import torch


def soft_bellman_operator(q, reward, transition, pi, *, gamma, alpha):
    """(T^pi Q)(s,a) = r(s,a) + gamma E_{s'}[E_{a'~pi}[Q(s',a') - alpha log pi(a'|s')]].  Eqs. (2)-(3), arXiv:1812.05905

    q, reward: (S, A); transition: (S, A, S) probabilities; pi: (S, A). returns (S, A).
    """
    v = (pi * (q - alpha * torch.log(pi))).sum(-1)    # soft V(s'), (S,)
    return reward + gamma * transition @ v
# --8<-- [end:soft_policy_evaluation]


def test_soft_bellman_iteration_contracts_to_q_pi_from_any_start():
    """Repeatedly regressing on the target = applying T^pi; it is a gamma-contraction (Lemma 1, arXiv:1801.01290)."""
    g = torch.Generator().manual_seed(0)
    S, A, gamma, alpha = 5, 3, 0.9, 0.3
    reward = torch.randn(S, A, generator=g, dtype=torch.float64)
    transition = torch.softmax(torch.randn(S, A, S, generator=g, dtype=torch.float64) * 2, -1)
    pi = torch.softmax(torch.randn(S, A, generator=g, dtype=torch.float64), -1)
    # Exact Q^pi: solve Q = r + gamma P (pi . (Q - alpha log pi)) as a linear system.
    m = gamma * torch.einsum("xas,sb->xasb", transition, pi).reshape(S * A, S * A)
    bonus = gamma * transition @ (-alpha * (pi * torch.log(pi)).sum(-1))
    q_pi = torch.linalg.solve(torch.eye(S * A, dtype=torch.float64) - m, (reward + bonus).reshape(-1)).reshape(S, A)
    q = 50.0 * torch.randn(S, A, generator=g, dtype=torch.float64)  # a very wrong start
    err = err0 = (q - q_pi).abs().max()
    for _ in range(60):
        q = soft_bellman_operator(q, reward, transition, pi, gamma=gamma, alpha=alpha)
        new_err = (q - q_pi).abs().max()
        assert new_err <= gamma * err + 1e-12      # sup-norm contraction by gamma every step
        err = new_err
    assert err <= err0 * gamma**60 + 1e-12 and err < 0.1, (err, err0)


def test_qualifies_actor_update_is_on_policy():
    torch.manual_seed(0)

    def q_fn(s, a):  # a fixed critic that prefers a = 0.5 s
        return -((a - 0.5 * s) ** 2).squeeze(-1)

    # Holds: over ACTIONS the actor's objective is an expectation under the current policy, and that is
    # what it samples. On 100k buffer states (w = 1, temperature 0), the reparameterized gradient agrees with
    # the score-function estimate on fresh current-policy actions (its standard error here is about 0.002).
    g = torch.Generator().manual_seed(1)  # not 0: actor_gradient seeds the global RNG with 0 for its eps
    n = 100_000
    states = torch.randn(n, 1, generator=g)
    g_actor = actor_gradient(1.0, states, q_fn, temperature=0.0)
    fresh_actions = torch.tanh(1.0 * states + 0.5 * torch.randn(n, 1, generator=g))   # a ~ pi_w(.|s), w = 1
    g_fresh = score_function_gradient(1.0, states, fresh_actions, q_fn)
    assert abs(g_actor - g_fresh) < 0.01, (g_actor, g_fresh)
    # Reusing the buffer's actions instead (drawn by an older policy, w = -1) without importance weights
    # estimates a different vector altogether: the actor must sample its own actions.
    buffer_actions = torch.tanh(-1.0 * states + 0.5 * torch.randn(n, 1, generator=g))
    g_buffer = score_function_gradient(1.0, states, buffer_actions, q_fn)
    assert abs(g_buffer - g_actor) > 1.0, (g_buffer, g_actor)
    # Does not hold: the STATES come from the buffer, i.e. from the mixture of old policies' visitation,
    # not from the current policy's own state distribution. Change where the states come from,
    # the update changes: it is not the on-policy gradient of J(pi).
    old_policy_states = 2.0 + 0.3 * torch.randn(512, 1)   # e.g. where an older policy used to go
    current_policy_states = 0.3 * torch.randn(512, 1)
    g_old = actor_gradient(1.0, old_policy_states, q_fn)
    g_now = actor_gradient(1.0, current_policy_states, q_fn)
    assert abs(g_old - g_now) > 0.1, (g_old, g_now)


def test_qualifies_bellman_target_is_unbiased_regression():
    n, gamma = 400_000, 0.9
    # Q^pi(s, a) by a very large Monte Carlo sum (the ground truth of this two-step episode).
    q_true = two_step_targets(lambda a, g: reward_at_s_prime(a), 4_000_000, seed=1).mean().item()
    # Holds: with the exact target critic the one-sample target is unbiased for Q^pi(s, a).
    y = two_step_targets(lambda a, g: reward_at_s_prime(a), n)
    se = (y.var() / n).sqrt().item()
    assert abs(y.mean().item() - q_true) < 4 * se, (y.mean().item(), q_true, se)
    # Does not hold in general: a wrong target critic (+0.5 everywhere) moves the regression target by gamma * 0.5.
    y_wrong = two_step_targets(lambda a, g: reward_at_s_prime(a) + 0.5, n)
    assert abs((y_wrong.mean().item() - q_true) - gamma * 0.5) < 4 * se + 1e-3
    # Even unbiased but noisy target critics give a biased target once they are combined by min:
    # E[min(Q + e1, Q + e2)] = Q - sigma / sqrt(pi), so the bias is -gamma * 0.3 / sqrt(pi) = -0.152.

    def noisy_min(a, g):
        q = reward_at_s_prime(a)
        return torch.minimum(q + 0.3 * torch.randn(q.shape, generator=g), q + 0.3 * torch.randn(q.shape, generator=g))

    y_min = two_step_targets(noisy_min, n)
    assert abs((y_min.mean().item() - q_true) + gamma * 0.3 / torch.pi**0.5) < 0.01
