"""Does dividing the loss by D (the reference's per-dimension mean) act as a smaller
learning rate? For SGD, yes: its step is lr * gradient. For Adam / AdamW, no: with the
loss scaled by c the moment estimates become c m and c^2 v, and the step
lr * m_hat / (sqrt(v_hat) + eps) is unchanged up to eps (Kingma & Ba, arXiv:1412.6980,
Algorithm 1; Sec. 2.1 notes the invariance to rescaling the gradient). AdamW's decoupled
weight decay (Loshchilov & Hutter, arXiv:1711.05101, Algorithm 2) does not see the
gradient at all. The reference trains with torch.optim.AdamW (scripts/train_sd3.py).
"""

# --8<-- [start:adam_vs_sgd]
import torch


def parameter_change(optimizer: str, loss_scale: float, steps=20, seed=0, eps=1e-8):
    """Train a small MLP for `steps` steps on one fixed regression batch, minimising
    loss_scale * MSE, with SGD or with AdamW (the reference's betas, eps, weight decay).
    returns the flattened change of all parameters, (n_params,)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    else:  # config/base.py: learning_rate 3e-4, betas 0.9, 0.999, eps 1e-8, decay 1e-4
        opt = torch.optim.AdamW(
            net.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=eps, weight_decay=1e-4
        )
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randn(64, 1, generator=g, dtype=torch.float64)
    for _ in range(steps):
        loss = loss_scale * ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.nn.utils.parameters_to_vector(net.parameters()).detach() - start


# --8<-- [end:adam_vs_sgd]


def test_refutes_a_constant_loss_scale_shrinks_the_adamw_step(optimizer="adamw"):
    D = 1024  # the per-dimension mean divides the loss (and every gradient) by D
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    # SGD: one step is lr * gradient, so it shrinks exactly by D.
    sgd = parameter_change("sgd", 1.0, steps=1)
    torch.testing.assert_close(
        parameter_change("sgd", 1 / D, steps=1), sgd / D, atol=1e-15, rtol=1e-10
    )
    # AdamW without its eps: 20 steps with the loss divided by D (or by 65 536, an SD3
    # latent at 512 px) are the same steps, to float64 precision.
    exact = parameter_change(optimizer, 1.0, eps=0.0)
    for scale in (1 / D, 1 / 65536):
        assert rel(parameter_change(optimizer, scale, eps=0.0), exact) < 1e-9
    # With the reference's eps = 1e-8 the only change is that eps now competes with
    # gradients D times smaller (as if eps were D times larger): the step stays the same
    # size up to a few per cent, nowhere near the D-fold reduction of the SGD reading.
    adam = parameter_change(optimizer, 1.0)
    adam_scaled = parameter_change(optimizer, 1 / D)
    assert rel(adam_scaled, adam) < 0.1, rel(adam_scaled, adam)
    assert adam_scaled.norm() > 0.9 * adam.norm() > 100 * adam.norm() / D


def test_adamw_first_step_is_the_learning_rate_per_coordinate():
    # From zero moments Adam's bias-corrected first step is g / |g| (eps = 0): every
    # parameter moves by exactly lr (Kingma & Ba, Sec. 2.1: |step| <= lr). AdamW's
    # decoupled decay adds lr * 1e-4 * theta, |theta| <= 0.5 at this initialisation:
    # at most 5e-5 of lr. So the first step measures the reference's lr = 3e-4 and the
    # size of its decay, for any loss scale.
    for scale in (1.0, 1 / 1024):
        step = parameter_change("adamw", scale, steps=1, eps=0.0).abs()
        assert ((step / 3e-4 - 1).abs() < 1e-4).all(), (scale, step.min(), step.max())


def reference_problem(seed=0):
    """What parameter_change trains, built again from its description: the MLP
    4 -> 16 (tanh) -> 1 in float64 initialised under torch.manual_seed(seed), and the
    fixed batch x (64, 4), y (64, 1) from Generator(seed + 1)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randn(64, 1, generator=g, dtype=torch.float64)
    return net, x, y


def test_first_steps_follow_the_update_rules():
    # Kingma & Ba Algorithm 1 / Loshchilov & Hutter Algorithm 2, first step from zero
    # moments with eps = 0: m_hat = g, v_hat = g^2, so AdamW moves every parameter by
    # -lr (sign(g) + weight_decay * theta). SGD moves it by -lr g. g is the gradient
    # of loss_scale * MSE at the start. Rounding: the change is the difference of two
    # parameter vectors with |theta| <= 0.5 at this initialisation, exact to an ulp of
    # each, 2 x 2^-53 x 0.5 ~ 1.1e-16, i.e. atol 2.3e-16 (plus 1e-12 relative).
    net, x, y = reference_problem(seed=3)
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    mse = ((net(x) - y) ** 2).mean()
    grad = torch.cat([p.flatten() for p in torch.autograd.grad(mse, net.parameters())])
    for scale in (1.0, 1 / 1024):
        sgd = parameter_change("sgd", scale, steps=1, seed=3)
        torch.testing.assert_close(sgd, -1e-2 * scale * grad, atol=2.3e-16, rtol=1e-12)
        adamw = parameter_change("adamw", scale, steps=1, seed=3, eps=0.0)
        expected = -3e-4 * (grad.sign() + 1e-4 * theta)
        torch.testing.assert_close(adamw, expected, atol=2.3e-16, rtol=1e-12)


def test_training_minimises_the_mse_for_the_pages_20_steps():
    # The page: "20 steps". Both optimisers lower the MSE of the fixed batch (the
    # change applied to the same initial network), whatever the loss scale.
    assert torch.equal(
        parameter_change("adamw", 1.0),
        parameter_change("adamw", 1.0, steps=20, seed=0, eps=1e-8),
    )
    for optimizer in ("sgd", "adamw"):
        for scale in (1.0, 1 / 1024):
            net, x, y = reference_problem(seed=0)
            before = ((net(x) - y) ** 2).mean().item()
            theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
            change = parameter_change(optimizer, scale)
            torch.nn.utils.vector_to_parameters(theta + change, net.parameters())
            assert ((net(x) - y) ** 2).mean().item() < before, (optimizer, scale)
