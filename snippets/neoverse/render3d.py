"""Reconstruct from one view, render from another: why NeoVerse also needs a generator.

A minimal stand-in for feed-forward reconstruction from a monocular frame: one Gaussian per
pixel, placed at that pixel's depth along its viewing ray, with the pixel's colour (the
"pixel-aligned Gaussians" used by feed-forward 3DGS models; here the depth is the true one,
no network involved). Rendered from the source camera they reproduce the frame. Rendered
from a moved camera they leave holes: surfaces that the source camera never saw (behind
the foreground object, beyond the image border) have no Gaussians at all. Those holes are
what a generative model has to fill in (NeoVerse, arXiv:2601.00393, Fig. 1: the 4DGS
renders from novel viewpoints serve as degraded conditions for video generation).

The full 3D pipeline uses all three functions of `gaussians.py`: covariance, projection
(with W = camera rotation), sorting by depth and front-to-back compositing.
"""

# --8<-- [start:scene]
import torch


def camera(yaw_deg: float, center: tuple[float, float, float]):
    """World-to-camera (R, t): x_cam = R x_world + t, for a camera at `center` turned by
    `yaw_deg` about the vertical (y) axis. The camera looks along its +z axis."""
    a = torch.deg2rad(torch.tensor(yaw_deg, dtype=torch.float64))
    R_cw = torch.tensor([[a.cos(), 0.0, a.sin()], [0.0, 1.0, 0.0], [-a.sin(), 0.0, a.cos()]], dtype=torch.float64)
    R = R_cw.T  # camera-to-world rotation is R_cw, so world-to-camera is its transpose
    C = torch.tensor(center, dtype=torch.float64)
    return R, -R @ C


def raycast_scene(R: torch.Tensor, t: torch.Tensor, size: int = 32, f: float = 32.0):
    """Ground-truth image and depth of a two-layer scene seen by camera (R, t).

    Scene (world coordinates): a red square |x|, |y| <= 0.6 at z = 3 in front of a
    wall at z = 6 with a smooth wave pattern. returns image (size, size, 3) and depth along camera z (size, size).
    """
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5,
                            torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
    d_cam = torch.stack([(xs - size / 2) / f, (ys - size / 2) / f, torch.ones_like(xs)], dim=-1)
    d_world = d_cam @ R  # R^T d for each pixel
    origin = -R.T @ t
    s_sq = (3.0 - origin[2]) / d_world[..., 2]  # ray parameter at the square's plane
    hit = origin + s_sq[..., None] * d_world
    on_square = (hit[..., 0].abs() <= 0.6) & (hit[..., 1].abs() <= 0.6)
    s_wall = (6.0 - origin[2]) / d_world[..., 2]
    wall = origin + s_wall[..., None] * d_world
    wx, wy = wall[..., 0], wall[..., 1]
    wave = 0.5 + 0.5 * torch.sin(2 * torch.pi * wx / 1.6) * torch.cos(2 * torch.pi * wy / 2.0)  # smooth pattern
    wall_rgb = torch.stack([0.25 + 0.4 * wave, 0.45 + 0.3 * wave, 0.7 - 0.3 * wave], dim=-1)
    image = torch.where(on_square[..., None], torch.tensor([0.9, 0.15, 0.1], dtype=torch.float64), wall_rgb)
    s = torch.where(on_square, s_sq, s_wall)
    return image, s  # d_cam has z = 1, so s is the depth along the camera's z axis
# --8<-- [end:scene]


# --8<-- [start:pixel_gaussians]
import torch


def pixel_aligned_gaussians(image: torch.Tensor, depth: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                            f: float = 32.0, opacity: float = 0.98) -> dict[str, torch.Tensor]:
    """One isotropic Gaussian per pixel of a single frame (the monocular 'reconstruction').

    image: (H, W, 3); depth: (H, W) along camera z; (R, t): the frame's world-to-camera pose.
    returns world-space means (H W, 3), scales (H W, 3) = 0.6 pixel footprint at that depth,
    identity quaternions (H W, 4), colours (H W, 3), opacities (H W,).
    """
    h, w = depth.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5,
                            torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    x_cam = torch.stack([(xs - w / 2) / f * depth, (ys - h / 2) / f * depth, depth], dim=-1).reshape(-1, 3)
    means = (x_cam - t) @ R  # R^T (x_cam - t): back to world coordinates
    footprint = (depth / f).reshape(-1, 1) * 0.6
    n = means.shape[0]
    return {
        "mean": means,
        "scale": footprint.expand(n, 3),
        "quat": torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).expand(n, 4),
        "color": image.reshape(-1, 3),
        "opacity": torch.full((n,), opacity, dtype=torch.float64),
    }
# --8<-- [end:pixel_gaussians]


# --8<-- [start:render3d]
import torch

from snippets.neoverse.gaussians import composite, covariance_from_rotation_scale, project_covariance, project_mean


def render_3d(g: dict[str, torch.Tensor], R: torch.Tensor, t: torch.Tensor, size: int = 32, f: float = 32.0,
              dilation: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Splat 3D Gaussians into camera (R, t): project, sort near-to-far, composite.

    returns image (size, size, 3) on a black background and the final transmittance
    (size, size): 1 where no Gaussian covers the pixel (a hole), 0 where fully covered.
    """
    mean_cam = g["mean"] @ R.T + t
    keep = mean_cam[:, 2] > 0.1  # drop Gaussians behind (or at) the camera
    mean_cam = mean_cam[keep]
    cov_cam = R @ covariance_from_rotation_scale(g["quat"][keep], g["scale"][keep]) @ R.T  # W Sigma W^T
    cov2d = project_covariance(cov_cam, mean_cam, f, f)  # Eq. (5), arXiv:2308.04079
    # The reference rasterizer widens every footprint by 0.3 px^2 so that no splat is thinner
    # than a pixel (a low-pass filter, not part of project_covariance). Pass dilation=0.3 to
    # mimic it; the default 0 keeps these unoptimised one-pixel Gaussians sharp.
    cov2d = cov2d + dilation * torch.eye(2, dtype=cov2d.dtype)
    uv = project_mean(mean_cam, f, f) + size / 2  # principal point at the image centre
    order = mean_cam[:, 2].argsort()  # near to far: index 0 in front, as composite expects
    uv, cov2d = uv[order], cov2d[order]
    colors, opac = g["color"][keep][order], g["opacity"][keep][order]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5,
                            torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
    d = torch.stack([xs, ys], dim=-1)[None] - uv[:, None, None, :]  # (N, H, W, 2)
    maha = torch.einsum("nhwi,nij,nhwj->nhw", d, torch.linalg.inv(cov2d), d)
    alphas = opac[:, None, None] * torch.exp(-0.5 * maha)
    image, T = composite(colors[:, None, None, :].expand(-1, size, size, -1), alphas)  # Eq. (3)
    return image, T
# --8<-- [end:render3d]


# --8<-- [start:novel_view]
import torch

from snippets.neoverse.render3d import camera, pixel_aligned_gaussians, raycast_scene, render_3d
from snippets.neoverse.splat2d import psnr


def novel_view_experiment(size: int = 32, shift: float = 1.2, yaw_deg: float = -10.0) -> dict:
    """Reconstruct from a source view, render the source view and a moved view.

    returns images and transmittances of both renders, the ground truth of the moved view,
    the hole fraction (pixels with transmittance > 0.5) and PSNRs against ground truth.
    """
    R0, t0 = camera(0.0, (0.0, 0.0, 0.0))
    R1, t1 = camera(yaw_deg, (shift, 0.0, 0.0))
    src, depth = raycast_scene(R0, t0, size)
    g = pixel_aligned_gaussians(src, depth, R0, t0)
    re_src, T_src = render_3d(g, R0, t0, size)
    gt_new, _ = raycast_scene(R1, t1, size)
    re_new, T_new = render_3d(g, R1, t1, size)
    holes = T_new > 0.5
    return {
        "source": src, "source_render": re_src, "T_source": T_src,
        "novel_gt": gt_new, "novel_render": re_new, "T_novel": T_new,
        "holes_source": (T_src > 0.5).double().mean().item(),
        "holes_novel": holes.double().mean().item(),
        "psnr_source": psnr(re_src, src),
        "psnr_novel_covered": psnr(re_new[~holes], gt_new[~holes]),
        "psnr_novel_all": psnr(re_new, gt_new),
    }
# --8<-- [end:novel_view]


# ----------------------------------------------------------------------------- tests


def test_novel_view_of_monocular_reconstruction_has_holes():
    torch.set_num_threads(1)
    r = novel_view_experiment()
    # Seen from where it was reconstructed, the frame comes back: no holes, close colours.
    assert r["holes_source"] == 0.0, r["holes_source"]
    assert r["psnr_source"] > 25.0, r["psnr_source"]
    # From a moved camera, part of the image has no Gaussians at all ...
    assert r["holes_novel"] > 0.05, r["holes_novel"]
    # ... while what is covered is still right; the holes are what costs the PSNR.
    assert r["psnr_novel_covered"] > 24.0, r["psnr_novel_covered"]
    assert r["psnr_novel_all"] < r["psnr_novel_covered"] - 5.0, (r["psnr_novel_all"], r["psnr_novel_covered"])


def test_raycast_and_pixel_gaussians_are_consistent():
    # Unprojected pixel centres re-project to the same pixel centres (pose round trip).
    R, t = camera(10.0, (0.3, -0.2, 0.1))
    img, depth = raycast_scene(R, t, 16)
    g = pixel_aligned_gaussians(img, depth, R, t)
    uv = project_mean(g["mean"] @ R.T + t, 32.0, 32.0) + 8
    ys, xs = torch.meshgrid(torch.arange(16, dtype=torch.float64) + 0.5,
                            torch.arange(16, dtype=torch.float64) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([xs, ys], -1).reshape(-1, 2), atol=1e-9, rtol=0)
