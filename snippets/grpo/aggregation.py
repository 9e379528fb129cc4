"""How per-token losses become one number: the paper's per-sequence mean and two fixes.

GRPO (Eq. (3), arXiv:2402.03300):
    1/G sum_i 1/|o_i| sum_t l_it            (sequence mean, then batch mean)
DAPO ("Token-Level Policy Gradient Loss", arXiv:2503.14476):
    1/sum_i |o_i| sum_i sum_t l_it          (token-level mean)
Dr. GRPO (Sec. 3, arXiv:2503.20783):
    1/(G * L_max) sum_i sum_t l_it          (a constant normaliser)
"""

# --8<-- [start:aggregators]
import torch


def sequence_mean(per_token, mask):
    """Paper / TRL loss_type="grpo": mean over each sequence's tokens, then over
    sequences. per_token, mask: (batch, seq_len) -> scalar.
    A token of o_i weighs 1 / (batch * |o_i|)."""
    mask = mask.to(per_token.dtype)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1.0)).mean()


def token_mean(per_token, mask):
    """DAPO's token-level loss: every token of the batch weighs 1 / (total tokens)."""
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def constant_normaliser(per_token, mask, max_len):
    """Dr. GRPO: the token sum divided by batch * max_len, the same for all batches."""
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / (per_token.shape[0] * max_len)


# --8<-- [end:aggregators]


def test_sequence_mean_weights_tokens_by_inverse_length(paper_rule=sequence_mean):
    # paper_rule: the aggregation taken to be the paper's (and grpo_loss's).
    from snippets.grpo.loss import grpo_loss, per_token_loss

    B, T = 4, 10
    lengths = torch.tensor([2, 5, 10, 1])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float64)
    f64 = dict(dtype=torch.float64)
    for agg, expected in [
        (paper_rule, 1.0 / (B * lengths.to(torch.float64))),
        (token_mean, torch.full((B,), 1.0 / lengths.sum().item(), **f64)),
        (
            lambda l, m: constant_normaliser(l, m, T),
            torch.full((B,), 1.0 / (B * T), **f64),
        ),
    ]:
        per_token = torch.zeros(B, T, requires_grad=True, **f64)
        agg(per_token, mask).backward()
        # Weight of each unmasked token = d loss / d l_it; padding gets exactly 0.
        weights = per_token.grad
        torch.testing.assert_close(
            weights, expected.unsqueeze(1) * mask, atol=1e-15, rtol=0
        )

    # Consequence of the paper's rule: a wrong (A < 0) long answer is penalised less
    # per token than a wrong short one, so rambling is cheap; a right short answer
    # gains most.
    short, long_ = 2, 10
    m = torch.zeros(2, T, **f64)
    m[0, :short], m[1, :long_] = 1, 1
    logps = torch.full((2, T), -1.0, requires_grad=True, **f64)
    adv = torch.tensor([-1.0, -1.0], **f64)
    grpo_loss(logps, logps.detach(), logps.detach(), adv, m).backward()
    g = logps.grad
    assert abs(g[0, 0] / g[1, 0] - long_ / short) < 1e-9, "per-token push is 1/|o_i|"
    # grpo_loss is the per-token loss aggregated by sequence_mean.
    g2 = torch.Generator().manual_seed(0)
    lp = -torch.rand(2, T, generator=g2, **f64)
    old = lp + 0.2 * torch.randn(2, T, generator=g2, **f64)
    a = torch.tensor([0.5, -1.0], **f64)
    torch.testing.assert_close(
        grpo_loss(lp, old, old, a, m),
        paper_rule(per_token_loss(lp, old, old, a), m),
        atol=1e-12,
        rtol=0,
    )


def test_aggregators_keep_the_loss_dtype_and_count_tokens():
    # A float32 loss with a float64 mask (any 0/1 mask dtype): the result stays float32.
    # One sequence holds a single token, the other none: the token mean is that token,
    # the sequence mean averages it with the empty sequence's 0, Dr. GRPO divides by
    # batch * max_len.
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0, 1, 0], [0, 0, 0]], dtype=torch.float64)
    results = (
        token_mean(per_token, mask),
        sequence_mean(per_token, mask),
        constant_normaliser(per_token, mask, 3),
    )
    expected = torch.tensor([2.0, 1.0, 2.0 / 6.0])  # rounded to float32
    assert torch.equal(torch.stack(results), expected)
    assert all(r.dtype == torch.float32 for r in results)
