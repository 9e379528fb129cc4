"""Minimising mean-squared error predicts the conditional mean.

    argmin_f E[(Y - f(X))^2] = E[Y | X]          (pointwise, for every x)

because E[(Y - c)^2 | X = x] = Var(Y | X = x) + (E[Y | X = x] - c)^2.
The same fact appears three times in the notes: SAC's critic regresses on a
single sampled target per transition, denoising score matching regresses on
one noise draw, flow matching regresses on one (x0, x1) pair per x_t.
"""

# --8<-- [start:fit_constant]
import torch


def fit_constant(
    y: torch.Tensor, loss: str = "mse", steps: int = 500, lr: float = 0.1
) -> torch.Tensor:
    """The constant c minimising mean(loss(y - c)); y: (n,) -> c: ().

    loss="mse": (y - c)^2, loss="l1": |y - c|.
    """
    c = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([c], lr=lr)
    for _ in range(steps):
        err = y - c
        objective = err.pow(2).mean() if loss == "mse" else err.abs().mean()
        opt.zero_grad()
        objective.backward()
        opt.step()
    return c.detach()


# --8<-- [end:fit_constant]


# --8<-- [start:regress_table]
import torch


def regress_table(
    x: torch.Tensor,
    y: torch.Tensor,
    num_groups: int,
    loss: str = "mse",
    steps: int = 500,
    lr: float = 0.1,
) -> torch.Tensor:
    """Fit f(x) = table[x] by gradient descent on one noisy target per sample.

    x: (n,) integer group ids in [0, num_groups), y: (n,) targets
    -> table: (num_groups,)
    Each sample contributes a single draw of Y, never E[Y | X]: the loss's
    average over the data set does the expectation.
    """
    table = torch.zeros(num_groups, requires_grad=True)
    opt = torch.optim.Adam([table], lr=lr)
    for _ in range(steps):
        err = y - table[x]
        objective = err.pow(2).mean() if loss == "mse" else err.abs().mean()
        opt.zero_grad()
        objective.backward()
        opt.step()
    return table.detach()


# --8<-- [end:regress_table]


# --8<-- [start:skewed_data]
import torch


def skewed_data(
    n: int, num_groups: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y | X = k ~ Exponential(rate = 1 / (k + 1)): skewed, so mean != median.

    Returns x: (n,) group ids, y: (n,) targets, true_mean: (num_groups,) = k + 1.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, num_groups, (n,), generator=g)
    scale = (x + 1).float()
    y = -scale * torch.log(torch.rand(n, generator=g))  # inverse-CDF sampling
    return x, y, torch.arange(1, num_groups + 1).float()


# --8<-- [end:skewed_data]


import math


def symmetric_data(
    n: int, num_groups: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Y | X = k ~ Normal(k + 1, (k + 1)^2): symmetric, so mean == median.

    The counterfactual of the L1 claim: on such data L1 does learn the mean.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, num_groups, (n,), generator=g)
    scale = (x + 1).float()
    y = scale + scale * torch.randn(n, generator=g)
    return x, y, torch.arange(1, num_groups + 1).float()


def test_mse_minimiser_is_conditional_mean(loss="mse"):
    # One noisy target per sample; the fitted table must equal the empirical
    # conditional mean (optimisation error, 1e-3) and the true E[Y|X] (sampling
    # error: 4 standard errors), for three independent data sets.
    for seed in (0, 1, 2):
        x, y, true_mean = skewed_data(20_000, seed=seed)
        table = regress_table(x, y, num_groups=4, loss=loss)
        empirical = torch.stack([y[x == k].mean() for k in range(4)])
        torch.testing.assert_close(table, empirical, atol=1e-3, rtol=0)
        se = torch.stack([y[x == k].std() / (x == k).sum().sqrt() for k in range(4)])
        assert ((table - true_mean).abs() < 4 * se).all(), (seed, table, true_mean)


def test_mse_decomposes_into_variance_plus_squared_bias(
    variance_correction=0, loss="mse"
):
    # E[(Y - c)^2] = Var(Y) + (E[Y] - c)^2 exactly, for the empirical distribution.
    _, y, _ = skewed_data(5_000, num_groups=1)
    # (seeded: the same seed gives the same data set, which the page's numbers use)
    assert torch.equal(skewed_data(5_000, num_groups=1)[1], y)
    for c in (0.0, 0.5, 1.0, 3.0):
        lhs = (y - c).pow(2).mean()
        rhs = y.var(correction=variance_correction) + (y.mean() - c) ** 2
        torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)
    assert abs(fit_constant(y, loss=loss).item() - y.mean().item()) < 1e-3


def test_refutes_l1_also_predicts_conditional_mean(data=skewed_data):
    # Plausible but false: "any regression loss predicts the mean".
    # L1 predicts the conditional median: (k + 1) ln 2 for this data, not k + 1.
    x, y, true_mean = data(20_000)
    table = regress_table(x, y, num_groups=4, loss="l1")
    for k in range(4):
        yk = y[x == k]
        n = len(yk)
        # The fit is an empirical median: half of the group's samples lie below it
        # (up to the two middle samples, 2 / n).
        assert abs((yk < table[k]).float().mean().item() - 0.5) <= 2 / n, k
        # The sample median of Exponential(scale) has standard error scale / sqrt(n)
        # (1 / (2 f(median) sqrt(n)), f(median) = 1 / (2 scale)), as does the mean.
        se = true_mean[k].item() / n**0.5
        assert abs(table[k].item() - true_mean[k].item() * math.log(2)) < 4 * se
        # ... and it is far from the mean: (1 - ln 2)(k + 1) = 0.31 (k + 1) away.
        assert abs(table[k].item() - true_mean[k].item()) > 4 * se
    # The same for a single constant: the L1 fit has half of the samples below it.
    _, y, _ = data(5_000, num_groups=1)
    c = fit_constant(y, loss="l1")
    assert abs((y < c).float().mean().item() - 0.5) <= 2 / len(y)
    assert abs(c.item() - y.mean().item()) > 0.2  # mean 0.99, median 0.67
