"""The DPO loss (Rafailov et al. 2023, arXiv:2305.18290) and sequence log-probabilities.

L_DPO = -E[ log sigma( beta log pi(y_w|x)/pi_ref(y_w|x)
                       - beta log pi(y_l|x)/pi_ref(y_l|x) ) ]
                                                          # Eq. (7), arXiv:2305.18290
Semantics follow the sigmoid loss of TRL's DPOTrainer with label smoothing 0.
"""

# --8<-- [start:sequence_logps]
import torch


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Summed log-probability of each sequence: log pi(y|x) = sum_t log pi(y_t|x, y_<t).

    logits: (batch, seq, vocab), ALREADY ALIGNED with labels: logits[:, i] scores
            labels[:, i] (for a causal LM, shift first: logits[:, :-1] goes with
            labels[:, 1:]).
    labels: (batch, seq) token ids; any value is allowed where mask is 0.
    mask:   (batch, seq), 1 for the response tokens to count, 0 for prompt/padding.
    returns (batch,).
    """
    mask = mask.bool()
    # Masked labels may be -100 (padding): replace them by a valid id before gathering.
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels))
    logp = torch.log_softmax(logits, dim=-1)
    index = safe_labels.unsqueeze(-1)
    token_logp = torch.gather(logp, dim=2, index=index).squeeze(-1)  # (batch, seq)
    # sum_t log pi(y_t | x, y_<t) over response tokens only, as TRL
    return token_logp.masked_fill(~mask, 0.0).sum(dim=1)


# --8<-- [end:sequence_logps]


# --8<-- [start:dpo_loss]
import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta: float = 0.1,
):
    """DPO sigmoid loss.

    All inputs: (batch,) summed sequence log-probs log pi(y|x) of the chosen (y_w) and
    rejected (y_l) responses under the policy and the frozen reference.
    returns (losses, chosen_rewards, rejected_rewards), each (batch,):
      losses  = -log sigma(beta * ((pi_c - pi_r) - (ref_c - ref_r)))
                                                          # Eq. (7), arXiv:2305.18290
      rewards = beta * (policy - reference), detached: the implicit reward
                r_hat(x, y) = beta log pi(y|x)/pi_ref(y|x)  # Sec. 4, arXiv:2305.18290
    """
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios  # margin of implicit rewards, divided by beta
    losses = -F.logsigmoid(beta * logits)  # Eq. (7), arXiv:2305.18290
    chosen_rewards = beta * (policy_chosen_logps - reference_chosen_logps).detach()
    rejected_rewards = (
        beta * (policy_rejected_logps - reference_rejected_logps).detach()
    )
    return losses, chosen_rewards, rejected_rewards


# --8<-- [end:dpo_loss]


def test_sequence_logps_matches_loop():
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 5, 7
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T)
    mask[1, 3:] = 0
    labels[1, 3:] = -100  # padding label, as in TRL; must be ignored
    mask[2, :2] = 0  # prompt tokens
    got = sequence_logps(logits, labels, mask)
    assert got.shape == (B,)
    for b in range(B):
        s = 0.0
        for t in range(T):
            if mask[b, t]:
                s += torch.log_softmax(logits[b, t], -1)[labels[b, t]].item()
        # float64 sums of 5 terms: rounding error far below 1e-10
        assert abs(got[b].item() - s) < 1e-10, f"row {b}: {got[b].item()} vs {s}"
    # Masked positions are ignored even where their log-probs are not finite.
    logits[1, 4] = -torch.inf
    torch.testing.assert_close(
        sequence_logps(logits, labels, mask), got, atol=1e-12, rtol=0
    )


def test_dpo_loss_matches_formula():
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (
        -10 * torch.rand(6, generator=g, dtype=torch.float64) for _ in range(4)
    )
    beta = 0.3
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta)
    margin = beta * (pc - rc) - beta * (pr - rr)
    explicit = -torch.log(1 / (1 + torch.exp(-margin)))
    torch.testing.assert_close(losses, explicit, atol=1e-12, rtol=0)
    torch.testing.assert_close(cr, beta * (pc - rc), atol=1e-12, rtol=0)
    torch.testing.assert_close(rj, beta * (pr - rr), atol=1e-12, rtol=0)
    # Loss is -log sigma(chosen_reward - rejected_reward).
    torch.testing.assert_close(losses, -F.logsigmoid(cr - rj), atol=1e-12, rtol=0)
    # Without beta, the default is TRL's (DPOConfig.beta = 0.1).
    default, _, _ = dpo_loss(pc, pr, rc, rr)
    torch.testing.assert_close(
        default, dpo_loss(pc, pr, rc, rr, beta=0.1)[0], atol=0, rtol=0
    )
    # Policy equal to the reference: every pair costs log 2.
    l0, _, _ = dpo_loss(rc, rr, rc, rr, beta=beta)
    torch.testing.assert_close(
        l0, torch.full_like(l0, 0.6931471805599453), atol=1e-12, rtol=0
    )


def test_dpo_rewards_are_detached():
    pc = torch.tensor([-1.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    losses, cr, rj = dpo_loss(pc, pr, torch.tensor([-1.5]), torch.tensor([-1.5]))
    assert losses.requires_grad and not cr.requires_grad and not rj.requires_grad
