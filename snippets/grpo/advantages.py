"""Group-relative advantages of GRPO (DeepSeekMath, arXiv:2402.03300, Sec. 4.1.2).

For one prompt the policy samples a group of G completions with rewards r_1..r_G.
Outcome supervision gives every token of completion i the same advantage

    A_i = (r_i - mean(r)) / std(r)                       # Sec. 4.1.2, arXiv:2402.03300

which replaces PPO's learned value function (the critic) by the group mean as a baseline.
As in TRL's GRPOTrainer, std is torch's default (sample, unbiased, divisor G - 1) standard
deviation and a small eps is added to the denominator.
"""

# --8<-- [start:group_advantages]
import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages.

    rewards: (num_prompts, group_size), one row per prompt, one column per sampled completion.
    returns: (num_prompts, group_size), (r - row mean) / (row sample std + eps).

    A group whose rewards are all equal carries no signal: its advantages are exactly 0
    (never NaN, also for group_size == 1, where the sample std is undefined).
    """
    if rewards.shape[1] == 1:  # the sample std of one reward is undefined; no signal either
        return torch.zeros_like(rewards)
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased (divisor G - 1), as torch and TRL default
    adv = (rewards - mean) / (std + eps)  # Sec. 4.1.2, arXiv:2402.03300
    # All-equal groups: r - mean may be a rounding error away from 0, force exact zeros.
    flat = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(adv), adv)
# --8<-- [end:group_advantages]


def test_group_advantages_match_formula():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(5, 8, generator=g, dtype=torch.float64)
    adv = group_advantages(r)
    expected = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=True, keepdim=True) + 1e-4)
    torch.testing.assert_close(adv, expected, atol=1e-12, rtol=0)
    # Each group is centred: advantages sum to 0 within a group.
    torch.testing.assert_close(adv.sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)
    # With the sample std, the advantages of a group have sample std 1 up to eps.
    torch.testing.assert_close(adv.std(1), torch.ones(5, dtype=torch.float64), atol=1e-3, rtol=0)


def test_group_advantages_match_trl_sample_std():
    # TRL: rewards.view(-1, G).std(dim=1), i.e. the unbiased estimator; differs from the
    # population std by the factor sqrt(G / (G - 1)).
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    adv = group_advantages(r, eps=0.0)
    # mean 0.25, sample std = sqrt(((0.75)^2 + 3 * 0.25^2) / 3) = 0.5
    torch.testing.assert_close(adv, torch.tensor([[1.5, -0.5, -0.5, -0.5]]), atol=1e-6, rtol=0)


def test_all_equal_group_gets_zero_advantage():
    r = torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    adv = group_advantages(r)
    assert not torch.isnan(adv).any(), "NaN advantage"
    assert torch.equal(adv[:2], torch.zeros(2, 3)), f"non-zero advantage for flat groups: {adv[:2]}"
    assert adv[2, 1] > 0 and adv[2, 0] < 0
    single = group_advantages(torch.tensor([[3.0], [2.0]]))
    assert torch.equal(single, torch.zeros(2, 1)), f"group of one must give 0, got {single}"
