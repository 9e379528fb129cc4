"""The linear (rectified-flow / conditional-OT) probability path, in the note's
convention.

Convention used everywhere in snippets/flow_matching and snippets/flow_grpo (the one of
Flow-GRPO and SD3):

    x0 ~ data, x1 ~ N(0, I) (noise), t in [0, 1]
    # Eq. (1), arXiv:2209.03003; Sec. 4.1, arXiv:2210.02747 (sigma_min = 0, t reversed)
    x_t = (1 - t) * x0 + t * x1
    u_t = d x_t / dt = x1 - x0       # the conditional (per-pair) target velocity
    sampling integrates dx/dt = v(x, t) from t = 1 (noise) down to t = 0 (data).

Lipman et al. (arXiv:2210.02747) put noise at t = 0 and data at t = 1; their path is
ours with t -> 1 - t and the velocity negated.
"""

# --8<-- [start:path]
import torch


def _expand_t(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """t: float, () or (batch,) -> broadcastable to x of shape (batch, *dims), on x's
    device and in x's dtype ((batch,) becomes (batch, 1, ..., 1))."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t) -> torch.Tensor:
    """x_t = (1 - t) x0 + t x1  (x0 data, x1 noise).

    x0, x1: (batch, *dims); t: float, () or (batch,), broadcast over the non-batch dims.
    returns (batch, *dims). A fixed linear combination of x0 and x1: all randomness of
    x_t comes from drawing x1 (and t).
    """
    t = _expand_t(t, x0)
    # X_t = t X_1 + (1 - t) X_0, Eq. (1), arXiv:2209.03003 (there X_0 is the noise)
    return (1 - t) * x0 + t * x1


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Conditional target u_t(x_t | x0, x1) = d x_t / dt = x1 - x0, (batch, *dims)."""
    # Eq. (1), arXiv:2209.03003; OT path of Sec. 4.1, arXiv:2210.02747, t -> 1 - t
    return x1 - x0


# --8<-- [end:path]


# --8<-- [start:fm_loss]
import torch

from snippets.flow_matching.path import interpolate, target_velocity


def flow_matching_loss(model, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """Conditional flow matching loss E_{t, x0, x1} || v_theta(x_t, t) - (x1 - x0) ||^2.

    model(x, t): (batch, *dims), (batch,) -> (batch, *dims). x0: (batch, *dims) data;
    the squared norm runs over all non-batch dims. Simulation-free: one network
    evaluation per sample, no ODE is solved in training.
    """
    x1 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)  # noise end
    t = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype)  # t ~ U[0, 1]
    x_t = interpolate(x0, x1, t)
    # CFM loss, Sec. 3.2, arXiv:2210.02747
    return ((model(x_t, t) - target_velocity(x0, x1)) ** 2).flatten(1).sum(1).mean()


# --8<-- [end:fm_loss]


def test_interpolate_endpoints_and_broadcast():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 5, 5, generator=g)
    x1 = torch.randn(4, 3, 5, 5, generator=g)
    torch.testing.assert_close(interpolate(x0, x1, 0.0), x0, atol=0, rtol=0)
    torch.testing.assert_close(interpolate(x0, x1, 1.0), x1, atol=0, rtol=0)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    xt = interpolate(x0, x1, t)
    for i in range(4):
        expected = (1 - t[i]) * x0[i] + t[i] * x1[i]
        torch.testing.assert_close(xt[i], expected, atol=1e-6, rtol=0)


def test_interpolate_stays_on_the_device_of_the_data():
    # A time schedule often lives on the CPU while the data sit on an accelerator: t is
    # moved to x's device. The "meta" device (shapes only, no values) stands in for a
    # GPU here; a CPU tensor of shape (batch,) cannot be mixed with it.
    x0 = torch.zeros(4, 3, 2, device="meta")
    for t in (torch.tensor([0.1, 0.2, 0.3, 0.4]), [0.1, 0.2, 0.3, 0.4], 0.5):
        xt = interpolate(x0, x0, t)
        assert xt.device == x0.device and xt.shape == x0.shape, (t, xt)


def test_target_velocity_is_time_derivative_of_path():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = torch.rand(8, generator=g, dtype=torch.float64) * 0.8 + 0.1
    h = 1e-6
    fd = (interpolate(x0, x1, t + h) - interpolate(x0, x1, t - h)) / (2 * h)
    torch.testing.assert_close(fd, target_velocity(x0, x1), atol=1e-8, rtol=0)


def test_flow_matching_loss_follows_its_definition():
    # (the loss at the marginal velocity: gaussian.py, which imports this module)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(4096, 2, generator=g, dtype=torch.float64)
    # (a) The loss is the definition, drawn in this order: noise x1 first, then t.
    model = lambda x, t: 0.5 * x + t[:, None]
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    t = torch.rand(x0.shape[0], generator=g, dtype=x0.dtype)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    manual = ((model(xt, t) - (x1 - x0)) ** 2).sum(-1).mean()
    ours = flow_matching_loss(model, x0, torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, manual, atol=1e-12, rtol=0)
    # The same for image-shaped data (batch, c, h, w): the squared norm runs over all
    # of c, h, w, as ||.||^2 of the flattened image.
    img = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    model_img = lambda x, t: 0.5 * x + t[:, None, None, None]
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(img.shape, generator=g, dtype=img.dtype)
    t = torch.rand(img.shape[0], generator=g, dtype=img.dtype)
    xt = (1 - t[:, None, None, None]) * img + t[:, None, None, None] * x1
    manual = ((model_img(xt, t) - (x1 - img)) ** 2).sum((1, 2, 3)).mean()
    ours = flow_matching_loss(model_img, img, torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, manual, atol=1e-12, rtol=0)
