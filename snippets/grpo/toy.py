"""Toy GRPO: a small policy learns to add two digits from a verifiable 0/1 reward,
against a frozen reference (DeepSeekMath, arXiv:2402.03300, Algorithm 1, outcome supervision).

Prompt q = (a, b), a, b in 0..9, one-hot encoded; completion o = one answer token in 0..18;
reward 1 if o == a + b else 0. Chance level is 1/19. One completion token keeps the run
in seconds; grpo_loss handles longer completions through its mask unchanged.

Run: python -m snippets.grpo.toy
"""
import copy
import time

# --8<-- [start:task]
import torch


def encode(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Prompts (a, b), each (N,) long in 0..9 -> (N, 20) one-hot features."""
    return torch.cat([torch.nn.functional.one_hot(a, 10), torch.nn.functional.one_hot(b, 10)], 1).float()


def reward_fn(a, b, answer):
    """Verifiable reward: 1.0 if the answer token equals a + b, else 0.0. All (N,)."""
    return (answer == a + b).float()


def make_policy(seed=0):
    """MLP 20 -> 128 -> 19 logits; the last layer starts near 0, so pi_ref is near uniform."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(20, 128), torch.nn.ReLU(), torch.nn.Linear(128, 19))
    with torch.no_grad():
        net[2].weight.mul_(0.01)
        net[2].bias.zero_()
    return net
# --8<-- [end:task]


# --8<-- [start:grpo_step]
import torch
from snippets.grpo.advantages import group_advantages
from snippets.grpo.loss import grpo_loss


def grpo_step(policy, ref_policy, opt, a, b, G, generator, *, mu=2, clip_eps=0.2, beta=0.04):
    """One GRPO iteration (Algorithm 1, arXiv:2402.03300) on a batch of prompts a, b: (P,).
    Sample G answers per prompt from pi_old, score them, compute group advantages, then
    take mu gradient steps on grpo_loss with pi_old and pi_ref fixed. Returns mean reward."""
    x = encode(a, b)
    with torch.no_grad():
        old_logp_all = torch.log_softmax(policy(x), -1)  # pi_old = the policy before the update
        ref_logp_all = torch.log_softmax(ref_policy(x), -1)
    answers = torch.multinomial(old_logp_all.exp(), G, replacement=True, generator=generator)  # (P, G)
    rewards = reward_fn(a.unsqueeze(1), b.unsqueeze(1), answers)  # (P, G)
    adv = group_advantages(rewards).flatten()  # (P*G,), Sec. 4.1.2
    # Each completion is one token: sequences of length 1, mask of ones.
    old_logps = old_logp_all.gather(1, answers).reshape(-1, 1)
    ref_logps = ref_logp_all.gather(1, answers).reshape(-1, 1)
    mask = torch.ones_like(old_logps)
    for _ in range(mu):
        logps = torch.log_softmax(policy(x), -1).gather(1, answers).reshape(-1, 1)
        loss = grpo_loss(logps, old_logps, ref_logps, adv, mask, clip_eps=clip_eps, beta=beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rewards.mean().item()
# --8<-- [end:grpo_step]


# --8<-- [start:evaluate]
import torch


def evaluate(policy, ref_policy):
    """Over all 100 prompts: expected reward (probability of the right answer, i.e. sampled
    accuracy), greedy accuracy, and the exact mean KL(pi || pi_ref)."""
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


def train(steps=300, prompts_per_step=32, G=16, lr=5e-3, beta=0.04, seed=0):
    """The page's experiment. Returns per-step history and wall time."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    policy = make_policy(seed)
    ref_policy = copy.deepcopy(policy).requires_grad_(False)  # frozen reference
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    hist = {"step": [], "batch_reward": [], "expected_reward": [], "greedy_acc": [], "kl": []}
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
        hist["batch_reward"].append(grpo_step(policy, ref_policy, opt, a, b, G, g, beta=beta))
    hist["seconds"] = time.perf_counter() - t0
    return hist


def test_grpo_learns_digit_sum_from_chance():
    h = train()
    assert h["seconds"] < 30, f"took {h['seconds']:.1f}s"
    assert abs(h["expected_reward"][0] - 1 / 19) < 0.01, f"start {h['expected_reward'][0]:.3f} is not chance"
    assert h["greedy_acc"][-1] > 0.9, f"final greedy accuracy {h['greedy_acc'][-1]:.2f}"
    assert h["expected_reward"][-1] > 0.9, f"final sampled accuracy {h['expected_reward'][-1]:.2f}"
    assert h["kl"][0] == 0.0 and h["kl"][-1] > 0.5, "the policy must move away from pi_ref"


if __name__ == "__main__":
    h = train()
    print(f"{h['seconds']:.1f}s; expected reward {h['expected_reward'][0]:.3f} -> {h['expected_reward'][-1]:.3f}; "
          f"greedy {h['greedy_acc'][0]:.2f} -> {h['greedy_acc'][-1]:.2f}; KL {h['kl'][-1]:.3f}")
    for s in range(0, len(h["step"]), 25):
        print(s, round(h["expected_reward"][s], 3), round(h["greedy_acc"][s], 2), round(h["kl"][s], 3))
