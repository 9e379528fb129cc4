"""KL between the policy's and the reference model's Gaussian step (arXiv:2505.05470,
Sec. 4, "From ODE to SDE", the unnumbered closed form after Eq. (9)).

Both steps are N(mean, s^2 I) with the same s = sigma_t sqrt(|dt|) (the noise does not
depend on the network), so the KL is closed form:
    KL = |mean_theta - mean_ref|^2 / (2 s^2)
       = |dt| / 2 * (sigma_t (1 - t) / (2t) + 1 / sigma_t)^2 * |v_theta - v_ref|^2.

The reference implementation (github.com/yifan123/flow_grpo, scripts/train_sd3.py)
computes instead the per-dimension MEAN of (mean - ref_mean)^2 over 2 sigma_t^2, without
|dt|: that is KL * |dt| / D.
"""

# --8<-- [start:step_kl]
import torch


def step_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std, sigma, sigma_next):
    """KL(N(mean, s^2 I) || N(ref_mean, s^2 I)), s = std * sqrt(sigma - sigma_next).
    mean, ref_mean: (batch, *dims); std, sigma, sigma_next broadcastable.
    returns (batch,)."""
    var = std**2 * (sigma - sigma_next)
    kl = (mean - ref_mean) ** 2 / (2 * var)
    return kl.reshape(kl.shape[0], -1).sum(1)  # sum over non-batch dims


# --8<-- [end:step_kl]


def step_kl_mean_over_dims(mean, ref_mean, std, sigma, sigma_next):
    """step_kl averaged (not summed) over the non-batch dims: a counterfactual."""
    return step_kl(mean, ref_mean, std, sigma, sigma_next) / mean[0].numel()


def test_step_kl_matches_torch_and_the_velocity_form(kl_fn=step_kl):
    from snippets.flow_grpo.sde import sde_step_with_logprob

    g = torch.Generator().manual_seed(0)
    x, v, v_ref = (
        torch.randn(5, 3, 4, generator=g, dtype=torch.float64) for _ in range(3)
    )
    t, t_next = 0.6, 0.5
    _, _, mean, std = sde_step_with_logprob(v, x, t, t_next)
    _, _, ref_mean, _ = sde_step_with_logprob(v_ref, x, t, t_next)
    kl = kl_fn(mean, ref_mean, std, t, t_next)
    s = std * (t - t_next) ** 0.5
    N = lambda m: torch.distributions.Independent(
        torch.distributions.Normal(m, s.expand_as(m)), 2
    )
    expected = torch.distributions.kl_divergence(N(mean), N(ref_mean))
    torch.testing.assert_close(kl, expected, atol=1e-10, rtol=0)
    # The paper's velocity form of the same quantity.
    sig = 0.7 * (t / (1 - t)) ** 0.5
    dv2 = (v - v_ref).pow(2).flatten(1).sum(1)
    paper = (t - t_next) / 2 * (sig * (1 - t) / (2 * t) + 1 / sig) ** 2 * dv2
    torch.testing.assert_close(kl, paper, atol=1e-10, rtol=0)


def test_kl_divides_each_sample_by_its_own_sigma():
    # A batch can mix steps at different times (train.py scores every step of every
    # trajectory at once): each sample's KL is that of its own step, computed alone.
    from snippets.flow_grpo.sde import sde_step_with_logprob

    g = torch.Generator().manual_seed(2)
    x, v, v_ref = (
        torch.randn(4, 3, 5, generator=g, dtype=torch.float64) for _ in range(3)
    )
    t = torch.tensor([0.8, 0.6, 0.4, 0.2], dtype=torch.float64)
    t_next = t - torch.tensor([0.1, 0.05, 0.2, 0.1], dtype=torch.float64)
    _, _, mean, std = sde_step_with_logprob(v, x, t, t_next)
    _, _, ref_mean, _ = sde_step_with_logprob(v_ref, x, t, t_next)
    kl = step_kl(mean, ref_mean, std, t[:, None, None], t_next[:, None, None])
    ref = reference_kl(mean, ref_mean, std)
    assert kl.shape == ref.shape == (4,)
    for i in range(4):
        one = lambda a: sde_step_with_logprob(
            a[i : i + 1], x[i : i + 1], t[i].item(), t_next[i].item()
        )
        _, _, m_i, s_i = one(v)
        _, _, r_i, _ = one(v_ref)
        alone = step_kl(m_i, r_i, s_i, t[i].item(), t_next[i].item())
        torch.testing.assert_close(kl[i : i + 1], alone, atol=0, rtol=1e-12)
        torch.testing.assert_close(
            ref[i : i + 1], reference_kl(m_i, r_i, s_i), atol=0, rtol=1e-12
        )


# --8<-- [start:reference_kl]
import torch


def reference_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std) -> torch.Tensor:
    """The KL term as the reference computes it (scripts/train_sd3.py): the
    per-dimension MEAN of (mean - ref_mean)^2, over 2 std^2 with std = sigma_t
    (no |dt|). (batch,).
    Compared with step_kl it is KL * |dt| / D."""
    d2 = ((mean - ref_mean) ** 2).reshape(mean.shape[0], -1).mean(1)
    return d2 / (2 * torch.as_tensor(std).reshape(-1) ** 2)


# --8<-- [end:reference_kl]


def test_reference_kl_is_the_true_kl_times_dt_over_d(beta_times_dt=True):
    from snippets.flow_grpo.sde import sde_step_with_logprob
    from snippets.grpo.loss import clipped_surrogate

    g = torch.Generator().manual_seed(1)
    x, v_old, v_ref, noise = (
        torch.randn(8, 4, 6, 6, generator=g, dtype=torch.float64) for _ in range(4)
    )
    D, t, t_next = 4 * 6 * 6, 0.6, 0.5
    adv = torch.randn(8, generator=g, dtype=torch.float64)
    x_next, lp_old, _, _ = sde_step_with_logprob(v_old, x, t, t_next, noise=noise)
    _, _, ref_mean, _ = sde_step_with_logprob(v_ref, x, t, t_next)
    # (1) The identity: the reference's KL is the true step KL times |dt| / D.
    _, _, mean, std = sde_step_with_logprob(v_old, x, t, t_next)
    true_kl = step_kl(mean, ref_mean, std, t, t_next)
    torch.testing.assert_close(
        reference_kl(mean, ref_mean, std),
        true_kl * (t - t_next) / D,
        atol=1e-12,
        rtol=1e-10,
    )

    # (2) What it does to beta. Both losses at the start of an update (new = old, so
    # every ratio is 1 and no clip is active):
    #   reference: -A r^(1/D) + beta_ref * KL |dt| / D   (log-prob, KL: mean over dims)
    #   paper:     -A r       + beta     * KL            (log-prob, KL: sum over dims)
    # Their gradients in the velocity differ by exactly 1/D when beta = beta_ref |dt|.
    def grad(reference: bool, beta: float):
        v = v_old.clone().requires_grad_(True)
        _, lp, m, s = sde_step_with_logprob(v, x, t, t_next, prev_sample=x_next)
        if reference:
            lp_new, lp_ref, eps = lp / D, lp_old / D, 1e-4
            kl = reference_kl(m, ref_mean, s)
        else:
            lp_new, lp_ref, eps = lp, lp_old, 0.2
            kl = step_kl(m, ref_mean, s, t, t_next)
        surrogate = clipped_surrogate(lp_new[:, None], lp_ref[:, None], adv, eps)[:, 0]
        (-surrogate + beta * kl).mean().backward()
        return v.grad

    beta_ref = 0.04  # config/grpo.py (SD3.5: GenEval, OCR)
    g_ref = grad(True, beta_ref)
    # beta_times_dt = False: the same number for beta in both losses
    beta = beta_ref * (t - t_next) if beta_times_dt else beta_ref
    torch.testing.assert_close(g_ref, grad(False, beta) / D, atol=1e-12, rtol=1e-9)
    # ...and not with the same number in both places.
    assert not torch.allclose(g_ref, grad(False, beta_ref) / D, rtol=1e-2)
