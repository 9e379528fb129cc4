"""Toy DPO: a categorical policy over a handful of responses per prompt, preferences
drawn from a known reward through Bradley-Terry, trained with the DPO loss, compared
with the closed-form optimum pi* = pi_ref exp(r / beta) / Z (Eq. (4), arXiv:2305.18290).

Tolerances come from the sampling error of the preference data (section
sampling_error), not from the measured results.

Run: python -m snippets.dpo.toy
"""

import functools
import math
import time

import pytest

# --8<-- [start:make_pairs]
import torch

from snippets.dpo.derivation import implicit_reward


def make_pairs(ref_logits, reward, pairs_per_prompt, generator):
    """Sample y1, y2 ~ pi_ref(.|x) independently and label them with Bradley-Terry:
    y1 is preferred with probability sigma(r(x, y1) - r(x, y2)).
                                                          # Eq. (1), arXiv:2305.18290
    ref_logits, reward: (num_prompts, num_responses).
    returns prompt, chosen, rejected: (num_prompts * pairs_per_prompt,) long tensors.
    """
    P, K = ref_logits.shape
    probs = torch.softmax(ref_logits, -1)
    n = pairs_per_prompt
    y1 = torch.multinomial(probs, n, replacement=True, generator=generator)
    y2 = torch.multinomial(probs, n, replacement=True, generator=generator)
    prompt = torch.arange(P).unsqueeze(1).expand(P, n)
    p_first = torch.sigmoid(reward.gather(1, y1) - reward.gather(1, y2))
    u = torch.rand(p_first.shape, generator=generator, dtype=p_first.dtype)
    first_wins = u < p_first
    chosen = torch.where(first_wins, y1, y2)
    rejected = torch.where(first_wins, y2, y1)
    return prompt.flatten(), chosen.flatten(), rejected.flatten()


# --8<-- [end:make_pairs]


# --8<-- [start:train_dpo]
import torch

from snippets.dpo.loss import dpo_loss


def train_dpo(
    ref_logits, prompt, chosen, rejected, beta, steps=300, lr=0.1, init_logits=None
):
    """Full-batch DPO on a free categorical policy (one logit per prompt and response).
    ref_logits: (P, K) frozen reference; prompt, chosen, rejected: (N,) pair indices.
    The policy starts at pi_ref unless init_logits (P, K) is given.
    returns logits (P, K)."""
    ref_logp = torch.log_softmax(ref_logits, -1)
    # The mean loss over the N pairs depends only on how often each (prompt, chosen,
    # rejected) triple occurs: P K^2 terms, each weighted by its share of the pairs.
    P, K = ref_logits.shape
    counts = torch.bincount((prompt * K + chosen) * K + rejected, minlength=P * K * K)
    weight = counts.to(ref_logits.dtype) / len(prompt)
    triple = torch.arange(P * K * K)
    x, y_w, y_l = triple // (K * K), triple // K % K, triple % K
    start = ref_logits if init_logits is None else init_logits
    logits = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        logp = torch.log_softmax(logits, -1)
        losses, _, _ = dpo_loss(
            logp[x, y_w], logp[x, y_l], ref_logp[x, y_w], ref_logp[x, y_l], beta=beta
        )
        opt.zero_grad()
        (weight * losses).sum().backward()  # = the mean over the N pairs
        opt.step()
    return logits.detach()


# --8<-- [end:train_dpo]


# --8<-- [start:metrics]
import torch


def total_variation(p, q):
    """TV(p, q) = 1/2 sum_y |p(y) - q(y)| per row; p, q: (P, K) -> (P,)."""
    return 0.5 * (p - q).abs().sum(-1)


def kl_categorical(p, q):
    """KL(p || q) = sum_y p log(p / q) per row; p, q: (P, K) probabilities -> (P,)."""
    return (p * (p.log() - q.log())).sum(-1)


# --8<-- [end:metrics]


# --8<-- [start:sampling_error]
import math

import torch


def implicit_reward_covariance(ref_logits, reward, pairs_per_prompt):
    """Sampling covariance of the implicit reward r_hat = beta log pi/pi_ref learnt from
    n Bradley-Terry pairs per prompt, (P, K, K), up to a per-prompt constant.

    A free categorical policy makes r_hat a free parameter per response, so DPO on pairs
    is maximum likelihood for Bradley-Terry in r_hat (Eq. (6), arXiv:2305.18290); its
    error is asymptotically N(0, F^+ / n) with F the Fisher information of one pair.
    For (y1, y2) ~ pi_ref x pi_ref, F = sum_{i != j} w_ij (e_i - e_j)(e_i - e_j)^T with
    w_ij = pi_ref(i) pi_ref(j) s_ij (1 - s_ij), s_ij = sigma(r_i - r_j): twice the graph
    Laplacian of w. Its null space (constant shifts) is dropped by the pseudo-inverse.
    """
    pi = torch.softmax(ref_logits, -1)
    s = torch.sigmoid(reward.unsqueeze(2) - reward.unsqueeze(1))  # (P, K, K)
    w = pi.unsqueeze(2) * pi.unsqueeze(1) * s * (1 - s)
    laplacian = torch.diag_embed(w.sum(-1)) - w
    return torch.linalg.pinv(2 * laplacian) / pairs_per_prompt


def expected_tv_error(ref_logits, reward, beta, pairs_per_prompt):
    """First-order expected TV(pi_DPO, pi*) from sampling error alone, (P,).
    log pi - log pi* = delta / beta + const with delta the implicit-reward error, so
    pi(y) - pi*(y) ~ pi*(y) (e_y - pi*) . delta / beta, and E|N(0, s^2)| = s sqrt(2/pi).
    """
    from snippets.dpo.derivation import optimal_policy

    cov = implicit_reward_covariance(ref_logits, reward, pairs_per_prompt) / beta**2
    pi_star = optimal_policy(ref_logits, reward, beta)  # (P, K)
    eye = torch.eye(pi_star.shape[1], dtype=pi_star.dtype)
    m = eye - pi_star.unsqueeze(1)  # rows e_y - pi*, (P, K, K)
    sd = torch.einsum("pyi,pij,pyj->py", m, cov, m).sqrt()
    return 0.5 * (pi_star * sd).sum(-1) * math.sqrt(2 / math.pi)


# --8<-- [end:sampling_error]


def setup(seed=0, prompts=4, responses=6):
    """A fixed problem: reference logits and rewards, each (prompts, responses)."""
    g = torch.Generator().manual_seed(seed)
    ref_logits = 0.5 * torch.randn(prompts, responses, generator=g, dtype=torch.float64)
    reward = torch.randn(prompts, responses, generator=g, dtype=torch.float64)
    return ref_logits, reward


def experiment(
    beta=1.0, pairs_per_prompt=20000, steps=300, seed=0, labels="bradley_terry"
):
    """The experiment of the page: a dict of tensors and the wall time. Problem from
    setup(seed), preference data from seed + 1. labels="reversed" swaps chosen and
    rejected in every pair (preference data that says the opposite)."""
    from snippets.dpo.derivation import optimal_policy

    if labels not in ("bradley_terry", "reversed"):
        raise ValueError(f"labels: 'bradley_terry' or 'reversed', not {labels!r}")
    t0 = time.perf_counter()
    ref_logits, reward = setup(seed)
    g = torch.Generator().manual_seed(seed + 1)
    prompt, chosen, rejected = make_pairs(ref_logits, reward, pairs_per_prompt, g)
    if labels == "reversed":
        chosen, rejected = rejected, chosen
    logits = train_dpo(ref_logits, prompt, chosen, rejected, beta, steps=steps)
    pi = torch.softmax(logits, -1)
    pi_star = optimal_policy(ref_logits, reward, beta)
    tol = TV_FACTOR * expected_tv_error(ref_logits, reward, beta, pairs_per_prompt)
    return dict(
        pi=pi,
        pi_star=pi_star,
        pi_ref=torch.softmax(ref_logits, -1),
        reward=reward,
        logits=logits,
        ref_logits=ref_logits,
        tv=total_variation(pi, pi_star),
        tv_tol=tol,
        seconds=time.perf_counter() - t0,
    )


# One run per setting, shared by the tests and the notebook.
run = functools.lru_cache(maxsize=None)(experiment)


def setup_module():
    """pytest calls this before the module's tests: each test session computes its
    runs anew. mutmut runs the suite once, then forks a process per mutant; a cache
    filled before the fork would hide the mutant."""
    run.cache_clear()


# TV is a sum of |Gaussian| terms: its standard deviation is 0.35-0.6 of its mean here,
# and under the Gaussian approximation P(TV > 3 E[TV]) < 0.6% per prompt (simulated for
# these problems, beta 0.5-2), so 3 x the expected sampling TV is the tolerance.
TV_FACTOR = 3.0
# Implicit-reward error per response: 5 standard errors (24 coordinates per problem:
# a Gaussian exceeds 5 sd with probability 6e-7 each).
Z_TOL = 5.0
SEEDS = (0, 1, 2)  # three problems, each with its own preference data
# The page's beta, and one beta != 1: at beta = 1, r / beta, r * beta and r coincide,
# so a misplaced beta would go unseen.
BETAS = (1.0, 0.5)


def test_dpo_recovers_closed_form_optimum(overrides=()):
    # overrides: (name, value) pairs for experiment(), none for the page's runs.
    for seed in SEEDS:
        for beta in BETAS:
            out = run(seed=seed, beta=beta, **dict(overrides))
            tv, tol = out["tv"], out["tv_tol"]
            assert (tv < tol).all(), f"seed {seed}, beta {beta}: TV {tv} >= {tol}"
            # The test could fail: the reference itself is far from pi*.
            start = total_variation(out["pi_ref"], out["pi_star"])
            assert (start > 3 * tol).all(), f"seed {seed}: pi_ref already near pi*"


def reward_without_reference(policy_logp, ref_logp, beta):
    """beta log pi(y|x): the "implicit reward" with log pi_ref left out (a
    counterfactual of Eq. (5), arXiv:2305.18290). Any shape -> same shape."""
    return beta * policy_logp


def reward_without_beta(policy_logp, ref_logp, beta):
    """log pi(y|x) / pi_ref(y|x): the implicit reward without its factor beta (a
    counterfactual of Eq. (5), arXiv:2305.18290). Any shape -> same shape."""
    return policy_logp - ref_logp


def test_implicit_reward_of_trained_policy_recovers_reward_differences(
    reward_of=implicit_reward,
):
    # reward_of: how the reward is read off the trained policy (Eq. (5)).
    def centred(r):  # the per-prompt constant beta log Z(x) is invisible to pairs
        return r - r.mean(1, keepdim=True)

    for seed in SEEDS:
        for beta in BETAS:  # the reward scale is r, whatever beta is
            out = run(seed=seed, beta=beta)
            ref_logp = torch.log_softmax(out["ref_logits"], -1)
            r_hat = reward_of(torch.log_softmax(out["logits"], -1), ref_logp, beta)
            err = centred(r_hat) - centred(out["reward"])
            cov = implicit_reward_covariance(out["ref_logits"], out["reward"], 20000)
            se = cov.diagonal(dim1=1, dim2=2).sqrt()
            z = (err / se).abs().max().item()
            assert z < Z_TOL, f"seed {seed}, beta {beta}: off by {z:.1f} std errors"


def test_train_dpo_weights_triples_by_their_share_of_the_pairs():
    # Counting each (prompt, chosen, rejected) triple once, weighted by its share, is
    # the plain mean over the pairs: the same Adam trajectory (float64 rounding, 1e-10).
    ref_logits, reward = setup(seed=3, prompts=3, responses=4)
    prompt, chosen, rejected = make_pairs(
        ref_logits, reward, 50, torch.Generator().manual_seed(0)
    )
    ref_logp = torch.log_softmax(ref_logits, -1)
    logits = ref_logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(20):
        logp = torch.log_softmax(logits, -1)
        losses, _, _ = dpo_loss(
            logp[prompt, chosen],
            logp[prompt, rejected],
            ref_logp[prompt, chosen],
            ref_logp[prompt, rejected],
            beta=0.5,
        )
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
    torch.testing.assert_close(
        train_dpo(ref_logits, prompt, chosen, rejected, 0.5, steps=20),
        logits.detach(),
        atol=1e-10,
        rtol=0,
    )


def test_sampling_error_model():
    # The tolerances above rest on implicit_reward_covariance and expected_tv_error;
    # check both against independent computations on problem 0.
    import torch.nn.functional as F

    from snippets.dpo.derivation import optimal_policy

    ref_logits, reward = setup()
    n = 20000
    cov = implicit_reward_covariance(ref_logits, reward, n)
    pi = torch.softmax(ref_logits, -1)
    for p in range(ref_logits.shape[0]):
        # Fisher information = Hessian of the expected Bradley-Terry NLL of one pair
        # (y1, y2) ~ pi_ref x pi_ref, at the true reward (autograd, not the Laplacian).
        def expected_nll(r_hat):
            d = r_hat.unsqueeze(1) - r_hat.unsqueeze(0)  # r_hat_i - r_hat_j
            p_first = torch.sigmoid(reward[p].unsqueeze(1) - reward[p].unsqueeze(0))
            nll = -(p_first * F.logsigmoid(d) + (1 - p_first) * F.logsigmoid(-d))
            return (pi[p].unsqueeze(1) * pi[p].unsqueeze(0) * nll).sum()

        hessian = torch.autograd.functional.hessian(expected_nll, reward[p].clone())
        torch.testing.assert_close(
            cov[p], torch.linalg.pinv(hessian) / n, atol=1e-12, rtol=1e-9
        )
    # First-order expected TV vs the mean exact TV of 20,000 Gaussian draws of the
    # implicit-reward error (sd of TV about half its mean: Monte Carlo error ~0.4%;
    # 5% also covers the first-order approximation).
    beta = 1.0
    pi_star = optimal_policy(ref_logits, reward, beta)
    chol = torch.linalg.cholesky(cov + 1e-12 * torch.eye(6, dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 20000, 6, generator=g, dtype=torch.float64)
    delta = torch.einsum("pij,pnj->pni", chol, z) / beta
    perturbed = torch.softmax(pi_star.log().unsqueeze(1) + delta, -1)
    tv = 0.5 * (perturbed - pi_star.unsqueeze(1)).abs().sum(-1).mean(1)
    expected = expected_tv_error(ref_logits, reward, beta, n)
    assert ((tv / expected - 1).abs() < 0.05).all(), (tv, expected)


def kl_at_optimum(ref_logits, reward, betas):
    """KL(pi*_beta || pi_ref) for each beta, (len(betas), P)."""
    from snippets.dpo.derivation import optimal_policy

    ref = torch.softmax(ref_logits, -1)
    return torch.stack(
        [kl_categorical(optimal_policy(ref_logits, reward, b), ref) for b in betas]
    )


def test_qualifies_kl_constrains_new_and_old_policy(anchor="reference"):
    # anchor: the policy the DPO loss's log-ratios are taken against when training
    # starts away from pi_ref ("reference": pi_ref, as DPO; "start": the start policy).
    from snippets.dpo.derivation import optimal_policy

    ref_logits, reward = setup()
    # Holds: beta is a KL leash to pi_ref (the SFT model the policy starts from):
    # at the optimum the KL to pi_ref shrinks monotonically as beta grows
    # (d KL(pi*_beta || pi_ref) / d beta = -Var_{pi*}(r) / beta^3 < 0).
    betas = [0.1, 0.3, 1.0, 3.0, 10.0]
    kl = kl_at_optimum(ref_logits, reward, betas)
    assert (kl[1:] < kl[:-1]).all(), f"KL not decreasing in beta: {kl}"
    # The DPO-trained policy is that pi*_beta (sampled preferences, two betas).
    g = torch.Generator().manual_seed(1)
    n = 20000
    prompt, chosen, rejected = make_pairs(ref_logits, reward, n, g)
    for b in (0.5, 2.0):
        pi = torch.softmax(train_dpo(ref_logits, prompt, chosen, rejected, b), -1)
        tol = TV_FACTOR * expected_tv_error(ref_logits, reward, b, n)
        tv = total_variation(pi, optimal_policy(ref_logits, reward, b))
        assert (tv < tol).all(), f"beta {b}: TV {tv} >= {tol}"
    # Does not hold: the anchor is pi_ref, not the policy training starts from nor the
    # previous iterate. Starting from a different "old" policy, DPO still lands on the
    # pi* defined by pi_ref, far from where it started.
    g2 = torch.Generator().manual_seed(7)
    start = ref_logits + 2.0 * torch.randn(
        ref_logits.shape, generator=g2, dtype=torch.float64
    )
    anchor_logits = ref_logits if anchor == "reference" else start
    logits = train_dpo(
        anchor_logits, prompt, chosen, rejected, 1.0, steps=600, init_logits=start
    )
    pi_star = optimal_policy(ref_logits, reward, 1.0)
    tol = TV_FACTOR * expected_tv_error(ref_logits, reward, 1.0, n)
    assert (total_variation(torch.softmax(logits, -1), pi_star) < tol).all()
    assert (total_variation(torch.softmax(start, -1), pi_star) > 3 * tol).all()


def test_metrics_match_their_definitions():
    # Hand-computed values: TV is half the L1 distance per row, KL sums p log(p / q)
    # per row (float64; 1e-12 is rounding).
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(
        total_variation(p, q),
        torch.tensor([0.5, 0.0], dtype=torch.float64),
        atol=1e-12,
        rtol=0,
    )
    a = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    b = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert abs(kl_categorical(a, b).item() - expected) < 1e-12
    assert kl_categorical(a, a).item() == 0.0
    assert kl_categorical(b, a).item() > 0  # not symmetric: KL(b || a) != KL(a || b)
    assert abs(kl_categorical(b, a).item() - expected) > 1e-3


def test_make_pairs_labels_each_pair_by_bradley_terry():
    ref_logits, reward = setup(seed=4, prompts=2, responses=3)
    n = 4000
    prompt, chosen, rejected = make_pairs(
        ref_logits, reward, n, torch.Generator().manual_seed(5)
    )
    # Layout: prompt p owns rows p n .. (p + 1) n - 1.
    assert prompt.shape == chosen.shape == rejected.shape == (2 * n,)
    assert torch.equal(prompt, torch.arange(2).repeat_interleave(n))
    # The same draws by hand: y1, y2 ~ pi_ref, then u < sigma(r1 - r2) makes y1 win.
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(ref_logits, -1)
    y1 = torch.multinomial(probs, n, replacement=True, generator=g)
    y2 = torch.multinomial(probs, n, replacement=True, generator=g)
    p_first = torch.sigmoid(reward.gather(1, y1) - reward.gather(1, y2))
    u = torch.rand(p_first.shape, generator=g, dtype=torch.float64)
    wins = (u < p_first).flatten()
    assert torch.equal(chosen, torch.where(wins, y1.flatten(), y2.flatten()))
    assert torch.equal(rejected, torch.where(wins, y2.flatten(), y1.flatten()))
    # The preference rate of response 0 over 1 (181 and 1283 such pairs): within 4
    # standard errors of sigma(r_a - r_b).
    for p in range(2):
        c, r = chosen[prompt == p], rejected[prompt == p]
        a, b = 0, 1
        ab = ((c == a) & (r == b)).sum().item()
        ba = ((c == b) & (r == a)).sum().item()
        rate = torch.sigmoid(reward[p, a] - reward[p, b]).item()
        se = (rate * (1 - rate) / (ab + ba)) ** 0.5
        assert abs(ab / (ab + ba) - rate) < 4 * se, (p, ab, ba, rate)


def test_train_dpo_defaults_are_the_pages():
    # The page trains with Adam, lr 0.1, for 300 full-batch steps from pi_ref.
    ref_logits, reward = setup(seed=3, prompts=2, responses=3)
    pairs = make_pairs(ref_logits, reward, 50, torch.Generator().manual_seed(0))
    default = train_dpo(ref_logits, *pairs, 0.5)
    torch.testing.assert_close(
        default,
        train_dpo(ref_logits, *pairs, 0.5, steps=300, lr=0.1, init_logits=ref_logits),
        atol=0,
        rtol=0,
    )
    assert not torch.equal(default, train_dpo(ref_logits, *pairs, 0.5, steps=299))


def test_experiment_returns_what_it_promises():
    from snippets.dpo.derivation import optimal_policy

    # Problem from setup(seed), data from seed + 1, DPO at beta from pi_ref; small runs
    # (200 pairs per prompt, 5 steps) so that every output can be recomputed here.
    beta, n, steps, seed = 0.5, 200, 5, 2
    out = experiment(beta=beta, pairs_per_prompt=n, steps=steps, seed=seed)
    ref_logits, reward = setup(seed)
    pairs = make_pairs(ref_logits, reward, n, torch.Generator().manual_seed(seed + 1))
    logits = train_dpo(ref_logits, *pairs, beta, steps=steps)
    exact = dict(
        logits=logits,
        ref_logits=ref_logits,
        reward=reward,
        pi=torch.softmax(logits, -1),
        pi_ref=torch.softmax(ref_logits, -1),
        pi_star=optimal_policy(ref_logits, reward, beta),
    )
    exact["tv"] = total_variation(exact["pi"], exact["pi_star"])
    exact["tv_tol"] = TV_FACTOR * expected_tv_error(ref_logits, reward, beta, n)
    assert set(out) == set(exact) | {"seconds"}
    for key, value in exact.items():
        torch.testing.assert_close(out[key], value, atol=0, rtol=0, msg=key)
    assert out["seconds"] > 0
    # labels="reversed": the same pairs with chosen and rejected swapped.
    rev = experiment(
        beta=beta, pairs_per_prompt=n, steps=steps, seed=seed, labels="reversed"
    )
    swapped = train_dpo(ref_logits, pairs[0], pairs[2], pairs[1], beta, steps=steps)
    torch.testing.assert_close(rev["logits"], swapped, atol=0, rtol=0)
    with pytest.raises(ValueError, match="labels"):
        experiment(steps=1, pairs_per_prompt=10, labels="hard")


if __name__ == "__main__":
    for s in SEEDS:
        out = run(seed=s)
        print(
            f"seed {s}: TV per prompt {out['tv'].numpy().round(4)}, "
            f"tolerance {out['tv_tol'].numpy().round(4)}, {out['seconds']:.2f}s"
        )
