"""Toy GRPO: a small policy learns to add two digits from a verifiable 0/1 reward,
against a frozen reference (DeepSeekMath, arXiv:2402.03300, Algorithm 1, outcome
supervision).

Prompt q = (a, b), a, b in 0..9, one-hot encoded; completion o = one answer token in
0..18; reward 1 if o == a + b else 0. Chance level is 1/19. One completion token keeps
the run in seconds; grpo_loss handles longer completions through its mask unchanged.

Run: python -m snippets.grpo.toy
"""

import copy
import functools
import math
import time

# --8<-- [start:task]
import torch


def encode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Prompts (a, b), each (N,) long in 0..9 -> (N, 20) one-hot features."""
    one_hot = torch.nn.functional.one_hot
    return torch.cat([one_hot(a, 10), one_hot(b, 10)], 1).float()


def reward_fn(a, b, answer):
    """Verifiable reward: 1.0 if the answer token equals a + b, else 0.0. All (N,)."""
    return (answer == a + b).float()


def make_policy(seed=0):
    """MLP 20 -> 128 -> 19 logits; the last layer starts near 0, so pi_ref is near
    uniform."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(20, 128), torch.nn.ReLU(), torch.nn.Linear(128, 19)
    )
    with torch.no_grad():
        net[2].weight.mul_(0.01)
        net[2].bias.zero_()
    return net


# --8<-- [end:task]


# --8<-- [start:grpo_step]
import torch

from snippets.grpo.advantages import group_advantages
from snippets.grpo.loss import grpo_loss


def grpo_step(
    policy, ref_policy, opt, a, b, G, generator, *, mu=2, clip_eps=0.2, beta=0.04
):
    """One GRPO iteration (Algorithm 1, arXiv:2402.03300) on prompts a, b: (P,).
    Sample G answers per prompt from pi_old, score them, compute group advantages,
    then take mu gradient steps on grpo_loss with pi_old and pi_ref fixed.
    Returns the mean reward of the batch."""
    x = encode(a, b)
    with torch.no_grad():
        old_logp_all = torch.log_softmax(policy(x), -1)  # pi_old = policy before update
        ref_logp_all = torch.log_softmax(ref_policy(x), -1)
    answers = torch.multinomial(
        old_logp_all.exp(), G, replacement=True, generator=generator
    )  # (P, G)
    rewards = reward_fn(a.unsqueeze(1), b.unsqueeze(1), answers)  # (P, G)
    adv = group_advantages(rewards).flatten()  # (P*G,), Sec. 4.1.2
    # Each completion is one token: sequences of length 1, mask of ones.
    old_logps = old_logp_all.gather(1, answers).reshape(-1, 1)
    ref_logps = ref_logp_all.gather(1, answers).reshape(-1, 1)
    mask = torch.ones_like(old_logps)
    for _ in range(mu):
        logps = torch.log_softmax(policy(x), -1).gather(1, answers).reshape(-1, 1)
        loss = grpo_loss(
            logps, old_logps, ref_logps, adv, mask, clip_eps=clip_eps, beta=beta
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rewards.mean().item()


# --8<-- [end:grpo_step]


# --8<-- [start:evaluate]
import torch


def evaluate(policy, ref_policy):
    """Over all 100 prompts: expected reward (probability of the right answer, i.e.
    sampled accuracy), greedy accuracy, and the exact mean KL(pi || pi_ref)."""
    a, b = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    a, b = a.flatten(), b.flatten()
    x = encode(a, b)
    with torch.no_grad():
        logp = torch.log_softmax(policy(x), -1)
        ref_logp = torch.log_softmax(ref_policy(x), -1)
    p_right = logp.exp()[torch.arange(100), a + b]
    greedy = (logp.argmax(-1) == a + b).float().mean()
    kl = (logp.exp() * (logp - ref_logp)).sum(-1).mean()
    return p_right.mean().item(), greedy.item(), kl.item()


# --8<-- [end:evaluate]


# --8<-- [start:fixed_point]
import math

from snippets.grpo.baseline import grpo_prompt_weight


def plateau(beta, G, kl="k3_loss", std=True, p_ref=1 / 19, K=19):
    """Where the expected GRPO update vanishes for one prompt (free logits, uniform
    pi_ref): the right answer's probability q and KL(pi || pi_ref) there.
    Reward term on the right answer's logit: w q (1 - q), with w = grpo_prompt_weight
    (std=True) or (G-1)/G (group mean only). KL term: k3 in the loss pulls with
    grad KL(pi_ref || pi) = q - p_ref; a KL in the reward with
    grad KL(pi || pi_ref) = q (log(q / p_ref) - KL). Solved by bisection."""

    def kl_to_ref(q):  # wrong answers share 1 - q evenly at the fixed point
        return q * math.log(q / p_ref) + (1 - q) * math.log((1 - q) / (K - 1) / p_ref)

    def net_push(q):  # reward term minus KL term; > 0 while q still rises
        w = grpo_prompt_weight(q, G) if std else (G - 1) / G
        if kl == "k3_loss":
            pull = q - p_ref
        else:
            pull = q * (math.log(q / p_ref) - kl_to_ref(q))
        return w * q * (1 - q) - beta * pull

    lo, hi = p_ref, 1 - 1e-12  # net_push(p_ref) = w p_ref (1 - p_ref) > 0 > net_push(1)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if net_push(mid) > 0 else (lo, mid)
    return lo, kl_to_ref(lo)


# --8<-- [end:fixed_point]


def experiment(steps=300, prompts_per_step=32, G=16, lr=5e-3, beta=0.04, seed=0):
    """The page's experiment: per-step history and wall time."""
    t0 = time.perf_counter()
    policy = make_policy(seed)
    ref_policy = copy.deepcopy(policy).requires_grad_(False)  # frozen reference
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    hist = {
        "step": [],
        "batch_reward": [],
        "expected_reward": [],
        "greedy_acc": [],
        "kl": [],
    }
    for step in range(steps + 1):
        r, acc, kl = evaluate(policy, ref_policy)
        hist["step"].append(step)
        hist["expected_reward"].append(r)
        hist["greedy_acc"].append(acc)
        hist["kl"].append(kl)
        if step == steps:
            break
        a = torch.randint(0, 10, (prompts_per_step,), generator=g)
        b = torch.randint(0, 10, (prompts_per_step,), generator=g)
        hist["batch_reward"].append(
            grpo_step(policy, ref_policy, opt, a, b, G, g, beta=beta)
        )
    hist["seconds"] = time.perf_counter() - t0
    return hist


# One run per setting, shared by the tests and the notebook.
train = functools.lru_cache(maxsize=None)(experiment)


def setup_module():
    """pytest calls this before the module's tests: every test session trains anew.
    mutmut runs the suite once, then forks a process per mutant; a cache filled before
    the fork would hide the mutant."""
    train.cache_clear()


SEEDS = (0, 1, 2)


def test_plateau_is_where_the_expected_update_vanishes():
    # An independent check of plateau(): at the q it returns, put the categorical
    # (q, (1 - q)/18, ..., (1 - q)/18) on free logits and take the KL terms' gradient
    # on the right answer's logit by autograd; with the reward term w q (1 - q)
    # (w = grpo_prompt_weight with the std, (G - 1)/G with the group mean only) the
    # expected update must vanish. Bisection to 1e-16 in q: |push| < 1e-9 is slack.
    G, K = 16, 19
    ref = torch.full((K,), 1 / K, dtype=torch.float64)
    for beta in (0.3, 1.0, 10.0):
        for kl in ("k3_loss", "kl_reward"):
            for std in (True, False):
                q, kl_value = plateau(beta, G, kl, std)
                rest = torch.full((K - 1,), (1 - q) / (K - 1), dtype=torch.float64)
                theta = torch.cat([torch.tensor([q], dtype=torch.float64), rest]).log()
                theta.requires_grad_(True)
                logp = torch.log_softmax(theta, -1)
                kl_pi_ref = (logp.exp() * (logp - ref.log())).sum()
                assert abs(kl_pi_ref.item() - kl_value) < 1e-12, (beta, kl, std)
                # k3 in the loss pulls with grad KL(pi_ref || pi), a KL in the reward
                # with grad KL(pi || pi_ref)
                kl_ref_pi = (ref * (ref.log() - logp)).sum()
                penalty = kl_ref_pi if kl == "k3_loss" else kl_pi_ref
                (grad,) = torch.autograd.grad(penalty, theta)
                w = grpo_prompt_weight(q, G) if std else (G - 1) / G
                push = w * q * (1 - q) - beta * grad[0].item()
                assert abs(push) < 1e-9, (beta, kl, std, q, push)
                assert 1 / K < q < 1
    # The defaults are GRPO's own choice (k3 in the loss, std-normalised advantages),
    # and a larger beta holds the right answer's probability closer to pi_ref.
    assert plateau(0.3, G) == plateau(0.3, G, "k3_loss", True)
    qs = [plateau(beta, G)[0] for beta in (0.3, 1.0, 3.0, 10.0)]
    assert all(a > b for a, b in zip(qs, qs[1:])), qs


def test_grpo_learns_digit_sum_from_chance(overrides=()):
    # overrides: (name, value) pairs for experiment(), none for the page's runs.
    for seed in SEEDS:
        h = train(seed=seed, **dict(overrides))
        # pi_ref is uniform up to logits of order 0.01: chance is 1/19 within 1%
        start, end = h["expected_reward"][0], h["expected_reward"][-1]
        assert abs(start - 1 / 19) < 0.01 / 19, f"seed {seed}: start {start:.4f}"
        assert h["greedy_acc"][-1] > 0.9, f"seed {seed}: greedy {h['greedy_acc'][-1]}"
        assert end > 0.9, f"seed {seed}: sampled accuracy {end:.3f}"
        assert h["kl"][0] == 0.0 and h["kl"][-1] > 0.5, "the policy must leave pi_ref"


def test_beta_plateau_is_the_k3_and_std_fixed_point(
    predicted=("k3_loss", True), run_beta=0.3, steps=300
):
    # beta = 0.3: after 300 iterations the run sits on a plateau. Four hypotheses for
    # where it should stop (KL gradient x advantage normalisation) predict very
    # different right-answer probabilities q; the run must be nearer to the one GRPO
    # actually implements (k3 in the loss, std-normalised advantages) than to any
    # other: within half the distance to the nearest alternative, and on each of its
    # last 100 iterations (a plateau, not a run passing the value on its way up).
    # predicted: the (KL placement, std) hypothesis the run is claimed to follow;
    # run_beta, steps: the run examined (the page's: beta 0.3, 300 iterations).
    beta, G = 0.3, 16
    hypotheses = {
        (kl, std): plateau(beta, G, kl, std)
        for kl in ("k3_loss", "kl_reward")
        for std in (True, False)
    }
    q_grpo, kl_grpo = hypotheses[predicted]
    others = [v for k, v in hypotheses.items() if k != predicted]
    q_margin = min(abs(q - q_grpo) for q, _ in others) / 2
    kl_margin = min(abs(k - kl_grpo) for _, k in others) / 2
    for seed in SEEDS:
        h = train(beta=run_beta, seed=seed, steps=steps)
        for t in range(steps - 100, steps + 1):
            q, kl = h["expected_reward"][t], h["kl"][t]
            assert abs(q - q_grpo) < q_margin, (seed, t, q, hypotheses)
            assert abs(kl - kl_grpo) < kl_margin, (seed, t, kl, hypotheses)
        # A larger beta keeps probability on the other answers (greedy stays right).
        assert q < train(seed=seed)["expected_reward"][-1]
        assert kl < train(seed=seed)["kl"][-1]
        assert h["greedy_acc"][-1] > 0.9


if __name__ == "__main__":
    for beta in (0.04, 0.3):
        for s in SEEDS:
            h = train(beta=beta, seed=s)
            print(
                f"beta={beta} seed={s}: {h['seconds']:.1f}s; expected reward "
                f"{h['expected_reward'][0]:.4f} -> {h['expected_reward'][-1]:.3f}; "
                f"greedy {h['greedy_acc'][0]:.2f} -> {h['greedy_acc'][-1]:.2f}; "
                f"KL {h['kl'][-1]:.3f}"
            )
        for kl in ("k3_loss", "kl_reward"):
            for std in (True, False):
                q, k = plateau(beta, 16, kl, std)
                print(f"  fixed point {kl}, std={std}: q={q:.4f}, KL={k:.3f}")
