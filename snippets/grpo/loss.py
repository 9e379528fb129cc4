"""GRPO objective: PPO's clipped surrogate on group advantages plus a k3 KL penalty.

J = E[ 1/G sum_i 1/|o_i| sum_t { min(rho_it A_it, clip(rho_it, 1-eps, 1+eps) A_it)
                                  - beta * D_KL[pi_theta || pi_ref] } ]
                                                          # Eq. (3), arXiv:2402.03300
rho_it = pi_theta(o_it | q, o_i,<t) / pi_theta_old(o_it | q, o_i,<t)
                                                          # Eq. (7), arXiv:1707.06347
D_KL   = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1   (per token, k3)
                                                          # Eq. (4), arXiv:2402.03300
The loss minimised is -J; the per-sequence mean (1/|o_i|) then the batch mean is the
paper's aggregation and the one of TRL's GRPOTrainer (loss_type="grpo").
"""

import math

# --8<-- [start:k3_kl]
import torch


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref)
    (Schulman 2020, "Approximating KL divergence").

    logps, ref_logps: (batch, seq_len) log-probabilities of the sampled tokens under
    pi_theta and pi_ref. returns (batch, seq_len):
        k3 = exp(ref - logp) - (ref - logp) - 1 = pi_ref/pi - log(pi_ref/pi) - 1 >= 0.
    """
    log_ratio = ref_logps - logps  # log(pi_ref / pi_theta)
    return torch.exp(log_ratio) - log_ratio - 1  # Eq. (4), arXiv:2402.03300


# --8<-- [end:k3_kl]


# --8<-- [start:clipped_surrogate]
import torch


def clipped_surrogate(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """Per-token PPO clipped surrogate (to be maximised).

    logps, old_logps: (batch, seq_len); advantages: (batch,), one per sequence
    (outcome reward), broadcast to every token.
    returns (batch, seq_len): min(rho A, clip(rho, 1-eps, 1+eps) A).
    """
    ratio = torch.exp(logps - old_logps)  # rho = pi_theta / pi_theta_old
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    return torch.min(unclipped, clipped)  # Eq. (7), arXiv:1707.06347


# --8<-- [end:clipped_surrogate]


# --8<-- [start:per_token_loss]
import torch

from snippets.grpo.loss import clipped_surrogate, k3_kl


def per_token_loss(logps, old_logps, ref_logps, advantages, *, clip_eps=0.2, beta=0.04):
    """Per-token GRPO loss, (batch, seq_len): -clipped surrogate + beta * k3 (the
    negated integrand of Eq. (3), arXiv:2402.03300). The KL sits in the loss, not in the
    reward, and is not clipped."""
    surrogate = clipped_surrogate(logps, old_logps, advantages, clip_eps)
    return -surrogate + beta * k3_kl(logps, ref_logps)


# --8<-- [end:per_token_loss]


# --8<-- [start:grpo_loss]
import torch

from snippets.grpo.loss import per_token_loss


def grpo_loss(
    logps, old_logps, ref_logps, advantages, mask, *, clip_eps=0.2, beta=0.04
):
    """Scalar GRPO loss.

    logps, old_logps, ref_logps: (batch, seq_len) per-token log-probs of the sampled
    tokens under pi_theta, pi_theta_old and pi_ref; advantages: (batch,);
    mask: (batch, seq_len), 1 for completion tokens, 0 for padding. Each sequence's
    loss is the mean over its own unmasked tokens (1/|o_i| in Eq. (3),
    arXiv:2402.03300), then sequences are averaged.
    """
    mask = mask.to(logps.dtype)
    loss_t = per_token_loss(
        logps, old_logps, ref_logps, advantages, clip_eps=clip_eps, beta=beta
    )
    per_seq = (loss_t * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # 1/|o_i|
    return per_seq.mean()  # 1/G sum_i (and mean over prompts)


# --8<-- [end:grpo_loss]


def test_k3_is_formula():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 3
    ref = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 3
    ratio = ref.exp() / lp.exp()
    expected = ratio - ratio.log() - 1
    torch.testing.assert_close(k3_kl(lp, ref), expected, atol=1e-12, rtol=0)
    assert (k3_kl(lp, ref) >= 0).all()
    assert torch.equal(k3_kl(lp, lp), torch.zeros_like(lp))


def test_grpo_loss_matches_explicit_loops():
    B, T = 4, 6
    g = torch.Generator().manual_seed(1)
    lp = -torch.rand(B, T, generator=g, dtype=torch.float64)  # log pi_theta
    old = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    # An integer 0/1 mask, as a tokenizer's attention mask comes.
    mask = torch.ones(B, T, dtype=torch.int64)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    for kwargs in ({}, {"clip_eps": 0.1, "beta": 0.5}):  # defaults, then other values
        eps, beta = kwargs.get("clip_eps", 0.2), kwargs.get("beta", 0.04)
        total = 0.0
        for i in range(B):
            seq, n = 0.0, 0
            for t in range(T):
                if mask[i, t] == 0:
                    continue
                rho = float(torch.exp(lp[i, t] - old[i, t]))
                a = float(adv[i])
                surr = min(rho * a, min(max(rho, 1 - eps), 1 + eps) * a)
                x = float(ref[i, t] - lp[i, t])
                k3 = math.exp(x) - x - 1
                seq += -surr + beta * k3
                n += 1
            total += seq / n
        expected = total / B
        got = grpo_loss(lp, old, ref, adv, mask, **kwargs)
        assert got.shape == ()
        assert abs(got.item() - expected) < 1e-10, f"{got.item()} vs {expected}"
    # The loss keeps the policy's dtype, whatever the mask's.
    lp32, old32, ref32, adv32 = lp.float(), old.float(), ref.float(), adv.float()
    assert grpo_loss(lp32, old32, ref32, adv32, mask.double()).dtype == torch.float32


def clip_only_surrogate(logps, old_logps, advantages, clip_eps=0.2):
    """clip(rho, 1-eps, 1+eps) A without PPO's min: zero gradient on BOTH sides of the
    range (a counterfactual of the claim below). Shapes as clipped_surrogate."""
    ratio = torch.exp(logps - old_logps)
    return torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages.unsqueeze(1)


def test_clipped_tokens_get_zero_gradient(surrogate=clipped_surrogate):
    # Ratios on both sides of the clip range, for a positive and a negative advantage.
    eps = 0.2
    ratios = torch.tensor([0.5, 0.79, 0.9, 1.0, 1.1, 1.21, 2.0], dtype=torch.float64)
    for a in (1.5, -1.5):
        logps = ratios.log().unsqueeze(0).clone().requires_grad_(True)  # old_logps = 0
        old = torch.zeros_like(logps)
        adv = torch.tensor([a], dtype=torch.float64)
        surrogate(logps, old, adv, eps).sum().backward()
        grad = logps.grad[0]
        # d(rho A)/d log pi = rho A where the unclipped term is active, else 0.
        clipped = (ratios > 1 + eps) if a > 0 else (ratios < 1 - eps)
        expected = torch.where(clipped, torch.zeros_like(ratios), ratios * a)
        torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)
        # The clip only removes the incentive to move further in the advantage's
        # direction: on the other side of the range the gradient is never zero.
        assert (grad[~clipped] != 0).all()
        assert clipped.sum() == 2, "two tokens out of range in the direction of A"


def test_kl_term_is_not_clipped():
    # A token far outside the clip range (rho = 2, A > 0) has no surrogate gradient,
    # but its KL gradient beta * d k3 / d log pi = beta * (1 - pi_ref/pi) remains.
    beta = 0.04
    logps = torch.tensor([[math.log(2.0)]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros_like(logps)
    ref = torch.tensor([[-0.5]], dtype=torch.float64)
    adv = torch.tensor([1.0], dtype=torch.float64)
    mask = torch.ones_like(old)
    grpo_loss(logps, old, ref, adv, mask, beta=beta).backward()
    expected = beta * (1 - math.exp(-0.5 - math.log(2.0)))
    assert abs(logps.grad.item() - expected) < 1e-15, logps.grad
