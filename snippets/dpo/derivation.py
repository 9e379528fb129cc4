"""From the KL-regularised RL objective to the DPO loss, one step per section
(Rafailov et al. 2023, arXiv:2305.18290, Sec. 3-4).

All policies here are categorical over a handful of responses per prompt, so every
expectation is an exact sum and every step can be checked against its closed form.
"""

# --8<-- [start:objective]
import torch


def kl_regularised_objective(logits, ref_logits, reward, beta):
    """J(pi) = E_{y~pi}[r(x, y)] - beta * KL(pi(.|x) || pi_ref(.|x)), per prompt.
                                                          # Eq. (3), arXiv:2305.18290
    logits, ref_logits, reward: (num_prompts, num_responses); returns (num_prompts,).
    """
    logp = torch.log_softmax(logits, dim=-1)
    ref_logp = torch.log_softmax(ref_logits, dim=-1)
    p = logp.exp()
    return (p * reward).sum(-1) - beta * (p * (logp - ref_logp)).sum(-1)


# --8<-- [end:objective]


# --8<-- [start:optimal_policy]
import torch


def optimal_policy(ref_logits, reward, beta):
    """Closed-form maximiser of Eq. (3): pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x).
                                                          # Eq. (4), arXiv:2305.18290
    ref_logits, reward: (num_prompts, num_responses); returns probabilities, same shape.
    """
    return torch.softmax(torch.log_softmax(ref_logits, -1) + reward / beta, dim=-1)


def log_partition(ref_logits, reward, beta):
    """log Z(x) = log sum_y pi_ref(y|x) exp(r(x,y)/beta); returns (num_prompts,)."""
    return torch.logsumexp(torch.log_softmax(ref_logits, -1) + reward / beta, dim=-1)


# --8<-- [end:optimal_policy]


# --8<-- [start:implicit_reward]
import torch


def implicit_reward(policy_logp, ref_logp, beta):
    """r_hat(x, y) = beta * log pi(y|x) / pi_ref(y|x).    # Eq. (5), arXiv:2305.18290
    Inverting Eq. (4) gives r = r_hat(pi*) + beta log Z(x): the reward up to a
    per-prompt constant, which no pairwise comparison can see.
    Any shape; returns the same shape."""
    return beta * (policy_logp - ref_logp)


# --8<-- [end:implicit_reward]


# --8<-- [start:bradley_terry]
import torch


def bradley_terry_prob(reward_1, reward_2):
    """p(y1 > y2 | x) = exp(r1) / (exp(r1) + exp(r2)) = sigmoid(r1 - r2).
                                                          # Eq. (1), arXiv:2305.18290
    reward_1, reward_2: (batch,); returns (batch,)."""
    return torch.sigmoid(reward_1 - reward_2)


def reward_model_nll(reward_chosen, reward_rejected):
    """Reward-model loss -log sigma(r(x, y_w) - r(x, y_l)), per pair (batch,).
    # Eq. (2), arXiv:2305.18290"""
    return -torch.nn.functional.logsigmoid(reward_chosen - reward_rejected)


# --8<-- [end:bradley_terry]


# Nearby closed forms a critic would put in place of Eq. (4) (counterfactuals below).
def optimal_policy_without_reference(ref_logits, reward, beta):
    """exp(r / beta) / Z: Eq. (4) with pi_ref dropped. Shapes as optimal_policy."""
    return torch.softmax(reward / beta, dim=-1)


def optimal_policy_beta_times(ref_logits, reward, beta):
    """pi_ref exp(beta r) / Z: beta on the wrong side. Shapes as optimal_policy."""
    return torch.softmax(torch.log_softmax(ref_logits, -1) + reward * beta, dim=-1)


import pytest


@pytest.fixture
def problem():
    """Test data: problem(seed) -> reference logits and rewards, each (3 prompts,
    6 responses), standard normal, float64."""

    def make(seed):
        g = torch.Generator().manual_seed(seed)
        ref_logits = torch.randn(3, 6, generator=g, dtype=torch.float64)
        reward = torch.randn(3, 6, generator=g, dtype=torch.float64)
        return ref_logits, reward

    return make


# Everything below is exact float64 arithmetic on 6 responses: 1e-12 is rounding.
def test_closed_form_optimum_maximises_kl_regularised_objective(
    problem, policy=optimal_policy
):
    # policy: the closed form claimed to maximise Eq. (3).
    ref_logits, reward = problem(0)
    for beta in (0.5, 2.0):  # beta != 1, so r / beta and r * beta differ
        pi_star = policy(ref_logits, reward, beta)
        j_star = kl_regularised_objective(pi_star.log(), ref_logits, reward, beta)
        # The maximum value is beta * log Z(x).
        log_z = log_partition(ref_logits, reward, beta)
        torch.testing.assert_close(j_star, beta * log_z, atol=1e-12, rtol=0)
        # Every perturbed policy scores lower.
        g = torch.Generator().manual_seed(1)
        for _ in range(200):
            noise = torch.randn(pi_star.shape, generator=g, dtype=torch.float64)
            other = pi_star.log() + 0.3 * noise
            j = kl_regularised_objective(other, ref_logits, reward, beta)
            assert (j < j_star + 1e-12).all(), "a perturbed policy beats pi*"
        # Stationary point: the gradient w.r.t. the logits vanishes at pi*. J is
        # strictly concave in pi (linear term minus a KL): the stationary point is the
        # maximum.
        logits = pi_star.log().requires_grad_(True)
        kl_regularised_objective(logits, ref_logits, reward, beta).sum().backward()
        torch.testing.assert_close(
            logits.grad, torch.zeros_like(logits), atol=1e-12, rtol=0
        )


def test_implicit_reward_recovers_reward_up_to_prompt_constant(problem):
    ref_logits, reward = problem(2)
    beta = 0.3
    pi_star = optimal_policy(ref_logits, reward, beta)
    r_hat = implicit_reward(pi_star.log(), torch.log_softmax(ref_logits, -1), beta)
    offset = reward - r_hat  # should be beta * log Z(x) for every response y
    log_z = log_partition(ref_logits, reward, beta)
    expected = (beta * log_z).unsqueeze(1).expand_as(offset)
    torch.testing.assert_close(offset, expected, atol=1e-12, rtol=0)


def test_partition_function_cancels_in_bradley_terry(problem):
    ref_logits, reward = problem(3)
    beta = 2.0
    pi_star = optimal_policy(ref_logits, reward, beta)
    r_hat = implicit_reward(pi_star.log(), torch.log_softmax(ref_logits, -1), beta)
    # All pairs (i, j) of responses of each prompt: Eq. (6) equals Eq. (1).
    i, j = torch.triu_indices(6, 6, offset=1)
    p_true = bradley_terry_prob(reward[:, i].flatten(), reward[:, j].flatten())
    p_implicit = bradley_terry_prob(r_hat[:, i].flatten(), r_hat[:, j].flatten())
    torch.testing.assert_close(p_implicit, p_true, atol=1e-12, rtol=0)


def test_dpo_loss_at_optimum_is_reward_model_loss(problem):
    from snippets.dpo.loss import dpo_loss

    ref_logits, reward = problem(4)
    beta = 0.7
    logp_star = optimal_policy(ref_logits, reward, beta).log()
    ref_logp = torch.log_softmax(ref_logits, -1)
    i, j = torch.triu_indices(6, 6, offset=1)
    losses, _, _ = dpo_loss(
        logp_star[:, i].flatten(),
        logp_star[:, j].flatten(),
        ref_logp[:, i].flatten(),
        ref_logp[:, j].flatten(),
        beta=beta,
    )
    nll = reward_model_nll(reward[:, i].flatten(), reward[:, j].flatten())
    torch.testing.assert_close(losses, nll, atol=1e-12, rtol=0)


def test_leading_dimensions_are_batch_dimensions(problem):
    # The functions act on the last (response) dimension only: a stack of problems,
    # (2, 3, 6), gives each problem's own result.
    problems = [problem(seed) for seed in (5, 6)]
    ref_logits, reward = (torch.stack(column) for column in zip(*problems))
    beta = 0.5
    logits = ref_logits.flip(-1)  # some policy other than pi_ref and pi*
    batched = (
        optimal_policy(ref_logits, reward, beta),
        log_partition(ref_logits, reward, beta),
        kl_regularised_objective(logits, ref_logits, reward, beta),
    )
    for k, (ref_k, reward_k) in enumerate(problems):
        one = (
            optimal_policy(ref_k, reward_k, beta),
            log_partition(ref_k, reward_k, beta),
            kl_regularised_objective(logits[k], ref_k, reward_k, beta),
        )
        for b, o in zip(batched, one):
            torch.testing.assert_close(b[k], o, atol=1e-12, rtol=0)
