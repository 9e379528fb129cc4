"""Toy DPO: a categorical policy over a handful of responses per prompt, preferences drawn
from a known reward through Bradley-Terry, trained with the DPO loss, compared with the
closed-form optimum pi* = pi_ref exp(r / beta) / Z (Eq. (4), arXiv:2305.18290).

Run: python -m snippets.dpo.toy
"""
import time

# --8<-- [start:make_pairs]
import torch


def make_pairs(ref_logits, reward, pairs_per_prompt, generator):
    """Sample y1, y2 ~ pi_ref(.|x) independently and label them with Bradley-Terry:
    y1 is preferred with probability sigma(r(x, y1) - r(x, y2)).   # Eq. (1), arXiv:2305.18290
    ref_logits, reward: (num_prompts, num_responses).
    returns prompt, chosen, rejected: (num_prompts * pairs_per_prompt,) long tensors.
    """
    P, K = ref_logits.shape
    probs = torch.softmax(ref_logits, -1)
    y1 = torch.multinomial(probs, pairs_per_prompt, replacement=True, generator=generator)
    y2 = torch.multinomial(probs, pairs_per_prompt, replacement=True, generator=generator)
    prompt = torch.arange(P).unsqueeze(1).expand(P, pairs_per_prompt)
    p_first = torch.sigmoid(reward.gather(1, y1) - reward.gather(1, y2))
    first_wins = torch.rand(p_first.shape, generator=generator, dtype=p_first.dtype) < p_first
    chosen = torch.where(first_wins, y1, y2)
    rejected = torch.where(first_wins, y2, y1)
    return prompt.flatten(), chosen.flatten(), rejected.flatten()
# --8<-- [end:make_pairs]


# --8<-- [start:train_dpo]
import torch
from snippets.dpo.loss import dpo_loss


def train_dpo(ref_logits, prompt, chosen, rejected, beta, steps=300, lr=0.1, init_logits=None):
    """Full-batch DPO on a free categorical policy (one logit per prompt and response).
    ref_logits: (P, K) frozen reference; prompt, chosen, rejected: (N,) pair indices.
    The policy starts at pi_ref unless init_logits (P, K) is given. returns logits (P, K)."""
    ref_logp = torch.log_softmax(ref_logits, -1)
    logits = (ref_logits if init_logits is None else init_logits).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        logp = torch.log_softmax(logits, -1)
        losses, _, _ = dpo_loss(logp[prompt, chosen], logp[prompt, rejected],
                                ref_logp[prompt, chosen], ref_logp[prompt, rejected], beta=beta)
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
    return logits.detach()
# --8<-- [end:train_dpo]


# --8<-- [start:metrics]
import torch


def total_variation(p, q):
    """TV(p, q) = 1/2 sum_y |p(y) - q(y)| per row; p, q: (P, K) -> (P,)."""
    return 0.5 * (p - q).abs().sum(-1)


def kl_categorical(p, q):
    """KL(p || q) = sum_y p log(p / q) per row; p, q: (P, K) probabilities -> (P,)."""
    return (p * (p.log() - q.log())).sum(-1)
# --8<-- [end:metrics]


def setup(seed=0, prompts=4, responses=6):
    """A fixed problem: reference logits and a known reward, both (prompts, responses)."""
    g = torch.Generator().manual_seed(seed)
    ref_logits = 0.5 * torch.randn(prompts, responses, generator=g, dtype=torch.float64)
    reward = torch.randn(prompts, responses, generator=g, dtype=torch.float64)
    return ref_logits, reward


def run(beta=1.0, pairs_per_prompt=20000, steps=300, seed=0):
    """The experiment of the page; returns a dict of tensors and the wall time."""
    from snippets.dpo.derivation import optimal_policy

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ref_logits, reward = setup(seed)
    g = torch.Generator().manual_seed(seed + 1)
    prompt, chosen, rejected = make_pairs(ref_logits, reward, pairs_per_prompt, g)
    logits = train_dpo(ref_logits, prompt, chosen, rejected, beta, steps=steps)
    pi = torch.softmax(logits, -1)
    pi_star = optimal_policy(ref_logits, reward, beta)
    return dict(pi=pi, pi_star=pi_star, pi_ref=torch.softmax(ref_logits, -1), reward=reward,
                logits=logits, ref_logits=ref_logits, tv=total_variation(pi, pi_star),
                seconds=time.perf_counter() - t0)


TV_TOL = 0.03  # sampling error with 20k pairs per prompt is about 0.01


def test_dpo_recovers_closed_form_optimum():
    out = run()
    assert out["seconds"] < 30, f"experiment took {out['seconds']:.1f}s"
    tv = out["tv"].max().item()
    assert tv < TV_TOL, f"TV(pi_DPO, pi*) = {tv:.4f} >= {TV_TOL}"
    # The policy moved: the reference itself is far from pi*.
    assert total_variation(out["pi_ref"], out["pi_star"]).min() > 0.1


def test_implicit_reward_of_trained_policy_recovers_reward_differences():
    from snippets.dpo.derivation import implicit_reward

    out = run()
    r_hat = implicit_reward(torch.log_softmax(out["logits"], -1), torch.log_softmax(out["ref_logits"], -1), 1.0)
    # Compare after removing each prompt's mean: the per-prompt constant beta log Z is invisible.
    centred = lambda r: r - r.mean(1, keepdim=True)
    err = (centred(r_hat) - centred(out["reward"])).abs().max().item()
    assert err < 0.15, f"implicit reward off by {err:.3f}"


def kl_at_optimum(ref_logits, reward, betas):
    """KL(pi*_beta || pi_ref) for each beta, (len(betas), P)."""
    from snippets.dpo.derivation import optimal_policy

    ref = torch.softmax(ref_logits, -1)
    return torch.stack([kl_categorical(optimal_policy(ref_logits, reward, b), ref) for b in betas])


def test_qualifies_kl_constrains_new_and_old_policy():
    from snippets.dpo.derivation import optimal_policy

    torch.set_num_threads(1)
    ref_logits, reward = setup()
    # Holds: beta is a KL leash to pi_ref (the SFT model the policy starts from):
    # at the optimum the KL to pi_ref shrinks monotonically as beta grows.
    betas = [0.1, 0.3, 1.0, 3.0, 10.0]
    kl = kl_at_optimum(ref_logits, reward, betas)
    assert (kl[1:] < kl[:-1]).all(), f"KL not decreasing in beta: {kl}"
    assert kl[-1].max() < 0.01 and kl[0].min() > 1.0
    # The DPO-trained policy has the same KL (two betas, sampled preferences).
    g = torch.Generator().manual_seed(1)
    prompt, chosen, rejected = make_pairs(ref_logits, reward, 20000, g)
    ref = torch.softmax(ref_logits, -1)
    for b, kl_star in [(0.5, kl_at_optimum(ref_logits, reward, [0.5])[0]), (2.0, kl_at_optimum(ref_logits, reward, [2.0])[0])]:
        pi = torch.softmax(train_dpo(ref_logits, prompt, chosen, rejected, b), -1)
        torch.testing.assert_close(kl_categorical(pi, ref), kl_star, atol=0.05, rtol=0.1)
    # Does not hold: the anchor is pi_ref, not the policy training starts from nor the
    # previous iterate. Starting from a different "old" policy, DPO still lands on the
    # pi* defined by pi_ref, far from where it started.
    g2 = torch.Generator().manual_seed(7)
    start = ref_logits + 2.0 * torch.randn(ref_logits.shape, generator=g2, dtype=torch.float64)
    pi = torch.softmax(train_dpo(ref_logits, prompt, chosen, rejected, 1.0, steps=600, init_logits=start), -1)
    pi_star = optimal_policy(ref_logits, reward, 1.0)
    assert total_variation(pi, pi_star).max() < TV_TOL
    assert total_variation(torch.softmax(start, -1), pi_star).min() > 0.2


if __name__ == "__main__":
    out = run()
    print(f"TV per prompt {out['tv'].numpy().round(4)}, {out['seconds']:.2f}s")
