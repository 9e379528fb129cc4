"""Target networks: a slowly moving copy of the critic, used in the Bellman target."""

# --8<-- [start:soft_update]
import torch


@torch.no_grad()  # an in-place copy, not part of any graph
def soft_update(target, source, tau):
    """Polyak averaging, in place.
    target, source: nn.Modules with the same parameter shapes."""
    for t, s in zip(target.parameters(), source.parameters()):
        # theta' <- tau theta + (1 - tau) theta'   (Algorithm 1, arXiv:1812.05905)
        t.lerp_(s, tau)


# --8<-- [end:soft_update]
# soft_update keeps its decorator although mutmut then leaves it unmutated: its syntax
# tree is part of the code fingerprint that the committed Pendulum runs record
# (pendulum_data.TRAINING_CODE), and any edit to it asks for those ten 30,000-step runs
# again. The tests below decide what it does.


# --8<-- [start:hard_update]
import torch


def hard_update(target, source):
    """Copy every parameter: theta' <- theta (DQN-style periodic update, tau = 1)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.copy_(s)


def periodic_update(target, source, step, period):
    """Hard update every `period` steps (step counted from 1).
    Returns True when it copied."""
    if step % period == 0:
        hard_update(target, source)
        return True
    return False


# --8<-- [end:hard_update]


def _pair(seed):
    torch.manual_seed(seed)
    source = torch.nn.Linear(3, 2)
    target = torch.nn.Linear(3, 2)
    return target, source


def test_soft_update_is_polyak_average_and_gap_shrinks_geometrically():
    target, source = _pair(0)
    t0 = [p.clone() for p in target.parameters()]
    s0 = [p.clone() for p in source.parameters()]
    soft_update(target, source, tau=0.1)
    for p_t, p0, p_s in zip(target.parameters(), t0, source.parameters()):
        # float32 rounding of a weighted sum of numbers below 1: 1e-7
        torch.testing.assert_close(p_t, 0.1 * p_s + 0.9 * p0, atol=1e-7, rtol=0)
    for p_s, p0 in zip(source.parameters(), s0):  # the source is left alone
        torch.testing.assert_close(p_s, p0, atol=0, rtol=0)

    def gap(target, source):
        pairs = zip(target.parameters(), source.parameters())
        return torch.cat([(t - s).flatten() for t, s in pairs])

    # With a fixed source, after n updates the gap is (1 - tau)^n of the initial gap
    # (50 roundings of float32: rtol 1e-4).
    target, source = _pair(0)
    gap0 = gap(target, source)
    for _ in range(50):
        soft_update(target, source, tau=0.05)
    torch.testing.assert_close(
        gap(target, source), gap0 * 0.95**50, atol=1e-6, rtol=1e-4
    )


def test_periodic_update_copies_only_every_period_and_tau_one_is_hard():
    target, source = _pair(0)
    before = [p.clone() for p in target.parameters()]
    copied = [periodic_update(target, source, step, period=4) for step in range(1, 4)]
    assert copied == [False, False, False]
    for p, b in zip(target.parameters(), before):
        torch.testing.assert_close(p, b, atol=0, rtol=0)
    assert periodic_update(target, source, 4, period=4)
    for p, s in zip(target.parameters(), source.parameters()):
        torch.testing.assert_close(p, s, atol=0, rtol=0)
    target2, source2 = _pair(1)
    soft_update(target2, source2, tau=1.0)
    for p, s in zip(target2.parameters(), source2.parameters()):
        torch.testing.assert_close(p, s, atol=0, rtol=0)
