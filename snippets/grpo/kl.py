"""The KL term of GRPO: the k3 estimator, checked against the exact KL of two categoricals.

Estimators of KL(pi || pi_ref) from samples y ~ pi, with ratio = pi_ref(y) / pi(y)
(Schulman, "Approximating KL divergence", 2020; k3 is Eq. (4) of arXiv:2402.03300):
    k1 = -log ratio                 unbiased, can be negative
    k2 = (log ratio)^2 / 2          biased, non-negative
    k3 = ratio - log ratio - 1      unbiased, non-negative (log x <= x - 1)
"""

# --8<-- [start:estimators]
import torch
from snippets.grpo.loss import k3_kl


def kl_estimators(logp, ref_logp):
    """Per-sample k1, k2, k3 for samples y ~ pi. logp, ref_logp: any shape -> dict, same shape."""
    log_ratio = ref_logp - logp
    return {"k1": -log_ratio, "k2": 0.5 * log_ratio**2, "k3": k3_kl(logp, ref_logp)}


def exact_kl(logp_all, ref_logp_all):
    """KL(pi || pi_ref) = sum_y pi(y) log(pi(y) / pi_ref(y)); inputs (..., K) -> (...)."""
    return (logp_all.exp() * (logp_all - ref_logp_all)).sum(-1)
# --8<-- [end:estimators]


def _pair(seed, K=8, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(scale * torch.randn(K, generator=g, dtype=torch.float64), -1)
    ref = torch.log_softmax(scale * torch.randn(K, generator=g, dtype=torch.float64), -1)
    return logp, ref


def test_k3_is_nonnegative_and_unbiased():
    torch.set_num_threads(1)
    for seed in range(5):
        logp, ref = _pair(seed, scale=1.5)
        kl = exact_kl(logp, ref)
        est = kl_estimators(logp, ref)  # value of each estimator at every y
        p = logp.exp()
        # Exact expectations under y ~ pi (a finite sum over the K responses).
        assert abs((p * est["k3"]).sum() - kl) < 1e-12, "k3 is biased"
        assert abs((p * est["k1"]).sum() - kl) < 1e-12, "k1 is biased"
        assert abs((p * est["k2"]).sum() - kl) > 1e-4, "k2 is biased in general"
        assert (est["k3"] >= 0).all(), "k3 negative"
        assert (est["k1"] < 0).any(), "k1 should take negative values on some y"
        # Monte Carlo: the sample mean of k3 is within 4 standard errors of the exact KL.
        g = torch.Generator().manual_seed(100 + seed)
        y = torch.multinomial(p, 200_000, replacement=True, generator=g)
        k3 = est["k3"][y]
        se = k3.std() / len(k3) ** 0.5
        assert abs(k3.mean() - kl) < 4 * se, f"MC mean {k3.mean():.5f} vs KL {kl:.5f}"


def test_k3_variance_is_low_only_when_policies_are_close():
    # Exact variances under y ~ pi. Close policies (the regime of a KL-penalised run):
    # k3 is far less noisy than k1. Far apart: k3's ratio term explodes.
    def variances(logp, ref):
        p = logp.exp()
        est = kl_estimators(logp, ref)
        return {k: (p * (v - (p * v).sum()) ** 2).sum().item() for k, v in est.items()}

    logp, _ = _pair(0)
    g = torch.Generator().manual_seed(1)
    close = torch.log_softmax(logp + 0.1 * torch.randn(8, generator=g, dtype=torch.float64), -1)
    v = variances(logp, close)
    assert v["k3"] < 0.05 * v["k1"], v
    far_logp, far_ref = _pair(0, scale=1.5)
    v = variances(far_logp, far_ref)
    assert v["k3"] > v["k1"], v


def test_qualifies_k3_in_loss_minimises_kl_to_reference():
    # Claim: putting k3 into the loss (Eq. (3), arXiv:2402.03300) minimises KL(pi || pi_ref).
    logp0, ref = _pair(3, scale=1.5)
    p = logp0.exp()
    # Holds for the VALUE: on samples y ~ pi, k3 is an unbiased estimate of KL(pi || pi_ref).
    assert abs((p * k3_kl(logp0, ref)).sum() - exact_kl(logp0, ref)) < 1e-12
    # Does not hold for the GRADIENT: differentiated as a loss term on samples from pi,
    # E_pi[grad k3] = sum_y pi_ref grad(-log pi) = grad KL(pi_ref || pi), the KL with its
    # arguments swapped (Tang & Munos 2025, arXiv:2506.09477). Convention: KL(pi || pi_ref)
    # is the "reverse" (mode-seeking) KL, KL(pi_ref || pi) the "forward" (mass-covering) one.
    theta = logp0.clone().requires_grad_(True)  # logits of pi
    logp = torch.log_softmax(theta, -1)
    (p * k3_kl(logp, ref)).sum().backward()  # E_{y~pi}[grad k3(y)], pi not differentiated as sampler
    g_k3 = theta.grad.clone()
    theta.grad = None
    exact_kl(torch.log_softmax(theta, -1), ref).backward()
    g_pi_ref = theta.grad.clone()  # grad KL(pi || pi_ref), what Eq. (3) writes
    theta.grad = None
    exact_kl(ref, torch.log_softmax(theta, -1)).backward()
    g_ref_pi = theta.grad.clone()  # grad KL(pi_ref || pi)
    torch.testing.assert_close(g_k3, g_ref_pi, atol=1e-12, rtol=0)
    assert (g_k3 - g_pi_ref).abs().max() > 1e-2, "should differ from grad KL(pi || pi_ref)"
