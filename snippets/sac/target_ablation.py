"""Ablation: SAC on Pendulum-v1 with the target critics (tau = 0.005) and without them (tau = 1).

The two committed CSVs come from snippets/sac/sac_pendulum.py, 3 seeds each:

    python -m snippets.sac.sac_pendulum --seed S --total-steps 20000 --csv docs/topics/sac/data/pendulum_sac.csv
    python -m snippets.sac.sac_pendulum --seed S --total-steps 20000 --tau 1.0 --csv docs/topics/sac/data/pendulum_sac_tau1.csv

With tau = 1 the soft update theta' <- tau theta + (1 - tau) theta' (Algorithm 1, arXiv:1812.05905)
copies the online critics every step, so the Bellman target is computed by the critics being trained.
"""

# --8<-- [start:collapses]
import pathlib

from snippets.sac.sac_pendulum import CURVE_CSV, read_curve

TAU1_CSV = pathlib.Path(__file__).resolve().parents[2] / "docs/topics/sac/data/pendulum_sac_tau1.csv"


def late_collapses(curves, from_step=10_000, below=-400.0):
    """curves: {seed: ([steps...], [eval_return...])} as returned by read_curve.
    -> {seed: number of evaluations at steps >= from_step whose return is below `below`}."""
    return {seed: sum(1 for s, r in zip(steps, rets) if s >= from_step and r < below)
            for seed, (steps, rets) in curves.items()}


def final_returns(curves, step=20_000):
    """-> {seed: eval_return at `step`}."""
    return {seed: rets[steps.index(step)] for seed, (steps, rets) in curves.items()}
# --8<-- [end:collapses]


def test_no_target_network_collapses_late_in_training_on_every_seed():
    """From 10,000 steps on: tau = 1 falls below -400 at least 3 times on each seed, tau = 0.005 never."""
    with_target, without = read_curve(CURVE_CSV), read_curve(TAU1_CSV)
    assert sorted(with_target) == sorted(without) == [1, 2, 3], (sorted(with_target), sorted(without))
    for seed in (1, 2, 3):
        assert with_target[seed][0] == without[seed][0], f"seed {seed}: different evaluation steps"

    drops_target, drops_tau1 = late_collapses(with_target), late_collapses(without)
    assert all(n == 0 for n in drops_target.values()), f"tau=0.005 late collapses {drops_target}"
    assert all(n >= 3 for n in drops_tau1.values()), f"tau=1 late collapses {drops_tau1}"

    # The median at 20,000 steps is also worse without the target network (by at least 20).
    med = lambda xs: sorted(xs)[len(xs) // 2]
    med_target = med(list(final_returns(with_target).values()))
    med_tau1 = med(list(final_returns(without).values()))
    assert med_tau1 < med_target - 20, f"median final: tau=1 {med_tau1:.1f}, tau=0.005 {med_target:.1f}"
