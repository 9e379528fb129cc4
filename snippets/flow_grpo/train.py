"""Flow-GRPO on the 2D flow model of snippets/flow_matching/toy2d.py
(arXiv:2505.05470).

Policy: the pretrained 8-Gaussians velocity network, sampled with the SDE of sde.py.
Each update: groups of SDE trajectories with few steps (denoising reduction), a reward
on the final samples, group-relative advantages (snippets/grpo/advantages.py), the
clipped per-step ratio loss (snippets/grpo/loss.py:clipped_surrogate, steps playing the
role of tokens) and the closed-form KL of each step to the frozen reference (kl.py).
Evaluation uses the ODE with more steps than training.
"""

# --8<-- [start:reward]
import torch

from snippets.flow_matching.toy2d import MEANS, MODE_STD

FAVOURED = [7, 0, 1]  # the three modes on the right (angles -45, 0, 45 degrees)


def reward(x: torch.Tensor) -> torch.Tensor:
    """exp(-d^2 / (2 * 0.3^2)), d = distance to the nearest favoured mode.
    x: (n, 2) -> (n,)."""
    d2 = ((x[:, None, :].double() - MEANS[FAVOURED]) ** 2).sum(-1).min(1).values
    return torch.exp(-d2 / (2 * 0.3**2)).to(x.dtype)


def on_data_fraction(x: torch.Tensor, radius: float = 3 * MODE_STD) -> float:
    """Share of samples within 3 mode standard deviations of one of the 8 modes (any
    mode). x: (n, 2)."""
    d2 = ((x[:, None, :].double() - MEANS) ** 2).sum(-1).min(1).values
    return (d2 < radius**2).double().mean().item()


# --8<-- [end:reward]


# --8<-- [start:rollout]
import torch

from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.flow_matching.sampling import time_grid


def rollout(model, n: int, num_steps: int, noise_level: float, generator):
    """n SDE trajectories on the grid 1 = t_0 > ... > t_N = 0, without an autograd
    graph. The first step (from t = 1, where sigma_t = a sqrt(t / (1 - t)) is
    infinite) is a plain Euler step; steps 1..N-1 are the stochastic actions. returns
    states (n, N-1, 2), next states (n, N-1, 2), log-probs (n, N-1), the times (N + 1,)
    and the final samples (n, 2)."""
    ts = time_grid(num_steps)
    x = torch.randn(n, 2, generator=generator)
    states, nexts, logps = [], [], []
    with torch.no_grad():
        x = x + model(x, ts[0].expand(n)) * (ts[1] - ts[0])
        for t, t_next in zip(ts[1:-1], ts[2:]):
            noise = torch.randn(n, 2, generator=generator)
            v = model(x, t.expand(n))
            x_next, lp, _, _ = sde_step_with_logprob(
                v, x, t, t_next, noise_level=noise_level, noise=noise
            )
            states.append(x), nexts.append(x_next), logps.append(lp)
            x = x_next
    return torch.stack(states, 1), torch.stack(nexts, 1), torch.stack(logps, 1), ts, x


# --8<-- [end:rollout]


# --8<-- [start:loss]
import torch

from snippets.flow_grpo.kl import step_kl
from snippets.flow_grpo.sde import sde_step_with_logprob
from snippets.grpo.loss import clipped_surrogate


def flow_grpo_loss(
    model,
    ref_model,
    states,
    nexts,
    old_logps,
    advantages,
    ts,
    *,
    noise_level=0.7,
    clip_eps=0.2,
    beta=0.1,
):
    """Per-step clipped surrogate + beta * closed-form KL, averaged over the steps of a
    trajectory, then over trajectories (Eq. (5), arXiv:2505.05470: steps play the role
    of tokens; every trajectory has S steps, so this per-sequence mean equals the
    token-level mean). states, nexts: (B, S, 2); old_logps: (B, S); advantages: (B,);
    ts: (S + 2,) time grid. returns (scalar loss, mean per-step KL as a float)."""
    B, S, _ = states.shape
    t = ts[1:-1].repeat(B)  # (B * S,), row-major like states.reshape
    t_next = ts[2:].repeat(B)
    x, x_next = states.reshape(B * S, 2), nexts.reshape(B * S, 2)
    kw = dict(noise_level=noise_level, prev_sample=x_next)
    _, logps, mean, std = sde_step_with_logprob(model(x, t), x, t, t_next, **kw)
    with torch.no_grad():
        _, _, ref_mean, _ = sde_step_with_logprob(ref_model(x, t), x, t, t_next, **kw)
    kl = step_kl(mean, ref_mean, std, t[:, None], t_next[:, None]).reshape(B, S)
    # (B, S)
    surrogate = clipped_surrogate(logps.reshape(B, S), old_logps, advantages, clip_eps)
    return (-surrogate + beta * kl).mean(1).mean(), kl.mean().item()


# --8<-- [end:loss]


# --8<-- [start:train]
import copy
import time

import torch

from snippets.flow_grpo.train import flow_grpo_loss, on_data_fraction, reward, rollout
from snippets.flow_matching.sampling import euler_sample
from snippets.grpo.advantages import group_advantages


def evaluate(model, n=2000, num_steps=40, seed=123):
    """ODE samples with the evaluation number of steps: mean reward and on-data
    fraction."""
    x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    x = euler_sample(model, x1, num_steps)
    return {
        "reward": reward(x).mean().item(),
        "on_data": on_data_fraction(x),
        "samples": x,
    }


def train_flow_grpo(
    ref_model,
    *,
    iterations=60,
    num_groups=8,
    group_size=16,
    train_steps=10,
    noise_level=0.7,
    inner_epochs=2,
    lr=1e-3,
    clip_eps=0.2,
    beta=0.1,
    seed=0,
):
    """Returns the fine-tuned policy, a history of rollout rewards / KL, and the CPU
    seconds spent."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    policy = copy.deepcopy(ref_model).train()
    for p in policy.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    history = {"rollout_reward": [], "kl": []}
    start = time.process_time()
    for _ in range(iterations):
        n = num_groups * group_size
        trajectories = rollout(policy, n, train_steps, noise_level, g)
        states, nexts, old_logps, ts, x0 = trajectories
        r = reward(x0)
        adv = group_advantages(r.reshape(num_groups, group_size)).reshape(n)
        for _ in range(inner_epochs):
            loss, kl = flow_grpo_loss(
                policy,
                ref_model,
                states,
                nexts,
                old_logps,
                adv,
                ts,
                noise_level=noise_level,
                clip_eps=clip_eps,
                beta=beta,
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
        history["rollout_reward"].append(r.mean().item())
        history["kl"].append(kl)
    return policy.eval(), history, time.process_time() - start


# --8<-- [end:train]


import functools
import math
import os

from snippets.flow_matching.model import VelocityMLP


def test_reward_and_on_data_fraction_follow_their_definitions():
    fav = MEANS[FAVOURED].float()  # (3, 2), the rewarded centres
    outwards = fav / fav.norm(dim=1, keepdim=True)
    # exp(-d^2 / (2 * 0.3^2)) at distance d from a rewarded centre (radially outwards:
    # no other rewarded centre is nearer there); the input's dtype is kept.
    for d in (0.0, 0.15, 0.3, 0.6):
        r = reward(fav + d * outwards)
        assert r.dtype == torch.float32
        expected = torch.full((3,), math.exp(-(d**2) / (2 * 0.3**2)))
        torch.testing.assert_close(r, expected, atol=1e-6, rtol=0)
    # The unrewarded centres are >= 2 * 2 sin(22.5 deg) = 1.53 from a rewarded one.
    others = [k for k in range(8) if k not in FAVOURED]
    assert reward(MEANS[others]).max() < math.exp(-(1.53**2) / (2 * 0.3**2))
    # on_data_fraction: the share of points within 3 MODE_STD = 0.3 of ANY centre.
    m = MEANS.float()
    radial = m / m.norm(dim=1, keepdim=True)
    assert on_data_fraction(m) == on_data_fraction(m + 0.29 * radial) == 1.0
    assert on_data_fraction(m + 0.31 * radial) == 0.0
    assert on_data_fraction(torch.cat([m[:3], torch.zeros(1, 2)])) == 0.75
    assert on_data_fraction(m + 0.5 * radial, radius=0.6) == 1.0


def test_rollout_records_the_steps_it_scores():
    torch.manual_seed(0)
    model = VelocityMLP(hidden=16)
    n, N, a = 6, 5, 0.5
    run = lambda: rollout(model, n, N, a, torch.Generator().manual_seed(1))
    states, nexts, logps, ts, x0 = run()
    assert states.shape == nexts.shape == (n, N - 1, 2) and logps.shape == (n, N - 1)
    assert torch.equal(ts, time_grid(N))
    assert not (states.requires_grad or nexts.requires_grad or logps.requires_grad)
    # Seeded: the same generator seed gives the same trajectories.
    assert all(torch.equal(u, w) for u, w in zip(run(), (states, nexts, logps, ts, x0)))
    # One chain: each step starts where the previous one ended; the last end is x0.
    assert torch.equal(states[:, 1:], nexts[:, :-1]) and torch.equal(x0, nexts[:, -1])
    with torch.no_grad():
        # The first draw is the noise x1 at t = 1, and the first step from there is a
        # plain Euler step (sigma_t is infinite at t = 1).
        x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
        euler = x1 + model(x1, ts[0].expand(n)) * (ts[1] - ts[0])
        torch.testing.assert_close(states[:, 0], euler, atol=1e-6, rtol=0)
        # Each recorded log-prob is the density of the recorded step under the SDE
        # step with this noise level: the ratio starts at exactly 1 in the update.
        for k in range(N - 1):
            x, t, t_next = states[:, k], ts[k + 1], ts[k + 2]
            _, lp, _, _ = sde_step_with_logprob(
                model(x, t.expand(n)),
                x,
                t,
                t_next,
                noise_level=a,
                prev_sample=nexts[:, k],
            )
            torch.testing.assert_close(logps[:, k], lp, atol=1e-5, rtol=1e-6)


def test_flow_grpo_loss_is_the_per_step_objective():
    torch.manual_seed(0)
    ref = VelocityMLP(hidden=16).requires_grad_(False)
    policy = copy.deepcopy(ref).requires_grad_(True)
    B, N, a, eps, beta = 8, 5, 0.5, 0.05, 0.3
    g = torch.Generator().manual_seed(2)
    states, nexts, old, ts, _ = rollout(policy, B, N, a, g)
    adv = torch.randn(B, generator=g)
    kw = dict(noise_level=a, clip_eps=eps, beta=beta)

    def per_step(k):  # the policy's and the reference's Gaussian step k, computed alone
        x, t, t_next = states[:, k], ts[k + 1], ts[k + 2]
        step = lambda m, **o: sde_step_with_logprob(
            m(x, t.expand(B)), x, t, t_next, noise_level=a, **o
        )
        _, lp, mean, std = step(policy, prev_sample=nexts[:, k])
        _, _, ref_mean, _ = step(ref)
        return lp, step_kl(mean, ref_mean, std, t, t_next)

    # At the start of an update (policy = old = reference) every ratio is 1 and the
    # KL is 0: the loss is -mean(A), and its gradient is the plain policy gradient
    # -mean over trajectories and steps of A grad log pi(step).
    loss, kl = flow_grpo_loss(policy, ref, states, nexts, old, adv, ts, **kw)
    torch.testing.assert_close(loss, -adv.mean(), atol=1e-6, rtol=0)
    assert kl == 0.0
    grads = torch.autograd.grad(loss, list(policy.parameters()))
    pg = -sum((adv * per_step(k)[0]).mean() for k in range(N - 1)) / (N - 1)
    for u, w in zip(grads, torch.autograd.grad(pg, list(policy.parameters()))):
        torch.testing.assert_close(u, w, atol=1e-6, rtol=1e-4)
    # After the policy moved: the mean over steps and trajectories of the clipped
    # surrogate (this eps) and beta times the closed-form KL of each step.
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        loss, kl = flow_grpo_loss(policy, ref, states, nexts, old, adv, ts, **kw)
        lps, kls = zip(*(per_step(k) for k in range(N - 1)))
        lps, kls = torch.stack(lps, 1), torch.stack(kls, 1)  # (B, N - 1)
        surrogate = clipped_surrogate(lps, old, adv, eps)
        assert (surrogate != (lps - old).exp() * adv[:, None]).any()  # clipping acts
        torch.testing.assert_close(
            loss, (-surrogate + beta * kls).mean(), atol=1e-6, rtol=1e-5
        )
        assert abs(kl - kls.mean().item()) < 1e-5 * kls.mean().item()


def test_train_flow_grpo_updates_a_copy_and_keeps_the_reference():
    torch.manual_seed(0)
    ref = VelocityMLP(hidden=16).requires_grad_(False)
    start = [p.clone() for p in ref.parameters()]
    run = lambda: train_flow_grpo(
        ref,
        iterations=3,
        num_groups=2,
        group_size=4,
        train_steps=4,
        inner_epochs=1,
        seed=0,
    )
    policy, history, seconds = run()
    assert policy is not ref and not policy.training and seconds >= 0
    assert all(torch.equal(p, q) for p, q in zip(ref.parameters(), start))  # frozen
    assert not all(torch.equal(p, q) for p, q in zip(policy.parameters(), start))
    assert len(history["rollout_reward"]) == len(history["kl"]) == 3
    # The first update starts at the reference (KL 0); later ones have moved away.
    assert history["kl"][0] == 0.0 < history["kl"][-1]
    # Seeded: the same call gives the same policy.
    policy2, history2, _ = run()
    assert history2 == history
    assert all(
        torch.equal(p, q) for p, q in zip(policy2.parameters(), policy.parameters())
    )


def test_evaluate_scores_seeded_ode_samples():
    torch.manual_seed(0)
    model = VelocityMLP(hidden=16)
    out = evaluate(model, n=300, num_steps=7, seed=5)
    x1 = torch.randn(300, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out["samples"], euler_sample(model, x1, 7))
    assert out["reward"] == reward(out["samples"]).mean().item()
    assert out["on_data"] == on_data_fraction(out["samples"])


SEEDS = (0, 1, 2)  # each GRPO run must pass on its own


@functools.lru_cache(maxsize=1)
def _reference(pid: int):
    """The pretrained 8-Gaussians model, trained once per process (pid: the caller's
    process id, so that a forked process, as in mutation testing, trains its own)."""
    from snippets.flow_matching.toy2d import pretrained_toy_model

    return pretrained_toy_model()[0]


@functools.cache
def _before_after(seed: int, pid: int, beta: float = 0.1):
    """One GRPO run, shared by the two tests below (pid: as in _reference)."""
    ref = _reference(pid)
    policy, history, seconds = train_flow_grpo(ref, seed=seed, beta=beta)
    return evaluate(ref), evaluate(policy), seconds


def test_flow_grpo_raises_reward_and_stays_on_data(beta=0.1, seeds=SEEDS):
    for seed in seeds:
        before, after, seconds = _before_after(seed, os.getpid(), beta)
        assert seconds < 30, f"seed {seed}: GRPO took {seconds:.1f} CPU s"
        gain = after["reward"] - before["reward"]
        assert gain > 0.3, (seed, before["reward"], after["reward"])
        assert after["on_data"] > 0.9, (seed, after["on_data"])


def test_qualifies_grpo_keeps_the_data_distribution():
    unrewarded = torch.tensor([2, 3, 4, 5, 6])
    for seed in SEEDS:
        before, after, _ = _before_after(seed, os.getpid())
        x = after["samples"].double()
        nearest = ((x[:, None, :] - MEANS) ** 2).sum(-1).argmin(1)
        # Holds: the samples stay on the support of the data (near a mode), as many as
        # before or more.
        assert after["on_data"] >= before["on_data"], seed
        # Does not hold: the shape. Before, each of the 8 modes holds 1/8 of the
        # samples; after, the unrewarded modes hold under 1 % together, and within the
        # rewarded modes the spread shrinks well below the data's MODE_STD = 0.1.
        assert (nearest[:, None] == unrewarded).any(1).double().mean() < 0.01, seed
        within = torch.stack(
            [(x[nearest == k] - MEANS[k]).std(0).mean() for k in FAVOURED]
        )
        assert (within < 0.6 * MODE_STD).all(), f"seed {seed}: within-mode std {within}"
