"""A minimal differentiable splatting renderer in plain PyTorch, fitted to an image.

The image plane of 3DGS after projection: each Gaussian is a 2D ellipse with mean
mu (2,), covariance Sigma' (2, 2), colour c (3,) and opacity o. At pixel p it adds

    alpha_i(p) = o_i exp(-1/2 (p - mu_i)^T Sigma'_i^{-1} (p - mu_i))
                                          # Eq. (4) times o_i, arXiv:2308.04079

and the pixel colour is the front-to-back composite of Eq. (3) (`gaussians.composite`).
Here we skip the 3D part and optimise the 2D Gaussians directly, so the order (index
0 in front) is fixed. Every step is a differentiable torch op, so autograd gives the
gradients that the reference implementation writes by hand in CUDA; there are no
tiles, no sorting and no densification, only a fixed number of Gaussians.
"""

# --8<-- [start:render2d]
import torch

from snippets.neoverse.gaussians import composite


def covariance_2d(
    log_scale: torch.Tensor, angle: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D analogue of Sigma = R S S^T R^T (Eq. (6), arXiv:2308.04079) and its inverse.

    log_scale: (N, 2) log standard deviations in pixels; angle: (N,) in radians.
    returns: Sigma (N, 2, 2) and Sigma^{-1} = R S^{-2} R^T (N, 2, 2), no inversion.
    """
    c, s = angle.cos(), angle.sin()
    R = torch.stack([c, -s, s, c], dim=-1).reshape(-1, 2, 2)
    var = (2 * log_scale).exp()
    cov = R @ torch.diag_embed(var) @ R.transpose(-1, -2)
    cov_inv = R @ torch.diag_embed(1 / var) @ R.transpose(-1, -2)
    return cov, cov_inv


def render_2d(
    params: dict[str, torch.Tensor], height: int, width: int, background: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render N 2D Gaussians, index 0 in front.

    params: mean (N, 2) pixel coordinates (x, y); log_scale (N, 2); angle (N,);
            color_logit (N, 3) and opacity_logit (N,) (a sigmoid maps them to [0, 1]).
    background: (3,) colour seen where the splats leave transmittance.
    returns: image (H, W, 3) and final transmittance (H, W).
    """
    dtype = params["mean"].dtype
    rows, cols = torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype)
    ys, xs = torch.meshgrid(rows, cols, indexing="ij")
    pix = torch.stack([xs, ys], dim=-1) + 0.5  # pixel centres, (H, W, 2)
    _, cov_inv = covariance_2d(params["log_scale"], params["angle"])
    dx = pix[None, ..., 0] - params["mean"][:, 0, None, None]  # (N, H, W)
    dy = pix[None, ..., 1] - params["mean"][:, 1, None, None]
    a, b, c = (cov_inv[:, i, j, None, None] for i, j in ((0, 0), (0, 1), (1, 1)))
    maha = a * dx * dx + 2 * b * dx * dy + c * dy * dy  # (p-mu)^T Sigma'^-1 (p-mu)
    opacity = torch.sigmoid(params["opacity_logit"])[:, None, None]
    alphas = opacity * torch.exp(-0.5 * maha)  # Eq. (4) times o, arXiv:2308.04079
    colors = torch.sigmoid(params["color_logit"])[:, None, None, :]
    color, T = composite(colors.expand(-1, height, width, -1), alphas)  # Eq. (3)
    return color + T[..., None] * background, T


# --8<-- [end:render2d]


# --8<-- [start:target]
import torch


def synthetic_target(size: int = 48) -> torch.Tensor:
    """A small test image (size, size, 3) in [0, 1]: a vertical gradient background,
    a red disk, a blue square with hard edges and a thin green bar; no Gaussians."""
    ys, xs = torch.meshgrid(
        torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij"
    )
    u, v = xs / size, ys / size
    img = torch.stack([0.15 + 0.2 * v, 0.15 + 0.1 * v, 0.35 - 0.2 * v], dim=-1)
    disk = ((u - 0.32) ** 2 + (v - 0.35) ** 2) < 0.18**2
    img[disk] = torch.tensor([0.9, 0.2, 0.15])
    square = (u > 0.55) & (u < 0.85) & (v > 0.5) & (v < 0.8)
    img[square] = torch.tensor([0.2, 0.35, 0.9])
    bar = (u > 0.12) & (u < 0.5) & (v > 0.72) & (v < 0.8)
    img[bar] = torch.tensor([0.3, 0.85, 0.3])
    return img


# --8<-- [end:target]


# --8<-- [start:fit2d]
import time

import torch

from snippets.neoverse.splat2d import render_2d


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: -10 log10(MSE)."""
    return (-10 * torch.log10(((a - b) ** 2).mean())).item()


def init_grid(size: int, per_side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """per_side^2 round, half-transparent Gaussians on a grid, random colours."""
    g = torch.Generator().manual_seed(seed)
    step = size / per_side
    c = (torch.arange(per_side) + 0.5) * step
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    n = per_side * per_side
    return {
        "mean": torch.stack([xs.flatten(), ys.flatten()], dim=-1),
        "log_scale": torch.full((n, 2), float(torch.tensor(step * 0.6).log())),
        "angle": torch.zeros(n),
        "color_logit": torch.randn(n, 3, generator=g) * 0.5,
        "opacity_logit": torch.zeros(n),  # opacity 0.5
    }


def fit_2d(
    target: torch.Tensor,
    per_side: int = 10,
    steps: int = 200,
    lr: float = 0.05,
    seed: int = 0,
):
    """Fit per_side^2 Gaussians to `target` (H, W, 3) with Adam on the L2 (MSE) loss.

    returns: fitted params, the initial params, PSNR after each step, seconds.
    """
    torch.manual_seed(seed)
    size = target.shape[0]
    background = torch.zeros(3)
    init = init_grid(size, per_side, seed)
    params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    rest = ("log_scale", "angle", "color_logit", "opacity_logit")
    groups = [
        {"params": [params["mean"]], "lr": lr * size / 10},  # means move in pixels
        {"params": [params[k] for k in rest], "lr": lr},
    ]
    opt = torch.optim.Adam(groups)
    history, start = [], time.perf_counter()
    for _ in range(steps):
        image, _ = render_2d(params, size, size, background)
        loss = ((image - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(-10 * torch.log10(loss.detach()).item())
    seconds = time.perf_counter() - start
    return {k: v.detach() for k, v in params.items()}, init, history, seconds


# --8<-- [end:fit2d]


# ----------------------------------------------------------------------------- tests

# 28 dB = RMS error 4 % of the intensity range: the target the page states.
PSNR_THRESHOLD_DB = 28.0
# The start must be far from the target, so that the fit, not the init, does the work.
INITIAL_MAX_DB = 15.0


def test_splat_renderer_fits_synthetic_image(per_side=10):
    target = synthetic_target(48)
    background = torch.zeros(3)
    for seed in (0, 1):  # the seed draws the initial colours
        params, init, history, _ = fit_2d(target, per_side=per_side, seed=seed)
        fitted = psnr(render_2d(params, 48, 48, background)[0], target)
        initial = psnr(render_2d(init, 48, 48, background)[0], target)
        assert fitted > PSNR_THRESHOLD_DB, f"seed {seed}: PSNR {fitted:.2f} dB"
        assert initial < INITIAL_MAX_DB, f"seed {seed}: initial PSNR {initial:.2f} dB"
        assert abs(history[-1] - fitted) < 0.5, "history is the PSNR of the renders"


def test_synthetic_target_holds_the_shapes_it_describes():
    # The docstring's picture: values in [0, 1]; a red disk (radius 0.18 size), a blue
    # square (0.3 size wide) and a green bar (0.38 x 0.08 size), each with its colour
    # at its centre and about its area in pixels (the boundary rows of pixels, about
    # 10-25 %, decide the rest); a background that changes down the image only.
    img = synthetic_target(48)
    assert img.shape == (48, 48, 3) and img.min() >= 0 and img.max() <= 1
    shapes = {
        "disk": ((16, 15), [0.9, 0.2, 0.15], torch.pi * (0.18 * 48) ** 2),
        "square": ((31, 33), [0.2, 0.35, 0.9], (0.3 * 48) ** 2),
        "bar": ((36, 14), [0.3, 0.85, 0.3], 0.38 * 0.08 * 48**2),
    }
    for name, ((row, col), rgb, area) in shapes.items():
        rgb = torch.tensor(rgb)
        assert torch.equal(img[row, col], rgb), name
        n = (img == rgb).all(-1).sum().item()
        assert abs(n / area - 1) < 0.25, (name, n, area)
    strip = img[:, 42:]  # right of every shape: background only
    torch.testing.assert_close(strip, strip[:, :1].expand_as(strip), atol=0, rtol=0)
    assert strip[:, 0].std(0).min() > 0.02, "the background is a vertical gradient"


def composite_transmittance_detached(colors: torch.Tensor, alphas: torch.Tensor):
    """Counterfactual: the same image, but a backward pass that ignores how each
    layer dims the layers behind it (T_i detached), the classic slip of a
    hand-written splatting backward. (N, ..., C), (N, ...) -> colour, T_N."""
    passed = torch.cumprod(1.0 - alphas, dim=0)
    T = torch.cat([torch.ones_like(alphas[:1]), passed[:-1]], dim=0).detach()
    return ((alphas * T).unsqueeze(-1) * colors).sum(dim=0), passed[-1]


def render_2d_transmittance_detached(params, height, width, background):
    """render_2d with `composite_transmittance_detached` (same forward values)."""
    original = globals()["composite"]
    globals()["composite"] = composite_transmittance_detached
    try:
        return render_2d(params, height, width, background)
    finally:
        globals()["composite"] = original


def test_renderer_gradients_match_finite_differences(render=render_2d):
    # Autograd through covariance, falloff and compositing = central differences.
    g = torch.Generator().manual_seed(4)
    n, size = 3, 6
    f64 = torch.float64
    params = {
        "mean": (torch.rand(n, 2, generator=g, dtype=f64) * size),
        "log_scale": torch.rand(n, 2, generator=g, dtype=f64) * 0.5,
        "angle": torch.rand(n, generator=g, dtype=f64),
        "color_logit": torch.randn(n, 3, generator=g, dtype=f64),
        "opacity_logit": torch.randn(n, generator=g, dtype=f64),
    }
    keys = list(params)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=f64)

    def f(*tensors):
        return render(dict(zip(keys, tensors)), size, size, bg)[0]

    inputs = tuple(params[k].requires_grad_(True) for k in keys)
    assert torch.autograd.gradcheck(
        f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, raise_exception=False
    )


def test_single_gaussian_renders_analytic_falloff():
    # One Gaussian over a black background: value = c o exp(-r^2 / (2 s^2)) with
    # c = o = sigmoid(20) = 1 - 2e-9, s = e (log_scale 1), and T = 1 - that.
    # A rotated anisotropic one follows (p - mu)^T Sigma^-1 (p - mu).
    ys, xs = torch.meshgrid(
        torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij"
    )
    params = {
        "mean": torch.tensor([[8.0, 8.0]]),
        "log_scale": torch.tensor([[1.0, 1.0]]),
        "angle": torch.zeros(1),
        "color_logit": torch.full((1, 3), 20.0),
        "opacity_logit": torch.tensor([20.0]),
    }
    img, T = render_2d(params, 16, 16, torch.zeros(3))
    expected = torch.exp(-((xs - 8) ** 2 + (ys - 8) ** 2) / (2 * torch.e**2))
    torch.testing.assert_close(img[..., 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(T, 1 - expected, atol=1e-6, rtol=0)
    # Rotated by 90 deg, std (3, 1) along x becomes std 3 along y.
    rot = dict(
        params,
        log_scale=torch.tensor([[3.0, 1.0]]).log(),
        angle=torch.tensor([torch.pi / 2]),
    )
    img, _ = render_2d(rot, 16, 16, torch.zeros(3))
    expected = torch.exp(-0.5 * ((xs - 8) ** 2 / 1.0 + (ys - 8) ** 2 / 9.0))
    torch.testing.assert_close(img[..., 0], expected, atol=1e-5, rtol=0)
