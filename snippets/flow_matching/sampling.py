"""Euler sampler for the flow ODE, from t = 1 (noise) down to t = 0 (data)."""

# --8<-- [start:euler]
import torch


def time_grid(num_steps: int, dtype=torch.float32) -> torch.Tensor:
    """Uniform grid 1 = t_0 > t_1 > ... > t_N = 0, shape (num_steps + 1,)."""
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=dtype)


def euler_sample(velocity, x1: torch.Tensor, num_steps: int, return_path: bool = False):
    """Integrate dx/dt = velocity(x, t) from x1 at t = 1 to t = 0 with Euler steps
    (dt < 0), without building an autograd graph.

    velocity(x, t): (batch, d), (batch,) -> (batch, d); x1: (batch, d) noise.
    returns x0 (batch, d), or the path (num_steps + 1, batch, d) if return_path.
    No random numbers are drawn: the same x1 always gives the same path.
    """
    ts = time_grid(num_steps, x1.dtype)
    x, path = x1, [x1]
    with torch.no_grad():
        for t, t_next in zip(ts[:-1], ts[1:]):
            # x_{t+dt} = x_t + v dt
            x = x + velocity(x, t.expand(x.shape[0])) * (t_next - t)
            path.append(x)
    return torch.stack(path) if return_path else x


# --8<-- [end:euler]


def test_euler_is_exact_for_constant_velocity():
    x1 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    c = torch.tensor([0.3, -2.0])
    x0 = euler_sample(lambda x, t: c.expand_as(x), x1, num_steps=1)
    torch.testing.assert_close(x0, x1 - c, atol=1e-6, rtol=0)
    path = euler_sample(lambda x, t: c.expand_as(x), x1, num_steps=4, return_path=True)
    assert path.shape == (5, 5, 2)
    torch.testing.assert_close(path[2], x1 - 0.5 * c, atol=1e-6, rtol=0)
