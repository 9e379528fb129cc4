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
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 1)).double()
    start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    else:  # config/base.py: learning_rate 3e-4, betas 0.9, 0.999, eps 1e-8, decay 1e-4
        opt = torch.optim.AdamW(net.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=eps,
                                weight_decay=1e-4)
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
    torch.testing.assert_close(parameter_change("sgd", 1 / D, steps=1), sgd / D,
                               atol=1e-15, rtol=1e-10)
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
