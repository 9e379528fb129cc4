"""Group-relative advantages of GRPO (DeepSeekMath, arXiv:2402.03300, Sec. 4.1.2).

For one prompt the policy samples a group of G completions with rewards r_1..r_G.
Outcome supervision gives every token of completion i the same advantage

    A_i = (r_i - mean(r)) / std(r)                       # Sec. 4.1.2, arXiv:2402.03300

which replaces PPO's learned value function (the critic) by the group mean as a
baseline. As in TRL's GRPOTrainer, std is torch's default (sample, unbiased, divisor
G - 1) standard deviation and eps = 1e-4 is added to the denominator.
"""

# --8<-- [start:group_advantages]
import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages.

    rewards: (num_prompts, group_size), one row per prompt, one column per completion.
    returns: (num_prompts, group_size), (r - row mean) / (row sample std + eps).

    A group whose rewards are all equal carries no signal: its advantages are exactly 0
    (never NaN, also for group_size == 1, where the sample std is undefined).
    """
    if rewards.shape[1] == 1:  # the sample std of one reward is undefined; no signal
        return torch.zeros_like(rewards)
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased (divisor G - 1), as TRL
    adv = (rewards - mean) / (std + eps)  # Sec. 4.1.2, arXiv:2402.03300
    # All-equal groups: r - mean may be a rounding error away from 0 (e.g. seven
    # rewards of 0.1 in float32), and / eps would blow it up: force exact zeros.
    flat = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(adv), adv)


# --8<-- [end:group_advantages]


# Nearby rules a critic would put in place of the paper's, as counterfactuals of the
# claims below (each (num_prompts, G) -> (num_prompts, G)).
def mean_only_advantages(rewards, eps=1e-4):
    """r - group mean, no division by the std (Dr. GRPO, arXiv:2503.20783, Sec. 3)."""
    return rewards - rewards.mean(dim=1, keepdim=True)


def leave_one_out_advantages(rewards, eps=1e-4):
    """(r - mean of the other G-1 rewards) / (sample std + eps): an RLOO baseline."""
    G = rewards.shape[1]
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)
    return (rewards - others) / (rewards.std(dim=1, keepdim=True) + eps)


def eps_only_advantages(rewards, eps=1e-4):
    """TRL's rule as written: (r - mean) / (std + eps), nothing else; a flat group
    relies on eps alone, and a group of one has a NaN std."""
    mean = rewards.mean(dim=1, keepdim=True)
    return (rewards - mean) / (rewards.std(dim=1, keepdim=True) + eps)


def test_group_advantages_match_formula(advantage_fn=group_advantages):
    g = torch.Generator().manual_seed(0)
    r = torch.rand(5, 8, generator=g, dtype=torch.float64)
    adv = advantage_fn(r)
    sample_std = r.std(1, unbiased=True, keepdim=True)
    expected = (r - r.mean(1, keepdim=True)) / (sample_std + 1e-4)
    # float64 arithmetic on 8 numbers: 1e-12 is rounding.
    torch.testing.assert_close(adv, expected, atol=1e-12, rtol=0)
    # Each group is centred: advantages sum to 0 within a group.
    zeros = torch.zeros(5, dtype=torch.float64)
    torch.testing.assert_close(adv.sum(1), zeros, atol=1e-10, rtol=0)
    # With the sample std, a group's advantages have sample std std / (std + eps):
    # 1 up to eps / std < 1e-4 / 0.2 here.
    ones = torch.ones(5, dtype=torch.float64)
    torch.testing.assert_close(adv.std(1), ones, atol=1e-3, rtol=0)
    torch.testing.assert_close(
        adv.std(1, keepdim=True), sample_std / (sample_std + 1e-4), atol=1e-12, rtol=0
    )


def test_group_advantages_match_trl_sample_std():
    # TRL: rewards.view(-1, G).std(dim=1), i.e. the unbiased estimator; differs from the
    # population std by the factor sqrt(G / (G - 1)).
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    adv = group_advantages(r, eps=0.0)
    # mean 0.25, sample std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5 (population: 0.433)
    expected = torch.tensor([[1.5, -0.5, -0.5, -0.5]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)  # float32 rounding
    # A group of two different rewards: r - mean = +-d/2 and the sample std is
    # |d| / sqrt(2), so the advantages are +-1/sqrt(2) whatever the rewards.
    pairs = torch.tensor([[0.0, 1.0], [5.0, -3.0], [0.2, 0.3]], dtype=torch.float64)
    half = 2**-0.5
    expected = torch.tensor(
        [[-half, half], [half, -half], [-half, half]], dtype=torch.float64
    )
    torch.testing.assert_close(
        group_advantages(pairs, eps=0.0), expected, atol=1e-12, rtol=0
    )


def test_all_equal_group_gets_zero_advantage(advantage_fn=group_advantages):
    from snippets.grpo.loss import grpo_loss, k3_kl

    group_advantages = advantage_fn  # the rule under test (a counterfactual swaps it)
    r = torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    adv = group_advantages(r)
    assert not torch.isnan(adv).any(), "NaN advantage"
    assert torch.equal(adv[:2], torch.zeros(2, 3)), f"flat groups: {adv[:2]}"
    assert adv[2, 1] > 0 and adv[2, 0] < 0
    # Seven rewards of 0.1 in float32: r - mean is 7e-9, not 0; still exactly 0 here.
    seven = group_advantages(torch.full((1, 7), 0.1))
    assert torch.equal(seven, torch.zeros(1, 7)), f"rounding leaked through: {seven}"
    # Flatness is decided group by group: beside a group with signal, still exact 0.
    rows = torch.stack([torch.full((7,), 0.1), torch.arange(7.0) ** 2])
    mixed = group_advantages(rows)
    assert torch.equal(mixed[0], torch.zeros(7)), f"rounding leaked through: {mixed}"
    assert (mixed[1] != 0).all()
    single = group_advantages(torch.tensor([[3.0], [2.0]]))
    assert torch.equal(single, torch.zeros(2, 1)), f"group of one must give 0: {single}"
    # Such a group adds nothing to the policy-gradient term: its loss gradient is the
    # gradient of the KL term beta * k3 alone.
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(3, 4, generator=g, dtype=torch.float64)
    old = logps + 0.1 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    ref = logps + 0.3 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 4, dtype=torch.float64)
    a = group_advantages(torch.full((1, 3), 0.5, dtype=torch.float64))[0]
    x = logps.clone().requires_grad_(True)
    grpo_loss(x, old, ref, a, mask, beta=0.04).backward()
    y = logps.clone().requires_grad_(True)
    (0.04 * k3_kl(y, ref)).mean(1).mean().backward()
    torch.testing.assert_close(x.grad, y.grad, atol=1e-15, rtol=0)
