"""The DPO gradient: each pair is weighted by how wrongly the implicit reward orders it.

grad L_DPO = -beta E[ sigma(r_hat(x, y_l) - r_hat(x, y_w))
                      (grad log pi(y_w|x) - grad log pi(y_l|x)) ]
r_hat(x, y) = beta log pi(y|x) / pi_ref(y|x)
                        # Sec. 4 "What does the DPO update do?", arXiv:2305.18290
"""

import math

# --8<-- [start:pair_weights]
import torch


def pair_weights(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> torch.Tensor:
    """sigma(r_hat_l - r_hat_w), (batch,): close to 1 when the implicit reward ranks the
    pair the wrong way round, close to 0 when it already ranks it right with a wide
    margin."""
    return torch.sigmoid(rejected_rewards - chosen_rewards)


# --8<-- [end:pair_weights]


# --8<-- [start:analytic_gradient]
import torch

from snippets.dpo.gradient import pair_weights


def categorical_dpo_gradient(logits, ref_logits, chosen, rejected, beta):
    """Closed-form gradient of the summed DPO loss w.r.t. a categorical policy's logits.

    logits, ref_logits: (batch, num_responses), one prompt per row; chosen, rejected:
    (batch,) response indices. For a softmax, grad_z log pi(y) = onehot(y) - pi, so in
    the difference grad log pi(y_w) - grad log pi(y_l) = onehot(y_w) - onehot(y_l) the
    softmax terms cancel. returns (batch, num_responses).
    """
    logp = torch.log_softmax(logits, -1)
    ref_logp = torch.log_softmax(ref_logits, -1)
    rows = torch.arange(logits.shape[0])
    r_w = beta * (logp[rows, chosen] - ref_logp[rows, chosen])
    r_l = beta * (logp[rows, rejected] - ref_logp[rows, rejected])
    w = pair_weights(r_w, r_l)
    k = logits.shape[1]
    one_hot = torch.nn.functional.one_hot
    direction = (one_hot(chosen, k) - one_hot(rejected, k)).to(logits.dtype)
    return -beta * w.unsqueeze(1) * direction  # Sec. 4, arXiv:2305.18290


# --8<-- [end:analytic_gradient]


from snippets.dpo.loss import dpo_loss


# Losses a critic would compare with Eq. (7); same inputs and outputs as dpo_loss.
def dpo_loss_without_reference(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta=0.1,
):
    """-log sigma(beta (log pi(y_w) - log pi(y_l))): no pi_ref in the margin."""
    zero = torch.zeros_like(reference_chosen_logps)
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, zero, zero, beta)


def dpo_loss_beta_on_chosen_only(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta=0.1,
):
    """-log sigma(beta log-ratio(y_w) - log-ratio(y_l)): beta on one side only."""
    margin = beta * (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps
    )
    return -torch.nn.functional.logsigmoid(margin), None, None


def dpo_loss_unweighted(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta=0.1,
):
    """-beta (log-ratio(y_w) - log-ratio(y_l)): the margin itself, no log-sigmoid, so
    every pair weighs 1 (the "naive version ... without the weighting coefficient"
    of Sec. 4, arXiv:2305.18290)."""
    margin = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps
    )
    return -beta * margin, None, None


def test_dpo_gradient_matches_autograd(loss_fn=dpo_loss):
    # loss_fn: the loss whose autograd gradient the closed form must match.
    g = torch.Generator().manual_seed(0)
    B, K, beta = 16, 5, 0.5
    ref_logits = torch.randn(B, K, generator=g, dtype=torch.float64)
    rows = torch.arange(B)
    # Pairs over all K responses, then pairs among the first 3 only.
    for paired in (K, 3):
        logits = torch.randn(B, K, generator=g, dtype=torch.float64, requires_grad=True)
        chosen = torch.randint(0, paired, (B,), generator=g)
        rejected = (chosen + torch.randint(1, paired, (B,), generator=g)) % paired
        logp = torch.log_softmax(logits, -1)
        ref_logp = torch.log_softmax(ref_logits, -1)
        losses, _, _ = loss_fn(
            logp[rows, chosen],
            logp[rows, rejected],
            ref_logp[rows, chosen],
            ref_logp[rows, rejected],
            beta=beta,
        )
        losses.sum().backward()
        expected = categorical_dpo_gradient(
            logits.detach(), ref_logits, chosen, rejected, beta
        )
        # float64, a handful of operations per entry: 1e-12 is rounding.
        torch.testing.assert_close(logits.grad, expected, atol=1e-12, rtol=0)
    # A response in no pair gets no gradient: the softmax terms cancel.
    assert torch.equal(expected[:, 3:], torch.zeros(B, K - 3, dtype=torch.float64))


def test_wrongly_ordered_pairs_weigh_most():
    # Implicit-reward margins from badly wrong (-4) to clearly right (+4).
    margin = torch.linspace(-4, 4, 9, dtype=torch.float64)
    w = pair_weights(margin, torch.zeros_like(margin))
    assert (w[:-1] > w[1:]).all(), "weights must fall as the margin grows"
    assert (w[margin < 0] > 0.5).all() and (w[margin > 0] < 0.5).all()
    assert abs(w[4].item() - 0.5) < 1e-12
    # sigma(m) / sigma(-m) = exp(m): margin -4 weighs e^4 (about 55) times margin +4.
    assert abs((w[0] / w[-1]).item() - math.exp(4.0)) < 1e-9, f"ratio {w[0] / w[-1]}"
