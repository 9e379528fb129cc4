"""The group mean as a baseline: no critic, an unbiased (up to (G-1)/G) policy gradient,
and a variance that no longer depends on where the reward's zero is.

For one prompt with a categorical policy pi_theta over K answers, a group of G samples
y_1..y_G ~ pi gives the estimator  g = 1/G sum_i A_i grad log pi(y_i),
with grad_theta log pi(y) = onehot(y) - pi for softmax logits theta. The true gradient
is grad J = sum_y pi(y) (r(y) - V) (onehot(y) - pi),  V = E_pi[r]   (policy gradient
theorem, Williams 1992; GRPO's group baseline: Sec. 4.1.2, arXiv:2402.03300).
Everything here has a closed form; Monte Carlo only checks the code against it.
"""

import math

# --8<-- [start:advantage_rules]
import torch

from snippets.grpo.advantages import group_advantages


def advantages(rewards: torch.Tensor, rule: str) -> torch.Tensor:
    """rewards (num_groups, G) -> advantages (num_groups, G) under one baseline rule:
    "none": r;  "mean": r - group mean (GRPO without std, Dr. GRPO);
    "rloo": r - mean of the other G-1 samples (leave-one-out, Kool et al. 2019);
    "grpo": (r - mean) / (std + eps), the paper's rule."""
    G = rewards.shape[1]
    if rule == "none":
        return rewards
    if rule == "mean":
        return rewards - rewards.mean(1, keepdim=True)
    if rule == "rloo":
        return rewards - (rewards.sum(1, keepdim=True) - rewards) / (G - 1)
    if rule == "grpo":
        return group_advantages(rewards)
    raise ValueError(rule)


# --8<-- [end:advantage_rules]


# --8<-- [start:gradient_estimates]
import torch

from snippets.grpo.baseline import advantages


def gradient_estimates(probs, reward, G, num_groups, rule, generator):
    """Monte Carlo policy-gradient estimates, one per group.
    probs: (K,) policy; reward: (K,) reward of each answer; returns (num_groups, K).
    With grad log pi(y) = onehot(y) - pi, a group's 1/G sum_i A_i (onehot(y_i) - pi)
    is A_i / G added at each answer y_i, minus mean_i(A_i) pi."""
    n = num_groups * G
    y = torch.multinomial(probs, n, replacement=True, generator=generator)
    y = y.view(num_groups, G)
    A = advantages(reward[y], rule)  # (num_groups, G)
    hits = torch.zeros(num_groups, probs.numel(), dtype=probs.dtype)
    hits.scatter_add_(1, y, A)  # sum_i A_i onehot(y_i), (num_groups, K)
    return hits / G - A.mean(1, keepdim=True) * probs


def true_gradient(probs, reward):
    """grad_theta E_pi[r] for softmax logits theta: pi * (r - V), shape (K,)."""
    return probs * (reward - (probs * reward).sum())


# --8<-- [end:gradient_estimates]


# --8<-- [start:exact_variance]
import torch

from snippets.grpo.baseline import true_gradient


def exact_total_variance(probs, reward, G, rule):
    """tr Var g of the group estimate, exactly, for rule "none", "rloo" or "mean".
    s(y) = onehot(y) - pi, m2(y) = ||s(y)||^2, g* = grad J.
      none: (E[r^2 m2] - ||g*||^2) / G                  (G independent terms r_i s_i)
      rloo: (E[m2 ((r - V)^2 + Var r / (G-1))] - ||g*||^2) / G + ||g*||^2 / (G (G-1))
            (the baseline of the other G-1 samples is independent of y_i: it adds its
            variance Var r / (G-1); two terms i != j share baselines, covariance
            ||g*||^2 / (G-1)^2)
      mean: ((G-1)/G)^2 * rloo, since r_i - mean = (G-1)/G (r_i - mean of others).
    """
    K = probs.numel()
    m2 = ((torch.eye(K, dtype=probs.dtype) - probs) ** 2).sum(1)  # ||s(y)||^2, (K,)
    g2 = true_gradient(probs, reward).pow(2).sum()
    V = (probs * reward).sum()
    var_r = (probs * (reward - V) ** 2).sum()
    if rule == "none":
        return ((probs * reward**2 * m2).sum() - g2) / G
    rloo = ((probs * m2 * ((reward - V) ** 2 + var_r / (G - 1))).sum() - g2) / G
    rloo = rloo + g2 / (G * (G - 1))
    if rule == "rloo":
        return rloo
    if rule == "mean":
        return ((G - 1) / G) ** 2 * rloo
    raise ValueError(rule)


def optimal_baseline(probs, reward):
    """b* = E[r m2] / E[m2]: the constant baseline b that minimises the variance of
    (r - b) s(y), which is quadratic in b: Var_0 - 2 b E[r m2] + b^2 E[m2]."""
    m2 = ((torch.eye(probs.numel(), dtype=probs.dtype) - probs) ** 2).sum(1)
    return (probs * reward * m2).sum() / (probs * m2).sum()


# --8<-- [end:exact_variance]


# --8<-- [start:prompt_weight]
import math

import torch


def grpo_prompt_weight(p, G, eps=1e-4):
    """E[g_grpo] = w * grad J for a prompt whose single right answer (reward 1, else 0)
    has probability p. Given k right answers in the group, the advantages are
    +-(k/G or 1-k/G) / (std_k + eps) with std_k = sqrt(k (G-k) / (G (G-1))), and the
    expected estimate is k (G-k) / (G^2 (1-p) (std_k + eps)) (e_right - pi); averaging
    over k ~ Binomial(G, p) and dividing by grad J = p (e_right - pi) gives w. Without
    the std (rule "mean") w = (G-1)/G for every p; with it w -> 1/sqrt(p (1-p)).
    """
    k = torch.arange(G + 1, dtype=torch.float64)
    log_binom = (
        math.lgamma(G + 1)
        - torch.lgamma(k + 1)
        - torch.lgamma(G - k + 1)
        + k * math.log(p)
        + (G - k) * math.log(1 - p)
    )
    std_k = torch.sqrt(k * (G - k) / (G * (G - 1)))
    per_k = k * (G - k) / (G**2 * p * (1 - p) * (std_k + eps))
    per_k = torch.where(k * (G - k) > 0, per_k, 0.0)  # all-equal groups give 0
    return (log_binom.exp() * per_k).sum().item()


# --8<-- [end:prompt_weight]


def mean_rule_prompt_weight(p, G, eps=1e-4):
    """The same weight for the "mean" rule (no std): (G-1)/G whatever p is. The
    counterfactual of GRPO's difficulty reweighting."""
    return (G - 1) / G


def _bandit(K=19, p_correct=0.2, seed=0):
    """A 'sum of two digits' prompt: 19 possible answers, one right (index 3), reward 1
    if right; the wrong answers share 1 - p_correct in fixed random proportions."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(K, generator=g, dtype=torch.float64)
    logits[3] = -torch.inf
    probs = torch.softmax(logits, -1) * (1 - p_correct)
    probs[3] = p_correct
    reward = torch.zeros(K, dtype=torch.float64)
    reward[3] = 1.0
    return probs, reward


def expected_reward(probs, reward):
    """V = E_pi[r], the policy's average reward; probs, reward: (K,) -> ()."""
    return (probs * reward).sum()


def mode_reward(probs, reward):
    """The reward of the policy's most probable answer, (K,), (K,) -> (): "the typical
    action" instead of the average one (a counterfactual baseline)."""
    return reward[probs.argmax()]


def group_mean(rewards):
    """The group's mean reward, (n, G) -> (n,): GRPO's baseline (Sec. 4.1.1)."""
    return rewards.mean(1)


def group_median(rewards):
    """The group's (lower) median reward, (n, G) -> (n,): a robust alternative."""
    return rewards.median(1).values


RULES = ("none", "mean", "rloo", "grpo")


def measure(p_correct=0.2, bonus=0.0, G=8, num_groups=40_000, seed=1):
    """Monte Carlo mean, standard errors, total variance and signal-to-noise ratio
    SNR = ||E g||^2 / tr Var g of each rule's estimate, for reward = 1{right} + bonus
    (bonus: e.g. a format reward every well-formed answer gets), with the exact values
    where they exist. SNR is unchanged by rescaling, so it compares rules that scale
    the advantages differently (the (G-1)/G of "mean", the 1/std of "grpo") fairly."""
    probs, reward = _bandit(p_correct=p_correct)
    reward = reward + bonus
    true = true_gradient(probs, reward)
    out = {}
    for rule in RULES:
        g = torch.Generator().manual_seed(seed)  # same samples for every rule
        est = gradient_estimates(probs, reward, G, num_groups, rule, g)
        mean, var = est.mean(0), est.var(0)
        sq_dev = (est - mean).pow(2).sum(1)  # ||g_i - mean||^2, mean = tr Var
        out[rule] = dict(
            est=est,
            mean=mean,
            se=var.sqrt() / num_groups**0.5,
            true=true,
            total_var=var.sum().item(),
            total_var_se=(sq_dev.std() / num_groups**0.5).item(),
            snr=(mean.pow(2).sum() / var.sum()).item(),
        )
        if rule != "grpo":
            exact = exact_total_variance(probs, reward, G, rule).item()
            scale = (G - 1) / G if rule == "mean" else 1.0
            out[rule].update(
                exact_var=exact, exact_snr=scale**2 * true.pow(2).sum().item() / exact
            )
    return out


def exact_snr(p, bonus, G, rule):
    """Exact SNR of rule "none", "mean" or "rloo" ("mean" and "rloo" are equal)."""
    probs, reward = _bandit(p_correct=p)
    reward = reward + bonus
    g2 = true_gradient(probs, reward).pow(2).sum()
    return (
        g2 / exact_total_variance(probs, reward, G, "rloo" if rule == "mean" else rule)
    ).item()


def test_exact_variance_matches_monte_carlo():
    # The closed forms describe the code: 40,000 groups per setting; the Monte Carlo
    # total variance is within 5 of its standard errors (std of ||g_i - mean||^2 over
    # sqrt(n)) of the exact one, the Monte Carlo mean within 4 standard errors of its
    # exact expectation.
    z_scores = []
    for p, bonus, G in [(0.2, 0.0, 8), (0.2, 1.0, 8), (0.8, 0.0, 4), (0.5, 1.0, 16)]:
        out = measure(p, bonus, G=G)
        true = out["none"]["true"]
        scale = {
            "none": 1.0,
            "rloo": 1.0,
            "mean": (G - 1) / G,
            "grpo": grpo_prompt_weight(p, G),
        }
        for rule in RULES:
            o = out[rule]
            err = (o["mean"] - scale[rule] * true).abs()
            assert (err < 4 * o["se"] + 1e-12).all(), (p, bonus, G, rule, err.max())
            if rule != "grpo":
                gap = abs(o["total_var"] - o["exact_var"])
                assert gap < 5 * o["total_var_se"], (p, bonus, G, rule, gap)
        # The same samples for every rule: group by group, the mean rule's estimate is
        # (G-1)/G times the leave-one-out one (an identity, float64 rounding).
        torch.testing.assert_close(
            out["mean"]["est"], (G - 1) / G * out["rloo"]["est"], atol=1e-12, rtol=0
        )
        # The reported SNRs: ||mean||^2 / tr Var of the estimates, and the exact one
        # that exact_snr computes on its own.
        for rule in RULES:
            o = out[rule]
            snr = o["est"].mean(0).pow(2).sum() / o["est"].var(0).sum()
            assert abs(o["snr"] - snr.item()) < 1e-12 * snr.item()
            if rule != "grpo":
                exact = exact_snr(p, bonus, G, rule)
                assert abs(o["exact_snr"] - exact) < 1e-12 * exact, (rule, exact)
            z = (o["mean"] - scale[rule] * true) / o["se"]
            z_scores.append(z[o["se"] > 0])
        # Bare 0/1 reward: the no-baseline estimate is (#right / G)(e_right - pi),
        # always along the true gradient; a baseline adds other directions.
        if bonus == 0.0:
            u = true / true.norm()
            est = out["none"]["est"]
            off_axis = est - (est @ u).unsqueeze(1) * u
            assert off_axis.abs().max() < 1e-12
            est = out["mean"]["est"]
            assert (est - (est @ u).unsqueeze(1) * u).abs().max() > 0.1
    # The standard errors are calibrated: over the 304 coordinates the errors' z-scores
    # have root mean square 1. They are correlated (rules share samples, coordinates
    # sum to 0): some 180 independent ones, RMS sd 1 / sqrt(2 * 180) = 0.05; 0.3 is 6.
    rms = torch.cat(z_scores).pow(2).mean().sqrt().item()
    assert abs(rms - 1) < 0.3, rms


def test_grpo_prompt_weight_is_the_expectation_of_grpo_advantages():
    # Enumerate the number k of right answers in a group (Binomial(G, p)); the group's
    # advantages come from group_advantages itself (sample std + eps, as TRL). Given
    # k, E[g] = [k A_right - (G - k) A_wrong p / (1 - p)] / G (e_right - pi), as the
    # wrong answers' score averages to -p / (1 - p) (e_right - pi); w divides by p.
    for G in (2, 5, 8):
        for p in (0.1, 0.5, 0.85):
            w = 0.0
            for k in range(G + 1):
                r = torch.tensor([[1.0] * k + [0.0] * (G - k)], dtype=torch.float64)
                a = group_advantages(r)[0]
                a_right = a[0].item() if k > 0 else 0.0
                a_wrong = a[-1].item() if k < G else 0.0
                prob = math.comb(G, k) * p**k * (1 - p) ** (G - k)
                w += prob * (k * a_right - (G - k) * a_wrong * p / (1 - p)) / (G * p)
            assert abs(grpo_prompt_weight(p, G) - w) < 1e-12, (G, p, w)


def test_gradient_estimate_has_a_coordinate_for_every_answer():
    # An answer the policy never samples still has a score coordinate, -pi(y) = 0 here.
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    reward = torch.tensor([1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    est = gradient_estimates(
        probs, reward, 4, 100, "rloo", torch.Generator().manual_seed(0)
    )
    assert est.shape == (100, 4)
    assert torch.equal(est[:, 3], torch.zeros(100, dtype=torch.float64))


P_GRID = (0.05, 0.2, 0.35, 0.5, 0.8, 0.95)
G_GRID = (2, 4, 8, 16, 64, 1024)


def test_qualifies_group_baseline_cuts_variance(bonus=0.0):
    G = 8
    # Holds (unbiased): r_i - mean = (G-1)/G (r_i - mean of others) exactly, so the
    # group mean gives (G-1)/G times the unbiased leave-one-out estimate: same direction
    # (Monte Carlo check: test_exact_variance_matches_monte_carlo).
    g = torch.Generator().manual_seed(0)
    r = torch.rand(5, G, dtype=torch.float64, generator=g)
    torch.testing.assert_close(
        advantages(r, "mean"), (G - 1) / G * advantages(r, "rloo"), atol=1e-12, rtol=0
    )
    # Holds (variance): baselined advantages ignore a reward offset, the raw reward
    # does not (its variance grows like bonus^2 E[m2] / G). With a format bonus of 1 on
    # every answer the group mean has the higher SNR in every setting of the grid.
    torch.testing.assert_close(
        advantages(r + 1.0, "mean"), advantages(r, "mean"), atol=1e-12, rtol=0
    )
    for p in P_GRID:
        for G in G_GRID:
            assert exact_snr(p, 1.0, G, "mean") > exact_snr(p, 1.0, G, "none"), (p, G)

    # Does not hold in general: whether the baseline helps depends on where the reward's
    # zero is. Exactly, tr Var none - tr Var rloo =
    #   [V (2 b* - V) E[m2] - (Var r E[m2] + ||g*||^2) / (G-1)] / G,
    # positive only if V is closer to the optimal constant baseline b* than 0 is
    # (V < 2 b*), by more than the noise of estimating V from G-1 samples.
    # (bonus: the reward's offset in this part, 0 for the bare 0/1 reward)
    for p in P_GRID:
        probs, reward = _bandit(p_correct=p)
        reward = reward + bonus
        V = (probs * reward).sum()
        b_star = optimal_baseline(probs, reward)
        m2 = ((torch.eye(19, dtype=torch.float64) - probs) ** 2).sum(1)
        e_m2, var_r = (probs * m2).sum(), (probs * (reward - V) ** 2).sum()
        g2 = true_gradient(probs, reward).pow(2).sum()
        ratios = []
        for G in G_GRID:
            snr_none = exact_snr(p, bonus, G, "none")
            if bonus == 0.0:  # bare 0/1 reward, one right answer: SNR = G p / (1 - p)
                assert abs(snr_none / (G * p / (1 - p)) - 1) < 1e-9, (p, G, snr_none)
            ratios.append(exact_snr(p, bonus, G, "mean") / snr_none)
            gain = (V * (2 * b_star - V) * e_m2 - (var_r * e_m2 + g2) / (G - 1)) / G
            diff = exact_total_variance(
                probs, reward, G, "none"
            ) - exact_total_variance(probs, reward, G, "rloo")
            torch.testing.assert_close(diff, gain, atol=1e-12, rtol=0)
            assert (ratios[-1] > 1) == (gain > 0), (p, G)
        # The noise of the estimated baseline shrinks with G: the gain grows with G ...
        assert all(a < b for a, b in zip(ratios, ratios[1:])), (p, ratios)
        # ... but stays below 1 for every G when V >= 2 b*: here for p >= 0.5.
        assert (V >= 2 * b_star) == (p >= 0.5), (p, V, b_star)
        if p >= 0.5:
            assert ratios[-1] < 1, (p, ratios)
        # Small groups (G <= 4) never gain with a bare 0/1 reward on this grid.
        assert ratios[0] < 1 and ratios[1] < 1, (p, ratios)


def test_grpo_weight_depends_on_the_prompt_success_rate():
    # The std division reweights prompts: w(p, G) is not constant in p, and tends to
    # 1/sqrt(p (1-p)) as G grows (the group std tends to sqrt(p (1-p))); the mean rule
    # gives (G-1)/G whatever p is (its expectation is E[k (G-k)] / (G^2 p (1-p))).
    for G in (4, 8, 16):
        # the further p is from 1/2 (too easy or too hard), the larger the weight
        w = [grpo_prompt_weight(p, G) for p in (0.5, 0.35, 0.2, 0.05)]
        assert all(a < b for a, b in zip(w, w[1:])), (G, w)
        # too easy and too hard alike: w(p) = w(1 - p)
        w_hard, w_easy = (grpo_prompt_weight(q, G, eps=0.0) for q in (0.3, 0.7))
        assert abs(w_hard - w_easy) < 1e-12
    errors = []
    for G in (64, 1024, 16384):
        w = grpo_prompt_weight(0.05, G, eps=0.0)
        errors.append(abs(w * math.sqrt(0.05 * 0.95) - 1))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3, errors


def test_group_mean_estimates_value_without_critic(statistic=group_mean):
    # V(q) = E_{o~pi}[r] is what PPO's critic learns; the group mean is its Monte Carlo
    # estimate: unbiased, with variance Var r / G.
    probs, reward = _bandit()
    V = (probs * reward).sum().item()
    var_r = (probs * (reward - V) ** 2).sum().item()
    g = torch.Generator().manual_seed(3)
    n = 20_000
    for G in (4, 16, 64):
        y = torch.multinomial(probs, n * G, replacement=True, generator=g).view(n, G)
        means = statistic(reward[y])
        # mean of n group means: standard error sqrt(Var r / G / n); 4 of them
        assert abs(means.mean().item() - V) < 4 * (var_r / G / n) ** 0.5
        # sample variance of n near-Gaussian means: relative standard error
        # sqrt(2 / (n - 1)) = 1%; 5 of them
        assert abs(means.var().item() / (var_r / G) - 1) < 5 * (2 / (n - 1)) ** 0.5


def test_advantage_measures_better_or_worse_than_average(baseline=expected_reward):
    # A(q, o) = r(q, o) - V(q) is positive exactly for answers better than the policy's
    # average and zero on average under pi: that is its definition (identities below).
    # What can fail is the estimate: with a large group, r - group mean tends to r - V,
    # and the GRPO rule to (r - V) / sigma_r.
    probs, reward = _bandit()
    reward = reward + 0.3 * torch.arange(19, dtype=torch.float64) / 19  # graded rewards
    V = baseline(probs, reward)
    A = reward - V
    assert abs((probs * A).sum().item()) < 1e-12
    assert ((A > 0) == (reward > V)).all()
    n = 100_000
    g = torch.Generator().manual_seed(4)
    y = torch.multinomial(probs, n, replacement=True, generator=g).view(1, -1)
    r = reward[y]
    sigma = ((probs * A**2).sum()) ** 0.5
    kurtosis = (probs * A**4).sum() / sigma**4
    se_mean = sigma / n**0.5  # error of the group mean
    se_std = sigma * ((kurtosis - 1) / (4 * n)) ** 0.5  # error of the group std
    adv_mean = advantages(r, "mean")[0]
    assert (adv_mean - A[y[0]]).abs().max() < 5 * se_mean
    # (r - r_bar)/(s + eps) - (r - V)/sigma, to first order in the errors
    tol = 5 * se_mean / sigma + A.abs().max() * (5 * se_std + 1e-4) / sigma**2
    adv_grpo = advantages(r, "grpo")[0]
    assert (adv_grpo - A[y[0]] / sigma).abs().max() < tol


if __name__ == "__main__":
    for p, bonus in [(0.2, 0.0), (0.2, 1.0), (0.8, 0.0)]:
        out = measure(p, bonus)
        print(
            f"p={p} bonus={bonus} G=8",
            {k: round(v["snr"], 3) for k, v in out.items()},
            "exact",
            {k: round(v["exact_snr"], 3) for k, v in out.items() if "exact_snr" in v},
        )
    for bonus in (0.0, 1.0):
        print(f"SNR mean / SNR none, bonus {bonus}, G = {G_GRID}")
        for p in P_GRID:
            print(
                f"  p={p}",
                [
                    round(
                        exact_snr(p, bonus, G, "mean") / exact_snr(p, bonus, G, "none"),
                        3,
                    )
                    for G in G_GRID
                ],
            )
    print("GRPO prompt weight w(p, G), p =", P_GRID)
    for G in (4, 8, 16, 64):
        print(f"  G={G}", [round(grpo_prompt_weight(p, G), 3) for p in P_GRID])
