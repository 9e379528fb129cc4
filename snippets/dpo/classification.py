"""DPO as binary classification of preference pairs, and where the analogy stops.

The DPO loss is the logistic loss on the logit beta * (log-ratio margin):
    -log sigma(beta log pi(y_w)/pi_ref(y_w) - beta log pi(y_l)/pi_ref(y_l))   # Eq. (7), arXiv:2305.18290
which is binary cross-entropy with label 1, and also a two-way softmax cross-entropy
(InfoNCE with one negative) whose scores are the implicit rewards.
"""

# --8<-- [start:as_bce]
import torch
import torch.nn.functional as F


def dpo_logits(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, beta=0.1):
    """Classifier logit of "the first response is the preferred one", (batch,):
    beta * ((pi_c - pi_r) - (ref_c - ref_r)), inputs (batch,) sequence log-probs."""
    return beta * ((policy_chosen_logps - policy_rejected_logps)
                   - (reference_chosen_logps - reference_rejected_logps))


def dpo_as_bce(policy_chosen_logps, policy_rejected_logps,
               reference_chosen_logps, reference_rejected_logps, beta=0.1):
    """The DPO loss written as binary cross-entropy with logits and label 1, (batch,)."""
    z = dpo_logits(policy_chosen_logps, policy_rejected_logps,
                   reference_chosen_logps, reference_rejected_logps, beta)
    return F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none")
# --8<-- [end:as_bce]


# --8<-- [start:feature_policy]
import torch


def feature_policy_logps(theta: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Log-linear policy with shared parameters: log pi(y) = theta . phi(y) - log sum_y' exp(theta . phi(y')).
    theta: (dim,), features: (num_responses, dim); returns (num_responses,). Unlike a free
    categorical, raising one response's score moves every response that shares features."""
    return torch.log_softmax(features @ theta, dim=0)
# --8<-- [end:feature_policy]


def test_qualifies_dpo_as_supervised_classification():
    from snippets.dpo.loss import dpo_loss

    # Holds: DPO is exactly logistic regression on pairs (BCE with logits, label 1) ...
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-20 * torch.rand(64, generator=g, dtype=torch.float64) for _ in range(4))
    beta = 0.1
    losses, cw, cl = dpo_loss(pc, pr, rc, rr, beta=beta)
    torch.testing.assert_close(losses, dpo_as_bce(pc, pr, rc, rr, beta), atol=1e-12, rtol=0)
    # ... and a two-way softmax cross-entropy (InfoNCE with one negative) on implicit rewards.
    two_way = F.cross_entropy(torch.stack([cw, cl], 1), torch.zeros(64, dtype=torch.long), reduction="none")
    torch.testing.assert_close(losses, two_way, atol=1e-12, rtol=0)
    # Swapping the order of a pair and the label gives the same loss: a symmetric classifier.
    swapped = F.binary_cross_entropy_with_logits(dpo_logits(pr, pc, rr, rc, beta), torch.zeros(64, dtype=torch.float64), reduction="none")
    torch.testing.assert_close(losses, swapped, atol=1e-12, rtol=0)

    # Does not hold (1): supervised learning raises the likelihood of its label; DPO only
    # raises a margin. On a shared-parameter policy one DPO step lowers the loss and ALSO
    # lowers log pi(y_w), moving mass to a response that is in no pair.
    feats = torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64)  # y_w, y_l, unseen y_3
    ref_theta = torch.tensor([1.0], dtype=torch.float64)
    ref = feature_policy_logps(ref_theta, feats)
    theta = ref_theta.clone().requires_grad_(True)
    logp = feature_policy_logps(theta, feats)
    loss, _, _ = dpo_loss(logp[:1], logp[1:2], ref[:1], ref[1:2], beta=1.0)
    loss.sum().backward()
    new_theta = theta.detach() - 0.5 * theta.grad
    new_logp = feature_policy_logps(new_theta, feats)
    new_loss, _, _ = dpo_loss(new_logp[:1], new_logp[1:2], ref[:1], ref[1:2], beta=1.0)
    assert new_loss.item() < loss.item() - 1e-3, "the DPO step must lower the loss"
    assert new_logp[0] < logp[0].detach() - 1e-3, "expected log pi(y_w) to fall"
    assert new_logp[2] > logp[2].detach() + 1e-3, "mass should flow to the unseen response"
    sft_theta = ref_theta + 0.5 * (feats[0] - ref.exp() @ feats)  # SFT step: grad of log pi(y_w)
    assert feature_policy_logps(sft_theta, feats)[0] > ref[0], "an SFT step raises log pi(y_w)"

    # Does not hold (2): with hard labels (a pair always labelled the same way, as in a
    # supervised dataset) the classification loss has no finite minimiser: it keeps falling
    # as the margin grows, so nothing holds the policy near pi_ref. With Bradley-Terry
    # labels at rate p the minimiser is the finite margin logit(p) = r_w - r_l.
    margins = torch.tensor([1.0, 5.0, 10.0, 20.0], dtype=torch.float64)
    hard = -F.logsigmoid(margins)
    assert (hard[1:] < hard[:-1]).all() and hard[-1] < 1e-8
    p = 0.8
    grid = torch.linspace(-5, 5, 100001, dtype=torch.float64)
    soft = -(p * F.logsigmoid(grid) + (1 - p) * F.logsigmoid(-grid))
    best = grid[soft.argmin()].item()
    assert abs(best - torch.logit(torch.tensor(p)).item()) < 1e-3, f"minimiser {best}"
