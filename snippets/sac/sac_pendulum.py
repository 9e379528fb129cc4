"""A minimal Soft Actor-Critic on gymnasium's Pendulum-v1, in one file (CleanRL style).

    python -m snippets.sac.sac_pendulum --seed 1 --total-steps 30000

The settings are one dataclass, Args, parsed from the command line by tyro (`--help`
lists them). The pieces come from the other modules of this topic: tanh_normal (the
policy's distribution), soft_td_target and double_q_loss (the critic), soft_update (the
target critics). Algorithm 1 of arXiv:1812.05905, with automatic temperature tuning
(derived in Sec. 5, Eq. (18) in Sec. 6). The committed runs, their provenance and the
command that trains and records one: snippets/sac/pendulum_data.py (it imports this
module; this module imports nothing from it).
"""

# --8<-- [start:args]
import dataclasses
from typing import Literal


@dataclasses.dataclass
class Args:
    """The settings of one run; each is a flag (total_steps: --total-steps)."""

    seed: int = 1
    """seeds torch (networks, policy draws), the warm-up actions and replay sampling,
    and the first reset; evaluation episodes use 10_000 * seed + episode"""
    total_steps: int = 20000
    """environment steps; one update per step after learning_starts"""
    learning_starts: int = 1000
    """steps of uniform random actions that fill the buffer before the first update"""
    batch_size: int = 256
    """transitions per update, drawn uniformly from the replay buffer"""
    lr: float = 1e-3
    """Adam's learning rate, the same for the actor, the critics and log alpha"""
    gamma: float = 0.99
    """discount factor of the soft Bellman target"""
    tau: float = 0.005
    """Polyak rate of the target critics; 1.0 = no target network"""
    backup: Literal["min", "mean", "doubleq"] = "min"
    """how the target critics' values combine in the target (critic.q_backup)"""
    target_entropy: float | None = None
    """entropy target of the temperature loss, Eq. (18); None: -dim(A)"""
    hidden: int = 128
    """width of the two hidden layers of the actor and of each critic"""
    eval_every: int = 1000
    """evaluate the deterministic policy every eval_every steps, and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation"""


def eval_steps(args):
    """The steps at which train(args) evaluates: every eval_every, and the last."""
    every, total = args.eval_every, args.total_steps
    return list(range(every, total + 1, every)) + ([total] if total % every else [])


# --8<-- [end:args]


# --8<-- [start:networks]
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from snippets.sac.distributions import tanh_normal

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """obs (batch, obs_dim) -> tanh-Gaussian over actions (batch, act_dim), in (-1, 1)
    (normalised: the environment's action is action_scale * a)."""

    def __init__(self, obs_dim, act_dim, hidden=128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * act_dim),
        )

    def forward(self, obs):
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        # squash log_std smoothly into [LOG_STD_MIN, LOG_STD_MAX]
        span = LOG_STD_MAX - LOG_STD_MIN
        log_std = LOG_STD_MIN + 0.5 * span * (torch.tanh(log_std) + 1)
        return tanh_normal(mean, log_std.exp())  # a = tanh(u), u ~ N(mean, std^2)

    def act_deterministic(self, obs):
        mean, _ = self.net(obs).chunk(2, dim=-1)
        return torch.tanh(mean)  # evaluation: the mode of u, squashed


class EnsembleLinear(nn.Module):
    """num_critics independent linear layers applied in one batched matmul.
    x: (num_critics, batch, in) -> (num_critics, batch, out)."""

    def __init__(self, num_critics, n_in, n_out):
        super().__init__()
        bound = 1 / math.sqrt(n_in)  # same init range as nn.Linear
        w = torch.empty(num_critics, n_in, n_out).uniform_(-bound, bound)
        self.weight = nn.Parameter(w)
        b = torch.empty(num_critics, 1, n_out).uniform_(-bound, bound)
        self.bias = nn.Parameter(b)

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)


class Critics(nn.Module):
    """Q_i(s, a), i = 1..num_critics.
    obs (batch, obs_dim), act (batch, act_dim) -> (num_critics, batch)."""

    def __init__(self, obs_dim, act_dim, num_critics=2, hidden=128):
        super().__init__()
        self.num_critics = num_critics
        self.l1 = EnsembleLinear(num_critics, obs_dim + act_dim, hidden)
        self.l2 = EnsembleLinear(num_critics, hidden, hidden)
        self.l3 = EnsembleLinear(num_critics, hidden, 1)

    def forward(self, obs, act):
        x = torch.cat([obs, act], dim=-1).expand(self.num_critics, -1, -1)
        return self.l3(F.relu(self.l2(F.relu(self.l1(x))))).squeeze(-1)


# --8<-- [end:networks]


# --8<-- [start:replay_buffer]
import torch


class ReplayBuffer:
    """Fixed-size FIFO of transitions in preallocated tensors; uniform sampling."""

    def __init__(self, capacity, obs_dim, act_dim):
        self.obs = torch.zeros(capacity, obs_dim)
        self.act = torch.zeros(capacity, act_dim)
        self.rew = torch.zeros(capacity)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.done = torch.zeros(capacity)  # 1.0 only for termination, not truncation
        self.capacity, self.size, self.ptr = capacity, 0, 0

    def add(self, obs, act, rew, next_obs, done):
        i = self.ptr
        self.obs[i], self.act[i], self.next_obs[i] = obs, act, next_obs
        self.rew[i], self.done[i] = rew, done
        self.ptr = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch, generator):
        """-> obs (B, obs_dim), act (B, act_dim), rew (B,), next_obs (B, obs_dim),
        done (B,)."""
        idx = torch.randint(0, self.size, (batch,), generator=generator)
        return (
            self.obs[idx],
            self.act[idx],
            self.rew[idx],
            self.next_obs[idx],
            self.done[idx],
        )


# --8<-- [end:replay_buffer]


# --8<-- [start:update]
import torch

from snippets.sac.critic import double_q_loss, soft_td_target
from snippets.sac.target import soft_update


def sac_update(batch, actor, critics, target_critics, log_alpha, opts, args: "Args"):
    """One gradient step on the critics, the actor and the temperature.
    batch: ReplayBuffer.sample's tuple; args: gamma, tau, backup, target_entropy.
    Returns scalar logs."""
    obs, act, rew, next_obs, done = batch
    alpha = log_alpha.exp().detach()
    h_target = args.target_entropy
    if h_target is None:
        h_target = -float(act.shape[-1])  # H_target = -dim(A)

    # Critic: y = r + gamma (1 - d) (backup(Q'(s', a')) - alpha log pi(a'|s')),
    # a' ~ pi(.|s')                                     Eqs. (2)-(3), arXiv:1812.05905
    with torch.no_grad():
        next_dist = actor(next_obs)
        next_act = next_dist.sample()
        next_qs = target_critics(next_obs, next_act)  # (num_critics, B)
        y = soft_td_target(
            rew,
            done,
            next_qs,
            next_dist.log_prob(next_act),
            discount=args.gamma,
            temperature=alpha,
            strategy=args.backup,
        )
    critic_loss = double_q_loss(critics(obs, act), y)  # Eq. (5)
    opts["critic"].zero_grad(set_to_none=True)
    critic_loss.backward()
    opts["critic"].step()

    # Actor: J_pi = E_{s~D, eps}[alpha log pi(f(eps;s)|s) - min_i Q_i(s, f(eps;s))]
    #                                                   Eqs. (7), (9), arXiv:1812.05905
    critics.requires_grad_(False)  # the gradient flows through the action only
    dist = actor(obs)
    new_act = dist.rsample()  # reparameterised a~
    log_prob = dist.log_prob(new_act)  # (B,)
    q_new = critics(obs, new_act).min(dim=0).values  # (B,)
    actor_loss = (alpha * log_prob - q_new).mean()
    opts["actor"].zero_grad(set_to_none=True)
    actor_loss.backward()
    opts["actor"].step()
    critics.requires_grad_(True)

    # Temperature: J(alpha) = E[-alpha log pi(a|s) - alpha H_target]
    #                                                   Eq. (18), arXiv:1812.05905
    # optimised in log alpha (softlearning's form):
    # d/dlog_alpha = -(log pi + H_target), the same sign as dJ/dalpha
    alpha_loss = -(log_alpha * (log_prob.detach() + h_target)).mean()
    opts["alpha"].zero_grad(set_to_none=True)
    alpha_loss.backward()
    opts["alpha"].step()

    # theta' <- tau theta + (1 - tau) theta'            Algorithm 1, arXiv:1812.05905
    soft_update(target_critics, critics, args.tau)
    return {
        "critic_loss": critic_loss.item(),
        "actor_loss": actor_loss.item(),
        "alpha": alpha.item(),
        "entropy": -log_prob.mean().item(),
    }


# --8<-- [end:update]


# --8<-- [start:train]
import copy
import time

import gymnasium as gym
import torch
import tyro


def evaluate(actor, env, episodes, seed, action_scale):
    """Mean undiscounted return of the deterministic policy tanh(mean)."""
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            with torch.no_grad():
                obs_t = torch.as_tensor(obs, dtype=torch.float32)[None]
                a = actor.act_deterministic(obs_t)[0]
            obs, r, term, trunc, _ = env.step((a * action_scale).numpy())
            total += r
            done = term or trunc
    return total / episodes


def train(args: "Args", log=print):
    """Train SAC on Pendulum-v1 with the settings args (an Args).
    Returns {"curve": [(step, return)], "logs", "seconds", "log_alpha", "buffer"}."""
    torch.manual_seed(args.seed)
    env, eval_env = gym.make("Pendulum-v1"), gym.make("Pendulum-v1")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    # env action = action_scale * a, a in (-1, 1)
    action_scale = float(env.action_space.high[0])

    actor = Actor(obs_dim, act_dim, args.hidden)
    critics = Critics(obs_dim, act_dim, hidden=args.hidden)
    target_critics = copy.deepcopy(critics).requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)  # alpha = 1 at the start
    opts = {
        "actor": torch.optim.Adam(actor.parameters(), lr=args.lr),
        "critic": torch.optim.Adam(critics.parameters(), lr=args.lr),
        "alpha": torch.optim.Adam([log_alpha], lr=args.lr),
    }
    buffer = ReplayBuffer(args.total_steps, obs_dim, act_dim)
    gen = torch.Generator().manual_seed(args.seed)

    obs, _ = env.reset(seed=args.seed)
    curve, logs, evals, start = [], [], set(eval_steps(args)), time.time()
    for step in range(1, args.total_steps + 1):
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        if step <= args.learning_starts:  # uniform random actions fill the buffer first
            act = torch.rand(act_dim, generator=gen) * 2 - 1
        else:
            with torch.no_grad():
                act = actor(obs_t[None]).sample()[0]
        next_obs, rew, term, trunc, _ = env.step((act * action_scale).numpy())
        next_t = torch.as_tensor(next_obs, dtype=torch.float32)
        buffer.add(obs_t, act, float(rew), next_t, float(term))  # done = termination
        obs = next_obs
        if term or trunc:
            obs, _ = env.reset()

        if step > args.learning_starts:
            logs.append(
                sac_update(
                    buffer.sample(args.batch_size, gen),
                    actor,
                    critics,
                    target_critics,
                    log_alpha,
                    opts,
                    args,
                )
            )
        if step in evals:
            ret = evaluate(
                actor,
                eval_env,
                args.eval_episodes,
                seed=10_000 * args.seed,
                action_scale=action_scale,
            )
            curve.append((step, ret))
            last = logs[-1] if logs else {}
            log(
                f"step {step:6d}  eval_return {ret:8.1f}  "
                f"alpha {last.get('alpha', 1.0):.3f}  "
                f"entropy {last.get('entropy', float('nan')):.2f}  "
                f"{time.time() - start:5.0f}s"
            )
    return {
        "curve": curve,
        "logs": logs,
        "seconds": time.time() - start,
        "log_alpha": log_alpha.item(),
        "buffer": buffer,
    }


def main(argv=None):
    """The command line: flags -> Args (tyro; --help lists them) -> train."""
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    out = train(args)
    print(
        f"seed {args.seed}: final eval return {out['curve'][-1][1]:.1f} after "
        f"{args.total_steps} steps, {out['seconds']:.0f}s wall time"
    )
    return args, out


if __name__ == "__main__":
    torch.set_num_threads(1)  # once, where the process starts: the tensors are tiny
    main()
# --8<-- [end:train]


import numpy as np


class _TruncationAsTermination(gym.Wrapper):
    """Pendulum whose 200-step time limit is reported as termination."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated or truncated, truncated, info


def train_storing_truncation_as_termination(args, log=print):
    """The counterfactual of the smoke claim: the common slip of storing the time
    limit as `done` (the target then drops the value of a state that goes on)."""
    real = gym.make
    gym.make = lambda *a, **k: _TruncationAsTermination(real(*a, **k))
    try:
        return train(args, log)
    finally:
        gym.make = real


class _ResetObservationAtTruncation(gym.Wrapper):
    """Pendulum that answers the last step of an episode with a fresh reset
    observation (the autoreset of older vector envs) instead of the true successor."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            obs, _ = self.env.reset()
        return obs, reward, terminated, truncated, info


def train_storing_reset_obs_at_truncation(args, log=print):
    """The counterfactual: the transition that ends an episode stores a reset
    observation as next_obs (train() then resets once more for the next episode)."""
    real = gym.make
    gym.make = lambda *a, **k: _ResetObservationAtTruncation(real(*a, **k))
    try:
        return train(args, log)
    finally:
        gym.make = real


def train_ignoring_target_entropy(args, log=print):
    """The counterfactual: the temperature update ignores the configured entropy
    target and always uses -dim(A) (a setting that is not passed through)."""
    return train(dataclasses.replace(args, target_entropy=None), log)


def test_smoke_run_shapes_finite_losses_and_temperature_direction(run=train):
    """A few hundred steps: shapes right, losses finite, the buffer's done flag is
    termination only, alpha moves toward the entropy target (Eq. (18), 1812.05905)."""
    import math as _math

    actor, critics = Actor(3, 1), Critics(3, 1)
    obs = torch.randn(5, 3)
    a = actor(obs).rsample()
    assert a.shape == (5, 1) and actor(obs).log_prob(a).shape == (5,)
    assert critics(obs, a).shape == (2, 5)

    out = run(
        Args(
            seed=0,
            total_steps=300,
            learning_starts=100,
            batch_size=64,
            eval_every=300,
            eval_episodes=1,
        ),
        log=lambda *_: None,
    )
    assert len(out["logs"]) == 200 and len(out["curve"]) == 1
    for k in ("critic_loss", "actor_loss", "alpha", "entropy"):
        assert all(_math.isfinite(l[k]) for l in out["logs"]), k
    # Pendulum-v1 is truncated at 200 steps and never terminates: the episode that
    # ended at step 200 must not be stored as terminal (its value is not 0 there).
    buf = out["buffer"]
    assert buf.size == 300 and buf.done[:300].sum() == 0
    # Step 200's next_obs is the true successor, not a reset observation: obs[200]
    # (after reset) differs from next_obs[199], and Pendulum-v1 itself, put in the
    # state of obs[199] and given act[199], answers next_obs[199] (float32 storage:
    # 1e-5 covers the rounding of the angle recovered from cos, sin).
    assert not torch.equal(buf.next_obs[199], buf.obs[200])
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    cos, sin, thdot = buf.obs[199].double().tolist()
    env.unwrapped.state = np.array([_math.atan2(sin, cos), thdot])
    successor, *_ = env.step((buf.act[199] * 2.0).numpy())
    torch.testing.assert_close(
        buf.next_obs[199], torch.as_tensor(successor), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(buf.next_obs[198], buf.obs[199], atol=0, rtol=0)
    # Entropy is above the target -1 at the start, so alpha must shrink.
    assert out["logs"][0]["entropy"] > -1.0 and out["log_alpha"] < -0.05
    # An unreachable target (H of any law on (-1, 1) is at most log 2 < 5) makes
    # alpha grow instead.
    up = run(
        Args(
            seed=0,
            total_steps=150,
            learning_starts=100,
            batch_size=64,
            eval_every=150,
            eval_episodes=1,
            target_entropy=5.0,
        ),
        log=lambda *_: None,
    )
    assert up["log_alpha"] > 0.02, up["log_alpha"]


def test_one_update_uses_target_critics_current_policy_and_soft_target():
    """sac_update, checked against the formulas with the same random draws: the
    critic target uses the TARGET critics at a' ~ the CURRENT actor at s', with
    -alpha log pi and (1 - done); the actor's loss uses the buffer's states with a
    fresh rsample and the updated critics; alpha and the target critics move as
    Eq. (18) and the Polyak update say."""
    torch.manual_seed(0)
    actor, critics = Actor(3, 1, hidden=16), Critics(3, 1, hidden=16)
    target = copy.deepcopy(critics).requires_grad_(False)
    with torch.no_grad():  # make the target critics differ from the online ones
        for p in target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    log_alpha = torch.tensor(-0.5, requires_grad=True)
    n = 32
    batch = (
        torch.randn(n, 3),
        torch.rand(n, 1) * 2 - 1,
        torch.randn(n),
        torch.randn(n, 3),
        (torch.arange(n) % 4 == 0).float(),
    )
    obs, act, rew, next_obs, done = batch
    args = Args(gamma=0.9, tau=0.1, backup="min", target_entropy=-1.0)
    opts = {
        "actor": torch.optim.Adam(actor.parameters(), lr=1e-3),
        "critic": torch.optim.Adam(critics.parameters(), lr=1e-3),
        "alpha": torch.optim.Adam([log_alpha], lr=1e-3),
    }
    actor0, critics0, target0 = (copy.deepcopy(m) for m in (actor, critics, target))
    log_alpha0, rng = log_alpha.item(), torch.get_rng_state()
    logs = sac_update(batch, actor, critics, target, log_alpha, opts, args)

    torch.set_rng_state(rng)  # replay the same draws by hand
    alpha = math.exp(log_alpha0)
    with torch.no_grad():
        d = actor0(next_obs)
        a2 = d.sample()
        soft_v = target0(next_obs, a2).min(0).values - alpha * d.log_prob(a2)
        y = rew + 0.9 * (1 - done) * soft_v  # Eq. (2)-(3)
        q = critics0(obs, act)
        expected_critic = ((q - y) ** 2).mean(1).sum()
        # The usual slips give other numbers: online critics in the target,
        # +alpha log pi, the mask written as done instead of 1 - done.
        slips = [
            rew
            + 0.9
            * (1 - done)
            * (critics0(next_obs, a2).min(0).values - alpha * d.log_prob(a2)),
            rew + 0.9 * (1 - done) * (soft_v + 2 * alpha * d.log_prob(a2)),
            rew + 0.9 * done * soft_v,
        ]
        new = actor0(obs).rsample()
        dist0 = actor0(obs)
        logp_new = dist0.log_prob(new)
        expected_actor = (alpha * logp_new - critics(obs, new).min(0).values).mean()
    # float32 sums of 32 terms: 1e-5 relative
    assert abs(logs["critic_loss"] - expected_critic.item()) < 1e-5 * expected_critic
    for y_slip in slips:
        wrong = ((q - y_slip) ** 2).mean(1).sum().item()
        assert abs(wrong - expected_critic.item()) > 1e-2 * expected_critic, wrong
    assert abs(logs["actor_loss"] - expected_actor.item()) < 1e-4
    # Temperature: one Adam step of size lr against the sign of the gradient
    # -(E[log pi] + H_target) (Eq. (18); Adam's first step is lr * sign).
    grad = -(logp_new.mean().item() + args.target_entropy)
    assert abs(log_alpha.item() - (log_alpha0 - 1e-3 * math.copysign(1, grad))) < 1e-6
    # Target critics: theta' <- tau theta + (1 - tau) theta' with the updated theta.
    params = zip(target.parameters(), target0.parameters(), critics.parameters())
    for t, t0, c in params:
        torch.testing.assert_close(t, 0.1 * c + 0.9 * t0, atol=1e-6, rtol=0)
    # The gradients left behind: the critics' are those of the critic loss alone (the
    # actor's loss reaches the actor through the action only), alpha's is exactly
    # -(E[log pi] + H_target) (Eq. (18)); the logged entropy is -E[log pi].
    critic_loss0 = ((critics0(obs, act) - y) ** 2).mean(1).sum()
    grads = torch.autograd.grad(critic_loss0, list(critics0.parameters()))
    for p, g in zip(critics.parameters(), grads):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)
    assert abs(log_alpha.grad.item() - grad) < 1e-6
    assert abs(logs["entropy"] + logp_new.mean().item()) < 1e-6
    assert abs(logs["alpha"] - alpha) < 1e-6  # float32


def test_networks_init_ranges_shapes_and_nonlinearity():
    torch.manual_seed(0)
    # EnsembleLinear starts like nn.Linear: weights and biases uniform on
    # +-1/sqrt(n_in), drawn independently for each critic.
    layer = EnsembleLinear(3, 64, 32)
    bound = 1 / math.sqrt(64)
    for p in (layer.weight, layer.bias):
        assert p.abs().max() <= bound
        assert p.max() > 0.9 * bound and p.min() < -0.9 * bound
    assert layer.bias.shape == (3, 1, 32)
    assert not torch.equal(layer.bias[0], layer.bias[1])
    # The actor works on any batch shape and any action dimension; its log std stays in
    # [LOG_STD_MIN, LOG_STD_MAX] even when the network's outputs are huge.
    actor = Actor(4, 3, hidden=16)
    obs = torch.randn(2, 5, 4)
    dist = actor(obs)
    a = dist.rsample()
    assert a.shape == (2, 5, 3) and dist.log_prob(a).shape == (2, 5)
    assert actor.act_deterministic(obs).shape == (2, 5, 3)
    with torch.no_grad():
        actor.net[-1].weight.mul_(1e3)
    std = actor(100 * torch.randn(64, 4)).base_dist.base_dist.scale
    assert std.min() >= math.exp(LOG_STD_MIN) * (1 - 1e-6)
    assert std.max() <= math.exp(LOG_STD_MAX) * (1 + 1e-6)
    # ReLU layers make the mean a nonlinear function of the observation (a linear
    # network would give f(2x) - 2 f(x) + f(0) = 0).
    x, zero = torch.randn(8, 4), torch.zeros(1, 4)
    with torch.no_grad():
        f = Actor(4, 1, hidden=16).net
        curvature = f(2 * x) - 2 * f(x) + f(zero)
    assert curvature.abs().max() > 1e-3


def test_replay_buffer_fills_wraps_and_samples_what_it_holds():
    buf = ReplayBuffer(capacity=4, obs_dim=1, act_dim=1)
    for i in range(3):
        buf.add(
            torch.tensor([float(i)]), torch.tensor([0.0]), float(i), torch.zeros(1), 0.0
        )
    assert buf.size == 3
    g = torch.Generator().manual_seed(0)
    obs, act, rew, next_obs, done = buf.sample(1000, g)
    assert obs.shape == (1000, 1) and rew.shape == (1000,) and done.shape == (1000,)
    # uniform over the stored rows only: every one of 0, 1, 2 and nothing else
    assert set(rew.tolist()) == {0.0, 1.0, 2.0} and torch.equal(obs[:, 0], rew)
    # a seeded generator gives the same batch again
    again = buf.sample(1000, torch.Generator().manual_seed(0))
    assert torch.equal(again[2], rew)
    for i in range(3, 6):  # FIFO: the oldest rows are overwritten first
        buf.add(
            torch.tensor([float(i)]), torch.tensor([0.0]), float(i), torch.zeros(1), 0.0
        )
    assert buf.size == 4 and buf.rew.tolist() == [4.0, 5.0, 2.0, 3.0]


class _StubEnv:
    """A stand-in for a gymnasium env: float64 observations, 3 steps per episode
    (truncated), reward = the action received + the step index; it records the reset
    seeds and the actions."""

    def __init__(self):
        self.seeds, self.actions, self.t = [], [], 0

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t = 0
        return np.full(3, 0.1 * seed, dtype=np.float64), {}

    def step(self, action):
        self.actions.append(float(action[0]))
        self.t += 1
        obs = np.full(3, 0.5 * self.t, dtype=np.float64)
        return obs, float(action[0]) + self.t, False, self.t == 3, {}


def test_evaluate_returns_the_mean_episode_return_of_the_scaled_mode():
    torch.manual_seed(0)
    actor, env = Actor(3, 1, hidden=16), _StubEnv()
    ret = evaluate(actor, env, episodes=2, seed=7, action_scale=2.0)
    assert env.seeds == [7, 8]  # episode ep is reset with seed + ep
    expected_actions, total = [], 0.0
    for seed in (7, 8):
        for t, x in enumerate((0.1 * seed, 0.5, 1.0), start=1):
            with torch.no_grad():
                a = actor.act_deterministic(torch.full((1, 3), x)).item()
            expected_actions.append(2.0 * a)
            total += 2.0 * a + t
    assert np.allclose(env.actions, expected_actions, atol=1e-6, rtol=0)
    assert abs(ret - total / 2) < 1e-5


def test_train_warm_up_replay_curve_and_progress_lines():
    """A run with one update (101 steps, 100 of warm-up), twice: it is reproducible,
    the warm-up actions are the seeded uniform draws, the buffer holds what Pendulum
    answered to action_scale * a, evaluations fall on eval_steps, the progress lines
    report the latest update, and one Adam step moves log alpha by exactly lr."""
    args = Args(
        seed=1,
        total_steps=101,
        learning_starts=100,
        batch_size=32,
        lr=1e-2,
        eval_every=50,
        eval_episodes=1,
    )
    lines = []
    out = train(args, log=lines.append)
    again = train(args, log=lambda *_: None)
    assert again["curve"] == out["curve"] and again["logs"] == out["logs"]
    assert [s for s, _ in out["curve"]] == eval_steps(args) == [50, 100, 101]
    buf = out["buffer"]
    gen = torch.Generator().manual_seed(1)
    warm = torch.stack([torch.rand(1, generator=gen) * 2 - 1 for _ in range(100)])
    torch.testing.assert_close(buf.act[:100], warm, atol=0, rtol=0)
    # Re-simulate Pendulum-v1 (max torque 2) from the same seed with the stored actions.
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=1)
    for i in range(101):
        assert torch.equal(buf.obs[i], torch.as_tensor(obs, dtype=torch.float32)), i
        obs, *_ = env.step((buf.act[i] * 2.0).numpy())
        assert torch.equal(buf.next_obs[i], torch.as_tensor(obs, dtype=torch.float32))
    # Progress lines: before the first update alpha is its initial 1 and the entropy
    # unknown; after it, the latest update's values.
    assert len(lines) == 3
    assert all("alpha 1.000  entropy nan" in line for line in lines[:2])
    last = out["logs"][-1]
    assert f"alpha {last['alpha']:.3f}  entropy {last['entropy']:.2f}" in lines[2]
    assert lines[2].startswith("step    101  eval_return ")
    assert f"{out['curve'][-1][1]:8.1f}" in lines[2]
    assert 0 <= int(lines[2].split()[-1].rstrip("s")) <= out["seconds"] + 1 < 600
    # Adam's first step: lr against the sign of -(E[log pi] + H_target), H_target = -1.
    step = math.copysign(1e-2, last["entropy"] - (-1.0))
    assert abs(out["log_alpha"] - (-step)) < 1e-8, out["log_alpha"]


def test_evaluations_every_eval_every_steps_and_at_the_end():
    for every, total in ((1000, 30_000), (50, 101), (50, 99), (3, 5), (7, 7)):
        got = eval_steps(Args(eval_every=every, total_steps=total))
        assert got[-1] == total and all(s <= total for s in got), (every, total, got)
        assert got[:-1] == list(range(every, total, every)), (every, total, got)


def test_command_line_flags_are_the_fields_of_args():
    """Every field of Args is a flag (underscores as dashes) with the field's default;
    a value outside a field's type or choices exits with code 2 (argparse's)."""
    import contextlib
    import io

    import pytest

    assert tyro.cli(Args, args=[]) == Args()
    given = {"--total-steps": "500", "--tau": "1.0", "--backup": "mean"}
    given |= {"--target-entropy": "-0.5", "--hidden": "64", "--seed": "3"}
    args = tyro.cli(Args, args=[w for kv in given.items() for w in kv])
    assert args == Args(
        seed=3, total_steps=500, tau=1.0, backup="mean", target_entropy=-0.5, hidden=64
    )
    flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(Args)}
    shown = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(shown):
        tyro.cli(Args, args=["--help"])
    assert all(flag in shown.getvalue() for flag in flags), shown.getvalue()
    for bad in (["--backup", "max"], ["--seed", "1.5"], ["--lr"], ["--tua", "1"]):
        with pytest.raises(SystemExit) as exit_:
            tyro.cli(Args, args=bad, console_outputs=False)
        assert exit_.value.code == 2, bad


def test_training_code_imports_nothing_from_the_runs_module():
    """One-way imports: pendulum_data (the committed runs) imports this module, never
    the other way round (the training code does not depend on its records)."""
    import ast
    import pathlib

    tree = ast.parse(pathlib.Path(__file__).read_text(encoding="utf-8"))
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    ours = {m for m in imported if m.startswith("snippets.")}
    pieces = {"distributions", "critic", "target"}  # the topic's building blocks
    assert ours == {f"snippets.sac.{m}" for m in pieces}, ours
