"""GRPO next to PPO: the same clipped importance-sampled surrogate, another objective.

PPO:  L^CLIP = E_t[ min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t) ]
                                                          # Eq. (7), arXiv:1707.06347
PPO-RLHF puts the KL to pi_ref into the reward, per token
    r_t = r_phi(q, o_<=t) - beta log(pi_theta(o_t|q, o_<t) / pi_ref(o_t|q, o_<t))
                                                          # Eq. (2), arXiv:2402.03300
with pi_theta evaluated at rollout time (= pi_old) and held constant; the sequence-level
form is Eq. (2) of Ouyang et al. 2022, arXiv:2203.02155. A critic then gives A_t via
GAE. GRPO keeps L^CLIP but takes A from the group and adds beta * k3 to the loss
(Eq. (3), arXiv:2402.03300).
"""

# --8<-- [start:ppo_clip]
import torch


def ppo_clip_objective(
    ratio: torch.Tensor, advantage: torch.Tensor, eps: float = 0.2
) -> torch.Tensor:
    """PPO's per-sample clipped surrogate, to be maximised; ratio, advantage: same
    shape."""
    clipped = torch.clamp(ratio, 1 - eps, 1 + eps) * advantage
    return torch.min(ratio * advantage, clipped)  # Eq. (7), arXiv:1707.06347


# --8<-- [end:ppo_clip]


# --8<-- [start:kl_placement]
import torch

from snippets.grpo.loss import k3_kl


def kl_in_reward_gradient(logits, ref_logp, beta):
    """Expected policy gradient of the KL-shaped reward -beta log(pi_old/pi_ref)
    (PPO-RLHF), at pi = pi_old, for a categorical policy.
    logits: (K,), ref_logp: (K,) -> (K,). The shaped reward is a constant for the
    gradient (REINFORCE): sum_y grad pi(y) * r_kl(y)."""
    theta = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    r_kl = -beta * (logp - ref_logp).detach()
    (logp.exp() * r_kl).sum().backward()  # ascent direction
    return -theta.grad  # as a loss gradient


def kl_in_loss_gradient(logits, ref_logp, beta):
    """Expected gradient of the GRPO loss term beta * k3 on samples y ~ pi_old = pi.
    logits: (K,), ref_logp: (K,) -> (K,)."""
    theta = logits.detach().clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    p_old = logp.exp().detach()
    (p_old * beta * k3_kl(logp, ref_logp)).sum().backward()
    return theta.grad


# --8<-- [end:kl_placement]


# mean_rule_prompt_weight: a counterfactual of the page names it (kept, unused here)
from snippets.grpo.baseline import (  # noqa: F401
    grpo_prompt_weight,
    mean_rule_prompt_weight,
)


def test_qualifies_grpo_is_ppo_with_same_objective(prompt_weight=grpo_prompt_weight):
    from snippets.grpo.loss import clipped_surrogate, per_token_loss

    B, T = 6, 5
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(B, T, generator=g, dtype=torch.float64)  # log pi_theta
    old = logps + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logps + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    # Holds: importance ratio + clipping are PPO's, token for token (the same formula
    # written twice: this is an identity, GRPO reuses the surrogate unchanged).
    ppo = ppo_clip_objective(torch.exp(logps - old), adv.unsqueeze(1).expand(B, T))
    torch.testing.assert_close(
        clipped_surrogate(logps, old, adv), ppo, atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        per_token_loss(logps, old, ref, adv, beta=0.0), -ppo, atol=1e-12, rtol=0
    )

    # Does not hold (1): the advantage. With the critic's exact V, PPO's expected update
    # is grad sum_q J_q. GRPO's is sum_q w(p_q, G) grad J_q: dividing by the group std
    # weighs each prompt by a factor that depends on its success rate p_q (the
    # "question-level difficulty bias" of Dr. GRPO, arXiv:2503.20783), so the expected
    # update is not the gradient of the same objective. (Closed form of w and its Monte
    # Carlo check: snippets/grpo/baseline.py.)
    for G in (4, 8, 16):
        # the further p is from 1/2 (too easy or too hard), the larger the weight
        w = [prompt_weight(p, G) for p in (0.5, 0.2, 0.05)]
        assert w[0] < w[1] < w[2], (G, w)

    # Does not hold (2): the KL sits elsewhere and pulls differently. On a categorical
    # policy, the KL-in-reward gradient is beta * grad KL(pi || pi_ref), the
    # k3-in-loss gradient is beta * grad KL(pi_ref || pi) (arguments swapped). Both
    # vanish at pi = pi_ref only. Exact expectations: 1e-12 is float64 rounding.
    g = torch.Generator().manual_seed(0)
    logits = 1.5 * torch.randn(8, generator=g, dtype=torch.float64)
    ref_logp = torch.log_softmax(
        1.5 * torch.randn(8, generator=g, dtype=torch.float64), -1
    )
    beta = 0.04
    theta = logits.clone().requires_grad_(True)
    lp = torch.log_softmax(theta, -1)
    (beta * (lp.exp() * (lp - ref_logp)).sum()).backward()
    in_reward = kl_in_reward_gradient(logits, ref_logp, beta)
    torch.testing.assert_close(in_reward, theta.grad, atol=1e-12, rtol=0)
    theta.grad = None
    lp = torch.log_softmax(theta, -1)
    (beta * (ref_logp.exp() * (ref_logp - lp)).sum()).backward()
    in_loss = kl_in_loss_gradient(logits, ref_logp, beta)
    torch.testing.assert_close(in_loss, theta.grad, atol=1e-12, rtol=0)
    diff = (in_reward - in_loss).abs().max()
    assert diff > 1e-3, f"the two placements should differ, max diff {diff}"
    zero = (
        kl_in_loss_gradient(ref_logp, ref_logp, beta).abs().max()
        + kl_in_reward_gradient(ref_logp, ref_logp, beta).abs().max()
    )
    assert zero < 1e-12
