"""Why double Q: the max of noisy unbiased estimates is biased upward, the min
downward, and bootstrapping feeds the upward bias back into the next target."""

# --8<-- [start:max_min_bias]
import torch


def max_and_min_bias(
    num_actions=10, noise_std=1.0, trials=200_000, seed=0, shared_noise=False
):
    """All true values are 0; estimates are true value + N(0, noise_std^2) noise,
    independent across the estimates (shared_noise=True: one error shared by all).

    returns: (E[max_a Qhat(a)] - max_a Q(a),  E[min(Qhat_1, Qhat_2)] - Q), floats.
    """
    g = torch.Generator().manual_seed(seed)
    width = 1 if shared_noise else num_actions
    q_hat = noise_std * torch.randn(trials, width, generator=g)  # unbiased
    q_hat = q_hat.expand(trials, num_actions)
    # E[max_a Qhat(a)] >= max_a E[Qhat(a)]  (Jensen: max is convex)
    max_bias = q_hat.max(dim=1).values.mean().item()
    two = noise_std * torch.randn(1 if shared_noise else 2, trials, generator=g)
    two = two.expand(2, trials)
    # E[min(Q1, Q2)] <= min(E[Q1], E[Q2])  (min is concave)
    min_bias = two.min(dim=0).values.mean().item()
    return max_bias, min_bias


# --8<-- [end:max_min_bias]


# --8<-- [start:bootstrapped_bias]
import torch

from snippets.sac.critic import q_backup


def bootstrapped_bias(
    strategy,
    num_critics=2,
    num_actions=10,
    gamma=0.9,
    noise_std=1.0,
    iterations=80,
    trials=4000,
    seed=0,
    select="mean",
):
    """One state that loops to itself with reward 0: the true Q is 0 everywhere.

    Each iteration every critic fits its target with independent regression noise,
    the next action a* is chosen, and the next target is gamma * backup(Q_i(s', a*)).
    strategy: "single" (one critic), a q_backup strategy ("doubleq", "min", "mean")
    where ONE actor picks a* for all critics (as in actor-critic), or
    "double_q_learning" where critic i picks its own argmax and the other critic
    evaluates it.
    select: the shared actor's rule, a* = argmax_a mean_i Q_i(a) ("mean") or
    argmax_a min_i Q_i(a) ("min", as SAC's actor maximises min_i Q_i).
    returns: (trials,) the estimate after `iterations` backups in each independent
    trial, averaged over the critics. The truth is 0.
    """
    if select not in ("mean", "min"):
        raise ValueError(f"unknown actor rule {select!r}")
    g = torch.Generator().manual_seed(seed)
    n = 1 if strategy == "single" else num_critics
    y = torch.zeros(n, trials)  # current target of each critic, per trial
    for _ in range(iterations):
        noise = noise_std * torch.randn(n, trials, num_actions, generator=g)
        q = y[:, :, None] + noise  # Q_i(a) = y_i + noise
        if strategy == "double_q_learning":
            a_own = q.argmax(dim=-1, keepdim=True)  # a*_i = argmax Q_i
            y = gamma * q.flip(0).gather(2, a_own).squeeze(-1)  # gamma Q_j(a*_i)
            continue
        # the actor: a* = argmax_a mean_i Q_i(a), or argmax_a min_i Q_i(a)
        score = q.mean(dim=0) if select == "mean" else q.min(dim=0).values
        a_star = score.argmax(dim=-1)
        idx = a_star.expand(n, trials)[:, :, None]
        next_qs = q.gather(2, idx).squeeze(-1)  # (n, trials)
        backup = next_qs if strategy == "single" else q_backup(next_qs, strategy)
        y = gamma * backup  # y = r + gamma Q'(s', a*), r = 0
    return y.mean(dim=0)


# --8<-- [end:bootstrapped_bias]


def expected_max_of_normals(n, std=1.0):
    """E[max of n iid N(0, std^2)] = std * int x n Phi(x)^(n-1) phi(x) dx,
    by the trapezoidal rule on a float64 grid."""
    x = torch.linspace(-12, 12, 48_001, dtype=torch.float64)
    phi = torch.exp(-(x**2) / 2) / (2 * torch.pi) ** 0.5
    cdf = 0.5 * (1 + torch.erf(x / 2**0.5))
    return std * torch.trapezoid(x * n * cdf ** (n - 1) * phi, x).item()


def test_max_of_unbiased_estimates_is_biased_up_min_down(shared_noise=False):
    max_bias, min_bias = max_and_min_bias(shared_noise=shared_noise)
    # E[max of 10 standard normals] = 1.5388 (quadrature); E[min of 2] = -1/sqrt(pi).
    # Tolerance 0.01: more than 5 standard errors of 200,000 trials (the sd of the
    # max of 10 is 0.59, of the min of 2 is 0.83).
    assert abs(max_bias - expected_max_of_normals(10)) < 0.01, max_bias
    assert abs(min_bias + 1 / torch.pi**0.5) < 0.01, min_bias
    # Seeded: the same call gives the same numbers. The quadrature is exact where a
    # closed form exists: E[max of 2] = 1/sqrt(pi), E[max of 3] = 3 / (2 sqrt(pi))
    # (float64 rounding: 1e-12).
    assert max_and_min_bias(shared_noise=shared_noise) == (max_bias, min_bias)
    assert abs(expected_max_of_normals(2) - 1 / torch.pi**0.5) < 1e-12
    assert abs(expected_max_of_normals(3, std=2.0) - 3 / torch.pi**0.5) < 1e-12


def test_bootstrapping_accumulates_overestimation_and_min_backup_reduces_it(
    iterations=80, select="mean"
):
    """Every fixed point in closed form, y = gamma (y + c) => y = gamma c / (1 - gamma),
    with c the bias that one backup adds, for an actor that picks a* by the critics'
    mean:
      single    c = E[max of 10 N(0, 1)]                       = 1.539 -> 13.85
      mean      c = E[max of 10 N(0, 1/2)] (two critics' mean)  = 1.088 ->  9.79
      min       c = 1.088 - E|e1 - e2| / 2 = 1.088 - 1/sqrt(pi) (the difference of
                two Gaussians is independent of their mean)      = 0.524 ->  4.72
      double Q-learning: critic j's noise at critic i's argmax has mean 0   ->  0
    Tolerance: 4 standard errors of the mean over the 4000 independent trials
    (standard errors 0.014 to 0.026 here), plus the start-up transient
    gamma^80 * 13.85 < 0.005."""
    gamma = 0.9
    e_max = expected_max_of_normals(10)
    e_max_mean = expected_max_of_normals(10, std=0.5**0.5)
    fixed = {
        "single": e_max,
        "mean": e_max_mean,
        "min": e_max_mean - 1 / torch.pi**0.5,
        "double_q_learning": 0.0,
    }
    runs = {
        s: bootstrapped_bias(s, iterations=iterations, select=select) for s in fixed
    }
    for strategy, c in fixed.items():
        est = runs[strategy]
        se = est.std().item() / len(est) ** 0.5
        target = gamma * c / (1 - gamma)
        tol = 4 * se + 0.005
        assert abs(est.mean().item() - target) < tol, (strategy, est.mean(), target)
    # Each backup adds fresh noise (the argmax is the noise's: y is the same for every
    # action), so the estimate is an AR(1), y <- gamma (y + e): its variance after k
    # backups is proportional to 1 - gamma^(2k). After 80 and after 1 backup: ratio
    # (1 - gamma^160) / (1 - gamma^2) = 5.26 for every strategy, within 4 relative
    # standard errors of a ratio of two sample variances.
    from snippets.sac.actor_gradients import var_rel_se

    for strategy, est in runs.items():
        one = bootstrapped_bias(strategy, iterations=1, seed=1)
        ratio = est.var().item() / one.var().item()
        rel_se = (var_rel_se(est) ** 2 + var_rel_se(one) ** 2) ** 0.5
        expected = (1 - gamma**160) / (1 - gamma**2)
        assert abs(ratio / expected - 1) < 4 * rel_se, (strategy, ratio, expected)
    # Double Q-learning's target is unbiased trial by trial, also for a lone trial.
    alone = torch.cat(
        [bootstrapped_bias("double_q_learning", trials=1, seed=s) for s in range(20)]
    )
    assert abs(alone.mean().item()) < 4 * alone.std().item() / 20**0.5, alone


def test_doubleq_swap_equals_mean_when_one_actor_picks_by_the_mean(
    select="mean", swap="doubleq"
):
    """An identity of the toy: one actor picks the same a* for both critics by their
    mean; the swap only permutes the two rows, so their mean follows the recursion of
    "mean" draw by draw (the actor's rule does not see which row is which, and the
    noise is drawn alike). Equal up to float32 rounding of 80 backups: 1e-4."""
    runs = {s: bootstrapped_bias(s, select=select) for s in (swap, "mean")}
    torch.testing.assert_close(runs[swap], runs["mean"], atol=1e-4, rtol=0)


def test_refutes_doubleq_swap_never_beats_mean_with_one_actor(select="min"):
    """SAC's actor maximises min_i Q_i. Then the swapped targets differ between the
    critics, the min rule sees the difference, and doubleq no longer follows "mean".
    Paired comparison (the same noise in every strategy, draw by draw): doubleq ends
    below mean by more than 4 standard errors of the paired difference over 4000
    trials, plus the float32 rounding of the identity above (1e-4); it stays above
    min by more than that too: the swap removes a little of the bias, min much more."""
    runs = {s: bootstrapped_bias(s, select=select) for s in ("doubleq", "mean", "min")}

    def paired(a, b):  # mean of a - b and its standard error over the trials
        d = (runs[a] - runs[b]).double()
        return d.mean().item(), d.std().item() / len(d) ** 0.5

    gain, se = paired("mean", "doubleq")
    assert gain > 4 * se + 1e-4, (gain, se)
    left, se_min = paired("doubleq", "min")
    assert left > 4 * se_min + 1e-4, (left, se_min)
