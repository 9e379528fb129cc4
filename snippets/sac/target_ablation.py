"""Ablation: SAC on Pendulum-v1 with target critics (tau = 0.005) and without (tau = 1).

With tau = 1 the soft update theta' <- tau theta + (1 - tau) theta' (Algorithm 1,
arXiv:1812.05905) copies the online critics every step: the Bellman target is computed
by the critics being trained. The committed curves (5 seeds each, 30,000 steps) and the
commands that made them: snippets/sac/pendulum_data.py and the .json files beside the
CSVs.

"Unstable" is measured relative to each run's own first success, with two thresholds
fixed from the task before the runs were made, not read off the curves:
  SUCCESS  = -200: the goal set for Pendulum-v1 on the algorithm page;
  COLLAPSE = -800: the middle of Pendulum's return range [-1600, 0]: an evaluation
             below it is nearer to a policy that never swings the pendulum up
             (about -1200 to -1600) than to one that balances it (about -150).
A collapse is an evaluation below COLLAPSE after the run's first evaluation at or
above SUCCESS: the policy had learned the task and lost it again.
"""

# --8<-- [start:collapses]
SUCCESS, COLLAPSE = -200.0, -800.0


def first_success(steps, returns, threshold=SUCCESS):
    """Step of the first evaluation with return >= threshold (None if never)."""
    return next((s for s, r in zip(steps, returns) if r >= threshold), None)


def collapses_after_success(steps, returns, success=SUCCESS, collapse=COLLAPSE):
    """-> (evaluations after the first success, how many of them fall below collapse).
    (0, 0) for a run that never succeeds."""
    t = first_success(steps, returns, success)
    later = [r for s, r in zip(steps, returns) if t is not None and s > t]
    return len(later), sum(r < collapse for r in later)


def ablation_summary(curves):
    """curves: {seed: (steps, returns)} -> {seed: (first success, evaluations after
    it, collapses among them)}."""
    return {
        seed: (first_success(st, rt), *collapses_after_success(st, rt))
        for seed, (st, rt) in sorted(curves.items())
    }


# --8<-- [end:collapses]


def test_collapse_metric_on_hand_made_curves():
    steps = [1000, 2000, 3000, 4000, 5000]
    assert first_success(steps, [-1500, -200.0, -900, -150, -100]) == 2000
    assert collapses_after_success(steps, [-1500, -200.0, -900, -150, -100]) == (3, 1)
    # A dip that stays above COLLAPSE is not a collapse; before success nothing counts.
    assert collapses_after_success(steps, [-900, -1500, -190, -799, -150]) == (2, 0)
    assert collapses_after_success(steps, [-1500] * 5) == (0, 0)
    assert first_success(steps, [-1500] * 5) is None
    # Both thresholds are met with equality: a return of exactly SUCCESS is a success,
    # one of exactly COLLAPSE is not a collapse ("below" it is).
    edges = [-1500, -200.0, -800.0, -801.0, -100]
    assert collapses_after_success(steps, edges) == (3, 1)
    # Other thresholds are used as given, for the first success too.
    rets = [-1500, -180, -900, -120, -500]
    assert collapses_after_success(steps, rets) == (3, 1)
    assert collapses_after_success(steps, rets, success=-150) == (1, 0)
    assert collapses_after_success(steps, rets, success=-150, collapse=-400) == (1, 1)
    assert ablation_summary({2: (steps, rets), 1: (steps, [-1500] * 5)}) == {
        1: (None, 0, 0),
        2: (2000, 3, 1),
    }


def test_median_first_success_counts_a_run_that_never_succeeds_as_last():
    def summary(firsts):
        return {seed: (f, 0, 0) for seed, f in enumerate(firsts)}

    assert median_first_success(summary([3000, None, 1000, 2000, None])) == 3000
    assert median_first_success(summary([5000, 1000, 2000])) == 2000
    assert median_first_success(summary([None, 1000, None])) == float("inf")


def median_first_success(summary):
    """Median over seeds of the first-success step; a run that never succeeds
    counts as infinitely late."""
    t = sorted(float("inf") if f is None else f for f, _, _ in summary.values())
    return t[len(t) // 2]


from snippets.sac.pendulum_data import CURVE_CSV, TAU1_CSV, load_runs


def test_qualifies_no_target_network_makes_learning_less_stable(without_csv=TAU1_CSV):
    """Criteria written down before the tau = 1 runs were made: at least 3 of the 5
    tau = 1 runs collapse after their first success, and their median first success
    comes later. A third criterion, "no tau = 0.005 run ever collapses", was also
    written down beforehand; the data refuted it (seed 4 collapsed once), and that
    is the part of the claim that does not hold.
    without_csv: the runs without a target network (the analysis is decided on the
    curves first; that the two sets differ only in tau is checked after)."""
    (with_target, runs_t), (without, runs_1) = (
        load_runs(CURVE_CSV),
        load_runs(without_csv),
    )
    assert sorted(with_target) == sorted(without) and len(without) == 5
    s_target, s_tau1 = ablation_summary(with_target), ablation_summary(without)
    # Holds: without the target network most runs lose the learned policy again,
    # and they succeed later.
    assert sum(c > 0 for _, _, c in s_tau1.values()) >= 3, s_tau1
    assert median_first_success(s_tau1) > median_first_success(s_target)

    def rate(summary):  # collapses per evaluation after the first success
        return sum(c for _, _, c in summary.values()) / max(
            1, sum(n for _, n, _ in summary.values())
        )

    assert rate(s_tau1) > rate(s_target), (s_tau1, s_target)
    # Does not hold: the target network does not rule collapses out.
    assert sum(c for _, _, c in s_target.values()) >= 1, s_target
    for seed in with_target:  # same settings but tau
        a, b = dict(runs_t[seed]["settings"]), dict(runs_1[seed]["settings"])
        assert (a.pop("tau"), b.pop("tau")) == (0.005, 1.0) and a == b, (a, b)


def collapses_in_first_evaluations(curves, k):
    """curves: {seed: (steps, returns)} -> (collapses, evaluations) over the first k
    evaluations after each run's first success: every run watched equally long."""
    collapses = watched = 0
    for steps, returns in curves.values():
        t = first_success(steps, returns)
        if t is not None:
            end = steps.index(t) + 1 + k
            n, c = collapses_after_success(steps[:end], returns[:end])
            collapses, watched = collapses + c, watched + n
    return collapses, watched


def test_more_collapses_without_target_network_when_watched_equally_long():
    """A check the second reading added after seeing the data (not one of the
    criteria written beforehand). The collapse rate per evaluation favours the
    group that learns later: it is watched for less time after its first success,
    when newly learned policies may be most fragile. Watching every run for the
    same k evaluations after its first success, k the shortest such period among
    the 10 runs, the runs without a target network still collapse more."""
    steps = [1000, 2000, 3000, 4000, 5000]
    made_up = {1: (steps, [-1500, -150, -100, -900, -900]), 2: (steps, [-1500] * 5)}
    assert collapses_in_first_evaluations(made_up, 1) == (0, 1)
    assert collapses_in_first_evaluations(made_up, 3) == (2, 3)
    with_target, without = load_runs(CURVE_CSV)[0], load_runs(TAU1_CSV)[0]
    summaries = [*ablation_summary(with_target).values()]
    summaries += [*ablation_summary(without).values()]
    k = min(n for _, n, _ in summaries)
    assert k >= 1, summaries  # every run succeeded at least once before the end
    (c1, n1), (c0, n0) = (
        collapses_in_first_evaluations(without, k),
        collapses_in_first_evaluations(with_target, k),
    )
    assert n1 == n0 == 5 * k and c1 > c0, (k, c1, c0)


# The update rules of target.py, decided here with the rule as a parameter: each
# claim names the nearest wrong rule as its counterfactual. (target.py's soft_update
# is part of the committed runs' code fingerprint, so that file stays as it is.)
import torch

from snippets.sac.target import periodic_update, soft_update


def soft_update_swapped(target, source, tau):
    """The usual slip, weights swapped: theta' <- (1 - tau) theta + tau theta'."""
    soft_update(target, source, 1.0 - tau)


def periodic_update_from_step_0(target, source, step, period):
    """Off by one: counts steps from 0, so it copies at steps 1, 1 + period, ..."""
    return periodic_update(target, source, step - 1, period)


def periodic_update_first_period_only(target, source, step, period):
    """Copies at step `period` and never again (a test that checks only steps 1 to
    period cannot tell it from periodic_update)."""
    return periodic_update(target, source, step, period) if step <= period else False


def periodic_update_from_period_on(target, source, step, period):
    """Copies at every step from `period` on (step >= period instead of a multiple)."""
    return periodic_update(target, source, period, period) if step >= period else False


def linear_pair(seed):
    """(target, source): two Linear(3, 2) with different random parameters."""
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)


def test_soft_update_is_exact_polyak_average(update=soft_update):
    """theta' <- tau theta + (1 - tau) theta'  (Algorithm 1, arXiv:1812.05905)."""
    target, source = linear_pair(0)
    t0 = [p.clone() for p in target.parameters()]
    s0 = [p.clone() for p in source.parameters()]
    update(target, source, tau=0.1)
    for p_t, p0, p_s in zip(target.parameters(), t0, source.parameters()):
        # float32 rounding of a weighted sum of numbers below 1: 1e-7
        torch.testing.assert_close(p_t, 0.1 * p_s + 0.9 * p0, atol=1e-7, rtol=0)
    for p_s, p0 in zip(source.parameters(), s0):  # the source is left alone
        torch.testing.assert_close(p_s, p0, atol=0, rtol=0)

    def gap(target, source):  # (number of parameters,)
        pairs = zip(target.parameters(), source.parameters())
        return torch.cat([(t - s).flatten() for t, s in pairs])

    # With a fixed source, after n updates the gap is (1 - tau)^n of the initial gap
    # (50 roundings of float32: rtol 1e-4).
    target, source = linear_pair(0)
    gap0 = gap(target, source)
    for _ in range(50):
        update(target, source, tau=0.05)
    torch.testing.assert_close(
        gap(target, source), gap0 * 0.95**50, atol=1e-6, rtol=1e-4
    )


def test_periodic_update_copies_only_every_period(update=periodic_update):
    """Hard update at steps period, 2 period, ... (steps counted from 1); tau = 1 in
    soft_update is the same copy. Three periods of 4 steps; the source moves before
    every step (as the online critic does), so a copy at any other step shows."""
    target, source = linear_pair(0)
    last = [p.clone() for p in target.parameters()]  # what the target should hold
    copied = []
    for step in range(1, 13):
        with torch.no_grad():
            for p in source.parameters():
                p.add_(1.0)
        copied.append(update(target, source, step, period=4))
        if step % 4 == 0:
            last = [p.clone() for p in source.parameters()]
        for p, b in zip(target.parameters(), last):
            torch.testing.assert_close(p, b, atol=0, rtol=0, msg=f"step {step}")
    assert copied == [step % 4 == 0 for step in range(1, 13)], copied
    target, source = linear_pair(1)
    soft_update(target, source, tau=1.0)
    for p, s in zip(target.parameters(), source.parameters()):
        torch.testing.assert_close(p, s, atol=0, rtol=0)
