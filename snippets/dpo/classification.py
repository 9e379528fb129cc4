"""DPO as binary classification of preference pairs, and where the analogy stops.

The DPO loss is the logistic loss on the logit beta * (log-ratio margin):
    -log sigma(beta log pi(y_w)/pi_ref(y_w) - beta log pi(y_l)/pi_ref(y_l))
                                                          # Eq. (7), arXiv:2305.18290
which is binary cross-entropy with label 1, and also a two-way softmax cross-entropy
(InfoNCE with one negative) whose scores are the implicit rewards.
"""

# --8<-- [start:as_bce]
import torch
import torch.nn.functional as F


def dpo_logits(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta=0.1,
):
    """Classifier logit of "the first response is the preferred one", (batch,):
    beta * ((pi_c - pi_r) - (ref_c - ref_r)), inputs (batch,) sequence log-probs."""
    return beta * (
        (policy_chosen_logps - policy_rejected_logps)
        - (reference_chosen_logps - reference_rejected_logps)
    )


def dpo_as_bce(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    beta=0.1,
):
    """The DPO loss as binary cross-entropy with logits and label 1, (batch,)."""
    z = dpo_logits(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        beta,
    )
    return F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none")


# --8<-- [end:as_bce]


# --8<-- [start:feature_policy]
import torch


def feature_policy_logps(theta: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Log-linear policy with shared parameters:
    log pi(y) = theta . phi(y) - log sum_y' exp(theta . phi(y')).
    theta: (dim,), features: (num_responses, dim); returns (num_responses,). Unlike a
    free categorical, raising one response's score moves every response that shares
    features."""
    return torch.log_softmax(features @ theta, dim=0)


# --8<-- [end:feature_policy]


def hard_labels(reward, prompt, chosen, rejected):
    """Relabel pairs deterministically: the response with the higher reward always wins
    (a Bradley-Terry preference rate of exactly 1, as in a 'clean' supervised set)."""
    swap = reward[prompt, chosen] < reward[prompt, rejected]
    return torch.where(swap, rejected, chosen), torch.where(swap, chosen, rejected)


def bradley_terry_labels(reward, prompt, chosen, rejected):
    """Keep the sampled Bradley-Terry labels (noisy, as human labels are): the
    counterfactual of hard_labels. Returns chosen, rejected unchanged."""
    return chosen, rejected


def test_qualifies_dpo_as_supervised_classification(relabel=hard_labels):
    # relabel: how the "clean supervised" data set is labelled in part (2).
    from snippets.dpo.loss import dpo_loss

    # Holds: DPO is exactly logistic regression on pairs (BCE with logits, label 1) ...
    # (identities of the loss; float64, so 1e-12 is rounding)
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (
        -20 * torch.rand(64, generator=g, dtype=torch.float64) for _ in range(4)
    )
    beta = 0.3
    losses, cw, cl = dpo_loss(pc, pr, rc, rr, beta=beta)
    torch.testing.assert_close(
        losses, dpo_as_bce(pc, pr, rc, rr, beta), atol=1e-12, rtol=0
    )
    # (the same default beta as dpo_loss, TRL's 0.1)
    torch.testing.assert_close(
        dpo_loss(pc, pr, rc, rr)[0], dpo_as_bce(pc, pr, rc, rr), atol=1e-12, rtol=0
    )
    # ... and a two-way softmax cross-entropy (InfoNCE with one negative) on the
    # implicit rewards.
    first = torch.zeros(64, dtype=torch.long)  # the chosen response is class 0
    two_way = F.cross_entropy(torch.stack([cw, cl], 1), first, reduction="none")
    torch.testing.assert_close(losses, two_way, atol=1e-12, rtol=0)
    # Swapping the order of a pair and the label gives the same loss.
    label0 = torch.zeros(64, dtype=torch.float64)
    swapped = F.binary_cross_entropy_with_logits(
        dpo_logits(pr, pc, rr, rc, beta), label0, reduction="none"
    )
    torch.testing.assert_close(losses, swapped, atol=1e-12, rtol=0)

    # Does not hold (1): supervised learning raises the likelihood of its label; DPO
    # only raises a margin. On a shared-parameter policy one DPO step lowers the loss
    # and ALSO lowers log pi(y_w), moving mass to a response that is in no pair
    # (the "likelihood displacement" of Razin et al. 2024, arXiv:2410.08847).
    feats = torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64)  # y_w, y_l, y_3
    ref_theta = torch.tensor([1.0], dtype=torch.float64)
    ref = feature_policy_logps(ref_theta, feats)
    theta = ref_theta.clone().requires_grad_(True)
    logp = feature_policy_logps(theta, feats)
    loss, _, _ = dpo_loss(logp[:1], logp[1:2], ref[:1], ref[1:2], beta=1.0)
    loss.sum().backward()
    new_theta = theta.detach() - 0.5 * theta.grad
    new_logp = feature_policy_logps(new_theta, feats)
    new_loss, _, _ = dpo_loss(new_logp[:1], new_logp[1:2], ref[:1], ref[1:2], beta=1.0)
    assert new_loss.item() < loss.item(), "the DPO step must lower the loss"
    assert new_logp[0] < logp[0].detach(), "expected log pi(y_w) to fall"
    assert new_logp[2] > logp[2].detach(), "mass should flow to the unseen response"
    # SFT step: gradient ascent on log pi(y_w), grad = phi(y_w) - E_pi[phi].
    sft_theta = ref_theta + 0.5 * (feats[0] - ref.exp() @ feats)
    assert feature_policy_logps(sft_theta, feats)[0] > ref[0], "SFT raises log pi(y_w)"

    # Does not hold (2): the classifier's minimiser is finite only for noisy labels.
    # With Bradley-Terry labels at rate p the loss -p log s(m) - (1-p) log s(-m) is
    # minimised at the finite margin m = logit(p) = r_w - r_l; with hard labels (p = 1)
    # it keeps falling as m grows, and nothing holds the policy at pi*_beta.
    from snippets.dpo.derivation import optimal_policy
    from snippets.dpo.toy import (
        expected_tv_error,
        make_pairs,
        setup,
        total_variation,
        train_dpo,
    )

    ref_logits, reward = setup()
    n, beta = 2000, 4.0  # a strong leash: pi*_beta is close to pi_ref
    g = torch.Generator().manual_seed(1)
    prompt, chosen, rejected = make_pairs(ref_logits, reward, n, g)
    pi_star = optimal_policy(ref_logits, reward, beta)
    tol = 3 * expected_tv_error(ref_logits, reward, beta, n)  # see snippets/dpo/toy.py
    # Bradley-Terry labels: DPO settles on pi*_beta, within sampling error.
    soft = torch.softmax(train_dpo(ref_logits, prompt, chosen, rejected, beta), -1)
    assert (total_variation(soft, pi_star) < tol).all()
    # Hard labels, same pairs and beta: after 100 and then 300 steps the loss is still
    # falling and the policy still moving away from pi*_beta, towards the
    # highest-reward response, whatever beta is.
    hc, hr = relabel(reward, prompt, chosen, rejected)
    ref_logp = torch.log_softmax(ref_logits, -1)

    def mean_loss(logits):
        lp = torch.log_softmax(logits, -1)
        losses, _, _ = dpo_loss(
            lp[prompt, hc],
            lp[prompt, hr],
            ref_logp[prompt, hc],
            ref_logp[prompt, hr],
            beta=beta,
        )
        return losses.mean().item()

    early = train_dpo(ref_logits, prompt, hc, hr, beta, steps=100)
    late = train_dpo(ref_logits, prompt, hc, hr, beta, steps=200, init_logits=early)
    assert mean_loss(late) < mean_loss(early)
    tv_early = total_variation(torch.softmax(early, -1), pi_star)
    tv_late = total_variation(torch.softmax(late, -1), pi_star)
    assert (tv_late > tv_early).all() and (tv_early > tol).all()
    best = reward.argmax(1)
    rows = torch.arange(len(best))
    p_early = torch.softmax(early, -1)[rows, best]
    p_late = torch.softmax(late, -1)[rows, best]
    assert (p_late > p_early).all() and (p_early > pi_star[rows, best]).all()
