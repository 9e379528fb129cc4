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
    logp = torch.log_softmax(
        scale * torch.randn(K, generator=g, dtype=torch.float64), -1
    )
    ref = torch.log_softmax(
        scale * torch.randn(K, generator=g, dtype=torch.float64), -1
    )
    return logp, ref


def _variance(p, v):
    """Exact variance of v(y) under y ~ p (finite sums over K)."""
    return (p * (v - (p * v).sum()) ** 2).sum()


# Exact expectations are float64 sums over 8 categories: 1e-12 is rounding.
def test_k3_is_nonnegative_and_unbiased(estimator="k3", sampler_shift=0.0):
    # estimator: the one claimed non-negative and unbiased; sampler_shift: the samples
    # come from pi_old = softmax(log pi + shift z) instead of pi when it is not 0.
    z = torch.randn(8, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for seed in range(5):
        logp, ref = _pair(seed, scale=1.5)
        kl = exact_kl(logp, ref)
        est = kl_estimators(logp, ref)  # value of each estimator at every y
        p = torch.softmax(logp + sampler_shift * z, -1)  # the sampler: pi itself at 0
        # Exact expectations under y ~ pi (a finite sum over the K responses).
        assert abs((p * est[estimator]).sum() - kl) < 1e-12, f"{estimator} is biased"
        assert (est[estimator] >= 0).all(), f"{estimator} negative"
        assert abs((p * est["k1"]).sum() - kl) < 1e-12, "k1 is biased"
        assert abs((p * est["k2"]).sum() - kl) > 1e-4, "k2 is biased in general"
        assert (est["k2"] >= 0).all(), "k2 negative"
        assert (est["k1"] < 0).any(), "k1 should take negative values on some y"
        # Monte Carlo: the sample mean of k3 is within 4 standard errors of the KL.
        g = torch.Generator().manual_seed(100 + seed)
        y = torch.multinomial(p, 200_000, replacement=True, generator=g)
        k3 = est[estimator][y]
        se = k3.std() / len(k3) ** 0.5
        assert abs(k3.mean() - kl) < 4 * se, f"MC mean {k3.mean():.5f} vs KL {kl:.5f}"
        # The same samples check the exact variance used below: the sample variance
        # is within 4 of its standard errors, sd((k3 - mean)^2) / sqrt(n).
        dev2 = (k3 - k3.mean()) ** 2
        var_se = dev2.std() / len(k3) ** 0.5
        assert abs(dev2.mean() - _variance(p, est[estimator])) < 4 * var_se
    # exact_kl reduces the last dimension only: a batch of pairs, one KL per pair.
    pairs = [_pair(seed, scale=1.5) for seed in range(3)]
    logps, refs = (torch.stack(column) for column in zip(*pairs))
    batch = exact_kl(logps, refs)
    torch.testing.assert_close(
        batch, torch.stack([exact_kl(a, b) for a, b in pairs]), atol=1e-12, rtol=0
    )


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
        assert torch.equal(
            torch.stack(_pair(seed, scale=1.5)), torch.stack([far_logp, far_ref])
        )
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


def reinforce_kl_term(logps, ref_logps):
    """sg(log pi - log pi_ref) * log pi per sample: on samples from pi its expected
    gradient is grad KL(pi || pi_ref) (the score-function form; Tang & Munos 2025,
    arXiv:2506.09477). Any shape -> same shape. A counterfactual to k3 in the loss."""
    return (logps - ref_logps).detach() * logps


def k2_kl_term(logps, ref_logps):
    """k2 = (log pi - log pi_ref)^2 / 2 put into the loss. Its gradient,
    (log pi - log pi_ref) grad log pi, is the score-function form: on samples from pi
    its expectation is grad KL(pi || pi_ref). Any shape -> same shape. A
    counterfactual to k3 in the loss."""
    return 0.5 * (logps - ref_logps) ** 2


def test_qualifies_k3_in_loss_minimises_kl_to_reference(kl_term=k3_kl):
    # Claim: putting k3 into the loss (Eq. (3), arXiv:2402.03300) minimises
    # KL(pi || pi_ref). Checked exactly on three random pairs of categoricals.
    # kl_term: the per-sample loss term put into the loss (k3 in GRPO).
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
        (p * kl_term(logp, ref)).sum().backward()
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

    # Does not hold either once pi moves away from pi_old: with mu > 1 inner steps
    # (Algorithm 1), every step after the first scores samples drawn from
    # pi_old != pi_theta. Then E_{pi_old}[k3] is no longer KL(pi_theta || pi_ref);
    # weighting each sample by pi_theta / pi_old makes it unbiased again.
    logp_old, ref = _pair(3, scale=1.5)
    z = torch.randn(8, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    logp_new = torch.log_softmax(logp_old + 0.3 * z, -1)  # pi_theta after a step
    p_old = logp_old.exp()
    k3 = k3_kl(logp_new, ref)
    off_policy = (p_old * k3).sum()
    weighted = (p_old * (logp_new - logp_old).exp() * k3).sum()
    kl_new = exact_kl(logp_new, ref)
    assert abs(weighted - kl_new) < 1e-12
    assert abs(off_policy - kl_new) > 1e-3, (off_policy, kl_new)


# --8<-- [start:sequence_kl]
import torch


def local_kl_term(logps, ref_logps):
    """Per-token KL loss term with the right per-position gradient, summed over t by
    the caller: sg(log pi_t - log ref_t) * log pi_t. (batch, T) -> (batch, T).
    Its expected gradient at position t is grad KL(pi_t || ref_t) for the sampled
    prefix; how token t changes the later positions' KL is not in it."""
    return (logps - ref_logps).detach() * logps


def kl_to_go_term(logps, ref_logps):
    """The sequence-level form: token t is scored by the log-ratio summed over t and
    the later positions, sg(sum_{s>=t} log pi_s/ref_s) * log pi_t (Tang & Munos 2025,
    arXiv:2506.09477). (batch, T) -> (batch, T)."""
    log_ratio = (logps - ref_logps).detach()
    to_go = log_ratio.flip(1).cumsum(1).flip(1)  # sum over s >= t
    return to_go * logps


# --8<-- [end:sequence_kl]


def _two_token_model(seed, K=4):
    """All K^2 sequences (y1, y2) of a tabular two-token policy and reference:
    theta1 (K,) logits of y1, theta2 (K, K) logits of y2 given y1 (requires grad),
    ref (K^2, 2) and y1 (K^2,) per sequence."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64, generator=g)
    theta1 = (1.5 * torch.randn(K, **f64)).requires_grad_(True)
    theta2 = (1.5 * torch.randn(K, K, **f64)).requires_grad_(True)
    ref1 = torch.log_softmax(1.5 * torch.randn(K, **f64), -1)
    ref2 = torch.log_softmax(1.5 * torch.randn(K, K, **f64), -1)
    y1, y2 = (
        a.flatten()
        for a in torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij")
    )
    ref = torch.stack([ref1[y1], ref2[y1, y2]], 1)
    return theta1, theta2, ref, y1, y2


def _sequence_logps(theta1, theta2, y1, y2):
    """Per-token log-probs of every sequence, (K^2, 2)."""
    lp1, lp2 = torch.log_softmax(theta1, -1), torch.log_softmax(theta2, -1)
    return torch.stack([lp1[y1], lp2[y1, y2]], 1)


def test_qualifies_per_token_kl_sums_to_sequence_kl_gradient(per_token=local_kl_term):
    # Claim: summing a per-token KL loss over the positions of sampled sequences gives
    # the gradient of the sequence-level KL(pi || pi_ref). Exact expectations over
    # all 16 sequences of a two-token model (float64 sums: 1e-12 is rounding).
    for seed in (0, 1, 2):
        theta1, theta2, ref, y1, y2 = _two_token_model(seed)
        logps = _sequence_logps(theta1, theta2, y1, y2)
        weight = logps.sum(1).exp().detach()  # P(sequence); the sampler is not
        loss = (weight * per_token(logps, ref).sum(1)).sum()  # differentiated
        g_tok = torch.autograd.grad(loss, (theta1, theta2), retain_graph=True)
        seq_kl = (logps.sum(1).exp() * (logps - ref).sum(1)).sum()
        g_seq = torch.autograd.grad(seq_kl, (theta1, theta2))
        # Holds for the last position: each prefix's own conditional pi(y2 | y1)
        # gets exactly the sequence-level gradient.
        torch.testing.assert_close(g_tok[1], g_seq[1], atol=1e-12, rtol=0)
        # Does not hold for the first: the first token also steers which prefixes the
        # second position's KL is paid on, sum_y1 grad pi(y1) KL_2(y1). The per-token
        # loss leaves exactly this term out (a "partial gradient").
        lp1 = torch.log_softmax(theta1, -1)
        lp2, r2 = logps[:, 1].view(4, 4), ref[:, 1].view(4, 4)
        kl2 = (lp2.exp() * (lp2 - r2)).sum(1).detach()  # KL_2(y1), (K,)
        (future,) = torch.autograd.grad((lp1.exp() * kl2).sum(), theta1)
        torch.testing.assert_close(g_seq[0] - g_tok[0], future, atol=1e-12, rtol=0)
        assert future.abs().max() > 1e-2, (seed, future)
    # GRPO's own per-token k3 term has both problems: on the first token it gives the
    # swapped KL(ref_1 || pi_1) of that position alone, with no future term.
    theta1, theta2, ref, y1, y2 = _two_token_model(0)
    logps = _sequence_logps(theta1, theta2, y1, y2)
    weight = logps.sum(1).exp().detach()
    (g_k3,) = torch.autograd.grad((weight * k3_kl(logps, ref).sum(1)).sum(), theta1)
    r1 = ref[::4, 0]  # ref log-probs of y1 = 0..3
    swapped = (r1.exp() * (r1 - torch.log_softmax(theta1, -1))).sum()
    torch.testing.assert_close(
        g_k3, torch.autograd.grad(swapped, theta1)[0], atol=1e-12, rtol=0
    )
