"""The KL term of GRPO: the k3 estimator, checked against the exact KL of categoricals.

Estimators of KL(pi || pi_ref) from samples y ~ pi, with ratio = pi_ref(y) / pi(y)
(Schulman 2020, "Approximating KL divergence"; k3 is Eq. (4) of arXiv:2402.03300):
    k1 = -log ratio                 unbiased, can be negative
    k2 = (log ratio)^2 / 2          biased, non-negative
    k3 = ratio - log ratio - 1      unbiased, non-negative (log x <= x - 1)
"""

# --8<-- [start:estimators]
import torch
from snippets.grpo.loss import k3_kl


def kl_estimators(logp, ref_logp):
    """Per-sample k1, k2, k3 for samples y ~ pi.
    logp, ref_logp: any shape -> dict of tensors of the same shape."""
    log_ratio = ref_logp - logp
    return {"k1": -log_ratio, "k2": 0.5 * log_ratio**2, "k3": k3_kl(logp, ref_logp)}


def exact_kl(logp_all, ref_logp_all):
    """KL(pi || pi_ref) = sum_y pi(y) log(pi(y) / pi_ref(y)); (..., K) -> (...)."""
    return (logp_all.exp() * (logp_all - ref_logp_all)).sum(-1)
# --8<-- [end:estimators]


def _pair(seed, scale, K=8):
    g = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(scale * torch.randn(K, generator=g, dtype=torch.float64),
                             -1)
    ref = torch.log_softmax(scale * torch.randn(K, generator=g, dtype=torch.float64),
                            -1)
    return logp, ref


def _variance(p, v):
    """Exact variance of v(y) under y ~ p (finite sums over K)."""
    return (p * (v - (p * v).sum()) ** 2).sum()


# Exact expectations are float64 sums over 8 categories: 1e-12 is rounding.
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
        assert (est["k2"] >= 0).all(), "k2 negative"
        assert (est["k1"] < 0).any(), "k1 should take negative values on some y"
        # Monte Carlo: the sample mean of k3 is within 4 standard errors of the KL.
        g = torch.Generator().manual_seed(100 + seed)
        y = torch.multinomial(p, 200_000, replacement=True, generator=g)
        k3 = est["k3"][y]
        se = k3.std() / len(k3) ** 0.5
        assert abs(k3.mean() - kl) < 4 * se, f"MC mean {k3.mean():.5f} vs KL {kl:.5f}"
        # The same samples check the exact variance used below: the sample variance
        # is within 4 of its standard errors, sd((k3 - mean)^2) / sqrt(n).
        dev2 = (k3 - k3.mean()) ** 2
        var_se = dev2.std() / len(k3) ** 0.5
        assert abs(dev2.mean() - _variance(p, est["k3"])) < 4 * var_se
    # exact_kl reduces the last dimension only: a batch of pairs, one KL per pair.
    pairs = [_pair(seed, scale=1.5) for seed in range(3)]
    logps, refs = (torch.stack(column) for column in zip(*pairs))
    batch = exact_kl(logps, refs)
    torch.testing.assert_close(batch, torch.stack([exact_kl(a, b) for a, b in pairs]),
                               atol=1e-12, rtol=0)


def test_k3_variance_is_low_only_when_policies_are_close():
    # Close policies, log pi_ref = log pi + eps z - const: the log-ratio is
    # x = eps z~ + O(eps^2) with z~ = z - E_pi z, so Var k1 = eps^2 Var z~ and, as
    # k3 = x^2/2 + O(x^3), Var k3 = eps^4 Var(z~^2) / 4. Their ratio shrinks like eps^2,
    # towards eps^2 L with L = Var(z~^2) / (4 Var z~), up to an O(eps) correction.
    logp, _ = _pair(0, scale=1.0)
    p = logp.exp()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, generator=g, dtype=torch.float64)
    zt = z - (p * z).sum()
    limit = (_variance(p, zt**2) / (4 * _variance(p, zt))).item()
    errors = []
    for eps in (0.1, 0.05, 0.025):
        est = kl_estimators(logp, torch.log_softmax(logp + eps * z, -1))
        ratio = (_variance(p, est["k3"]) / _variance(p, est["k1"])).item()
        errors.append(abs(ratio / eps**2 - limit) / limit)
        assert errors[-1] < eps, f"eps {eps}: ratio / eps^2 = {ratio / eps**2}, {limit}"
    assert errors[0] > errors[1] > errors[2], errors
    # Far apart (random pairs at scale 1.5): the ratio term of k3 explodes; in 4 of
    # these 5 pairs k3 is the noisier estimator.
    noisier = 0
    for seed in range(5):
        far_logp, far_ref = _pair(seed, scale=1.5)
        # seeded: the pair (and so the count below) depends on the seed alone
        assert torch.equal(torch.stack(_pair(seed, scale=1.5)),
                           torch.stack([far_logp, far_ref]))
        est = kl_estimators(far_logp, far_ref)
        q = far_logp.exp()
        noisier += int(_variance(q, est["k3"]) > _variance(q, est["k1"]))
    assert noisier == 4, noisier


def test_k2_bias_is_third_order_in_the_log_ratio():
    # k2 = x^2/2 and k3 = x^2/2 + x^3/6 + O(x^4) share their second-order term, and
    # E[k3] = KL = O(eps^2) for log pi_ref = log pi + eps z - const. So E[k2] - KL is
    # O(eps^3): the relative bias of k2 is O(eps), below eps here and falling with eps.
    logp, _ = _pair(0, scale=1.0)
    p = logp.exp()
    z = torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    biases = []
    for eps in (0.1, 0.05, 0.025):
        ref = torch.log_softmax(logp + eps * z, -1)
        kl = exact_kl(logp, ref)
        biases.append(((p * kl_estimators(logp, ref)["k2"]).sum() - kl).abs() / kl)
        assert biases[-1] < eps, f"eps {eps}: relative bias {biases[-1]:.4f}"
    assert biases[0] > biases[1] > biases[2], biases


def test_qualifies_k3_in_loss_minimises_kl_to_reference():
    # Claim: putting k3 into the loss (Eq. (3), arXiv:2402.03300) minimises
    # KL(pi || pi_ref). Checked exactly on three random pairs of categoricals.
    for seed in (3, 5, 8):
        logp0, ref = _pair(seed, scale=1.5)
        p = logp0.exp()
        # Holds for the VALUE: on samples y ~ pi, k3 is unbiased for KL(pi || pi_ref).
        assert abs((p * k3_kl(logp0, ref)).sum() - exact_kl(logp0, ref)) < 1e-12
        # Does not hold for the GRADIENT: differentiated as a loss term on samples from
        # pi, E_pi[grad k3] = sum_y pi_ref grad(-log pi) = grad KL(pi_ref || pi), the
        # KL with its arguments swapped (Tang & Munos 2025, arXiv:2506.09477).
        # Convention: KL(pi || pi_ref) is the "reverse" (mode-seeking) KL,
        # KL(pi_ref || pi) the "forward" (mass-covering) one.
        theta = logp0.clone().requires_grad_(True)  # logits of pi
        logp = torch.log_softmax(theta, -1)
        # E_{y~pi}[grad k3(y)]: pi is the sampler, not differentiated
        (p * k3_kl(logp, ref)).sum().backward()
        g_k3 = theta.grad.clone()
        theta.grad = None
        exact_kl(torch.log_softmax(theta, -1), ref).backward()
        g_pi_ref = theta.grad.clone()  # grad KL(pi || pi_ref), what Eq. (3) writes
        theta.grad = None
        exact_kl(ref, torch.log_softmax(theta, -1)).backward()
        g_ref_pi = theta.grad.clone()  # grad KL(pi_ref || pi)
        torch.testing.assert_close(g_k3, g_ref_pi, atol=1e-12, rtol=0)
        gap = (g_k3 - g_pi_ref).abs().max()
        assert gap > 1e-2, f"seed {seed}: should differ from grad KL(pi || pi_ref)"
