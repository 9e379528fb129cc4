"""Why double Q: the max of noisy unbiased estimates is biased upward, the min downward,
and bootstrapping feeds the upward bias back into the next target."""

# --8<-- [start:max_min_bias]
import torch


def max_and_min_bias(num_actions=10, noise_std=1.0, trials=200_000, seed=0):
    """All true values are 0; estimates are true value + N(0, noise_std^2) noise.

    returns: (E[max_a Qhat(a)] - max_a Q(a),  E[min(Qhat_1, Qhat_2)] - Q) as floats.
    """
    g = torch.Generator().manual_seed(seed)
    q_hat = noise_std * torch.randn(trials, num_actions, generator=g)  # E[q_hat] = 0: unbiased
    # E[max_a Qhat(a)] >= max_a E[Qhat(a)]  (Jensen: max is convex)
    max_bias = q_hat.max(dim=1).values.mean().item()
    two = noise_std * torch.randn(2, trials, generator=g)
    # E[min(Q1, Q2)] <= min(E[Q1], E[Q2])  (min is concave)
    min_bias = two.min(dim=0).values.mean().item()
    return max_bias, min_bias
# --8<-- [end:max_min_bias]


# --8<-- [start:bootstrapped_bias]
import torch

from snippets.sac.critic import q_backup


def bootstrapped_bias(strategy, num_critics=2, num_actions=10, gamma=0.9, noise_std=1.0,
                      iterations=80, trials=4000, seed=0):
    """One state that loops to itself with reward 0, so the true Q is 0 for every action.

    Each iteration every critic fits its target with independent regression noise, the next
    action a* is chosen, and the next target is gamma * backup(Q_i(s', a*)).
    strategy: "single" (one critic), a q_backup strategy ("doubleq", "min", "mean") where ONE
    actor picks a* = argmax_a mean_i Q_i(a) for all critics (as in actor-critic), or
    "double_q_learning" where critic i picks its own argmax and the other critic evaluates it.
    returns: the mean estimate after `iterations` backups (float); the truth is 0.
    """
    g = torch.Generator().manual_seed(seed)
    n = 1 if strategy == "single" else num_critics
    y = torch.zeros(n, trials)  # current target of each critic, per independent trial
    for _ in range(iterations):
        q = y[:, :, None] + noise_std * torch.randn(n, trials, num_actions, generator=g)  # Q_i(a) = y_i + noise
        if strategy == "double_q_learning":
            a_own = q.argmax(dim=-1, keepdim=True)                 # a*_i = argmax_a Q_i(a)
            y = gamma * q.flip(0).gather(2, a_own).squeeze(-1)     # y_i = gamma Q_j(a*_i), j != i
            continue
        a_star = q.mean(dim=0).argmax(dim=-1)                      # the actor: a* = argmax_a mean_i Q_i(a)
        next_qs = q.gather(2, a_star.expand(n, trials)[:, :, None]).squeeze(-1)  # (n, trials)
        backup = next_qs if strategy == "single" else q_backup(next_qs, strategy)
        y = gamma * backup                                         # y = r + gamma Q'(s', a*), r = 0
    return y.mean().item()
# --8<-- [end:bootstrapped_bias]


def test_max_of_unbiased_estimates_is_biased_up_min_down():
    max_bias, min_bias = max_and_min_bias()
    # Expected max of 10 standard normals is 1.5388; expected min of 2 is -1/sqrt(pi) = -0.5642.
    assert abs(max_bias - 1.5388) < 0.01, max_bias
    assert abs(min_bias + 0.5642) < 0.01, min_bias


def test_bootstrapping_accumulates_overestimation_and_min_backup_reduces_it():
    single = bootstrapped_bias("single")
    mean = bootstrapped_bias("mean")
    doubleq = bootstrapped_bias("doubleq")
    clipped = bootstrapped_bias("min")
    classic = bootstrapped_bias("double_q_learning")
    # One critic: the bias grows towards gamma E[max noise] / (1 - gamma) = 0.9 * 1.5388 / 0.1 = 13.85.
    assert abs(single - 13.85) < 0.4, single
    # Averaging two critics shrinks the noise but keeps most of the upward bias.
    assert 5.0 < mean < single - 2.0, (mean, single)
    # With one shared actor the swap only permutes the rows: same mean estimate as "mean".
    assert abs(doubleq - mean) < 1e-3, (doubleq, mean)
    # Selecting with one critic and evaluating with an independent one removes the bias.
    assert abs(classic) < 0.3, classic
    # Clipped double Q (min) halves it here, but with this much noise does not remove it.
    assert 0.0 < clipped < mean / 2, (clipped, mean)
