"""Reconstruct from one view, render from another: why NeoVerse also needs a generator.

A minimal stand-in for feed-forward reconstruction from a monocular frame: one
Gaussian per pixel, placed at that pixel's depth along its viewing ray, with the
pixel's colour (the "pixel-aligned Gaussians" of feed-forward 3DGS models; here the
depth is the true one, no network involved). Rendered from the source camera they
reproduce the frame. Rendered from a moved camera they leave holes: surfaces the
source camera never saw (behind the foreground object, beyond the image border) have
no Gaussians at all. Those holes are what a generative model has to fill in
(NeoVerse, arXiv:2601.00393, Fig. 1: renders of the 4DGS from novel viewpoints are
degraded conditions for video generation).

NeoVerse trains the generator on monocular videos, where the novel view has no
ground truth. Its first degradation pattern (arXiv:2601.00393, Sec. 3.2, Fig. 3a,
"visibility-based Gaussian culling") moves the camera, culls the Gaussians the moved
camera cannot see and renders the rest back into the ORIGINAL view: holes appear
there, and the original frame is the target. `occlusion_degradation` does that.

The scene is analytic (a red square in front of a patterned wall), so a ray caster
gives the ground truth of every image and of what each camera can see.
"""

# --8<-- [start:scene]
import torch

SQUARE_Z, SQUARE_HALF, WALL_Z = 3.0, 0.6, 6.0  # world coordinates


def camera(yaw_deg: float, center: tuple[float, float, float]):
    """World-to-camera (R, t): x_cam = R x_world + t, for a camera at `center`
    turned by `yaw_deg` about the vertical (y) axis, looking along its +z axis."""
    a = torch.deg2rad(torch.tensor(yaw_deg, dtype=torch.float64))
    c, s = a.cos().item(), a.sin().item()
    R_cw = torch.tensor(
        [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64
    )
    R = R_cw.T  # camera-to-world rotation is R_cw, so world-to-camera is its transpose
    C = torch.tensor(center, dtype=torch.float64)
    return R, -R @ C


def pixel_rays(R: torch.Tensor, t: torch.Tensor, size: int = 32, f: float = 32.0):
    """Camera centre (3,) and world directions (size, size, 3) of the pixel centres;
    each direction has camera-z component 1, so a ray parameter is a depth."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    d_cam = torch.stack(
        [(xs - size / 2) / f, (ys - size / 2) / f, torch.ones_like(xs)], dim=-1
    )
    return -R.T @ t, d_cam @ R  # d_cam @ R = R^T d per pixel


def raycast_scene(R: torch.Tensor, t: torch.Tensor, size: int = 32, f: float = 32.0):
    """Ground-truth image (size, size, 3) and depth along camera z (size, size)
    of the two-layer scene seen by camera (R, t)."""
    origin, d_world = pixel_rays(R, t, size, f)
    s_sq = (SQUARE_Z - origin[2]) / d_world[..., 2]  # ray parameter at the square
    hit = origin + s_sq[..., None] * d_world
    on_square = (hit[..., 0].abs() <= SQUARE_HALF) & (hit[..., 1].abs() <= SQUARE_HALF)
    s_wall = (WALL_Z - origin[2]) / d_world[..., 2]
    wall = origin + s_wall[..., None] * d_world
    wx, wy = wall[..., 0], wall[..., 1]
    wave = 0.5 + 0.5 * torch.sin(2 * torch.pi * wx / 1.6) * torch.cos(torch.pi * wy)
    wall_rgb = torch.stack(
        [0.25 + 0.4 * wave, 0.45 + 0.3 * wave, 0.7 - 0.3 * wave], dim=-1
    )
    red = torch.tensor([0.9, 0.15, 0.1], dtype=torch.float64)
    image = torch.where(on_square[..., None], red, wall_rgb)
    return image, torch.where(on_square, s_sq, s_wall)


def visible_from(
    points: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    size: int = 32,
    f: float = 32.0,
) -> dict[str, torch.Tensor]:
    """Ground truth for world points (N, 3) lying on the square or the wall:
    in_view (N,) = in front of camera (R, t) and inside its image; occluded (N,) =
    in view, but the square lies between the camera and the point."""
    cam = points @ R.T + t
    uv = f * cam[:, :2] / cam[:, 2:] + size / 2
    in_view = (cam[:, 2] > 0) & ((uv >= 0) & (uv <= size)).all(dim=1)
    C = -R.T @ t
    s = (SQUARE_Z - C[2]) / (points[:, 2] - C[2])  # where the sight line meets z = 3
    cross = C + s[:, None] * (points - C)
    blocked = (points[:, 2] > SQUARE_Z + 1e-9) & (s > 0) & (s < 1)
    blocked &= (cross[:, 0].abs() <= SQUARE_HALF) & (cross[:, 1].abs() <= SQUARE_HALF)
    return {"in_view": in_view, "occluded": in_view & blocked}


# --8<-- [end:scene]


# --8<-- [start:pixel_gaussians]
import torch

from snippets.neoverse.render3d import pixel_rays


def pixel_aligned_gaussians(
    image: torch.Tensor,
    depth: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    f: float = 32.0,
    opacity: float = 0.98,
):
    """One isotropic Gaussian per pixel of a single frame (the monocular 'recon').

    image: (H, W, 3); depth: (H, W) along camera z; (R, t): world-to-camera pose.
    returns a dict: world-space means (H W, 3) = camera centre + depth * ray, scales
    (H W, 3) = 0.6 pixel footprint at that depth, identity quaternions (H W, 4),
    colours (H W, 3), opacities (H W,).
    """
    size = depth.shape[0]
    origin, d_world = pixel_rays(R, t, size, f)
    means = (origin + depth[..., None] * d_world).reshape(-1, 3)  # back-projection
    n = means.shape[0]
    footprint = (depth / f).reshape(-1, 1) * 0.6
    return {
        "mean": means,
        "scale": footprint.expand(n, 3),
        "quat": torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).expand(n, 4),
        "color": image.reshape(-1, 3),
        "opacity": torch.full((n,), opacity, dtype=torch.float64),
    }


def subset(g: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Gaussians where keep (N,) is True."""
    return {k: v[keep] for k, v in g.items()}


# --8<-- [end:pixel_gaussians]


# --8<-- [start:render3d]
import torch

from snippets.neoverse.gaussians import (
    composite,
    covariance_from_rotation_scale,
    project_covariance,
    project_mean,
)


def render_3d(
    g: dict[str, torch.Tensor],
    R: torch.Tensor,
    t: torch.Tensor,
    size: int = 32,
    f: float = 32.0,
    dilation: float = 0.0,
):
    """Splat 3D Gaussians into camera (R, t): project, sort near-to-far, composite.

    returns image (size, size, 3) on a black background and the final transmittance
    (size, size): 1 where no Gaussian covers the pixel (a hole), 0 where covered.
    """
    mean_cam = g["mean"] @ R.T + t
    keep = mean_cam[:, 2] > 0.1  # drop Gaussians behind (or at) the camera
    mean_cam = mean_cam[keep]
    cov = covariance_from_rotation_scale(g["quat"][keep], g["scale"][keep])
    cov_cam = R @ cov @ R.T  # W Sigma W^T
    cov2d = project_covariance(cov_cam, mean_cam, f, f)  # Eq. (5), arXiv:2308.04079
    # The reference rasterizer widens every footprint by 0.3 px^2 (a low-pass
    # filter, not part of project_covariance); dilation=0.3 mimics it, the default 0
    # keeps these unoptimised one-pixel Gaussians sharp.
    cov2d = cov2d + dilation * torch.eye(2, dtype=cov2d.dtype)
    uv = project_mean(mean_cam, f, f) + size / 2  # principal point at image centre
    order = mean_cam[:, 2].argsort()  # near to far: index 0 in front
    uv, cov2d = uv[order], cov2d[order]
    colors, opac = g["color"][keep][order], g["opacity"][keep][order]
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    d = torch.stack([xs, ys], dim=-1)[None] - uv[:, None, None, :]  # (N, H, W, 2)
    maha = torch.einsum("nhwi,nij,nhwj->nhw", d, torch.linalg.inv(cov2d), d)
    alphas = opac[:, None, None] * torch.exp(-0.5 * maha)
    colors = colors[:, None, None, :].expand(-1, size, size, -1)
    return composite(colors, alphas)  # Eq. (3), arXiv:2308.04079


def render_depth(
    g: dict[str, torch.Tensor],
    R: torch.Tensor,
    t: torch.Tensor,
    size: int = 32,
    f: float = 32.0,
) -> torch.Tensor:
    """Expected depth (size, size) along camera z: composite each Gaussian's depth
    instead of its colour, divided by the covered fraction (inf where empty)."""
    z = (g["mean"] @ R.T + t)[:, 2:]
    image, T = render_3d(dict(g, color=z.expand(-1, 3)), R, t, size, f)
    covered = 1 - T
    return torch.where(covered > 1e-3, image[..., 0] / covered, torch.inf)


# --8<-- [end:render3d]


# --8<-- [start:novel_view]
import torch

from snippets.neoverse.render3d import (
    camera,
    pixel_aligned_gaussians,
    pixel_rays,
    raycast_scene,
    render_3d,
    visible_from,
)
from snippets.neoverse.splat2d import psnr


def novel_view_experiment(size: int = 32, shift: float = 1.2, yaw_deg: float = -10.0):
    """Reconstruct from a source view, render the source view and a moved view.

    returns images and transmittances of both renders, the ground truth of the
    moved view, the hole masks (transmittance > 0.5), the ground-truth mask of
    moved-view pixels whose surface the source camera never saw, and PSNRs.
    """
    R0, t0 = camera(0.0, (0.0, 0.0, 0.0))
    R1, t1 = camera(yaw_deg, (shift, 0.0, 0.0))
    src, depth = raycast_scene(R0, t0, size)
    g = pixel_aligned_gaussians(src, depth, R0, t0)
    re_src, T_src = render_3d(g, R0, t0, size)
    gt_new, depth_new = raycast_scene(R1, t1, size)
    re_new, T_new = render_3d(g, R1, t1, size)
    origin, rays = pixel_rays(R1, t1, size)
    points = (origin + depth_new[..., None] * rays).reshape(-1, 3)
    seen = visible_from(points, R0, t0, size)
    unseen = (~seen["in_view"] | seen["occluded"]).reshape(size, size)
    holes = T_new > 0.5
    return {
        "source": src,
        "source_render": re_src,
        "T_source": T_src,
        "novel_gt": gt_new,
        "novel_render": re_new,
        "T_novel": T_new,
        "holes_novel_mask": holes,
        "unseen_by_source": unseen,
        "holes_source": (T_src > 0.5).double().mean().item(),
        "holes_novel": holes.double().mean().item(),
        "psnr_source": psnr(re_src, src),
        "psnr_novel_covered": psnr(re_new[~holes], gt_new[~holes]),
        "psnr_novel_all": psnr(re_new, gt_new),
    }


# --8<-- [end:novel_view]


# --8<-- [start:occlusion_degradation]
import torch

from snippets.neoverse.render3d import (
    camera,
    pixel_aligned_gaussians,
    raycast_scene,
    render_3d,
    render_depth,
    subset,
    visible_from,
)


def occluded_in(
    g: dict[str, torch.Tensor],
    R: torch.Tensor,
    t: torch.Tensor,
    size: int = 32,
    f: float = 32.0,
    tol: float = 0.05,
) -> torch.Tensor:
    """(N,) True for Gaussians inside camera (R, t)'s image but behind the depth it
    renders there ("using depth", arXiv:2601.00393, Sec. 3.2). tol: 5 % of the
    depth, far below the factor 2 between wall and square, above the blur of one
    pixel."""
    depth = render_depth(g, R, t, size, f)
    cam = g["mean"] @ R.T + t
    uv = f * cam[:, :2] / cam[:, 2:] + size / 2
    inside = (cam[:, 2] > 0) & ((uv >= 0) & (uv < size)).all(dim=1)
    col, row = uv.clamp(0, size - 1).long().unbind(-1)
    return inside & (cam[:, 2] > depth[row, col] * (1 + tol))


def occlusion_degradation(
    size: int = 32, shift: float = 1.2, yaw_deg: float = -10.0, tol: float = 0.05
):
    """NeoVerse's occlusion simulation on one frame (arXiv:2601.00393, Fig. 3a).

    Reconstruct from the source frame, move the camera, cull the Gaussians the
    moved camera cannot see, render the rest back into the SOURCE camera. returns
    the degraded render and its transmittance, the target (the source frame
    itself), the hole mask and the ground-truth mask of source pixels occluded
    from the moved camera. tol: the depth test's margin (`occluded_in`).
    """
    R0, t0 = camera(0.0, (0.0, 0.0, 0.0))
    R1, t1 = camera(yaw_deg, (shift, 0.0, 0.0))
    frame, depth = raycast_scene(R0, t0, size)
    g = pixel_aligned_gaussians(frame, depth, R0, t0)
    kept = subset(g, ~occluded_in(g, R1, t1, size, tol=tol))  # visibility culling
    degraded, T = render_3d(kept, R0, t0, size)  # back into the original view
    holes = T > 0.5
    truth = visible_from(g["mean"], R1, t1, size)["occluded"].reshape(size, size)
    return {
        "target": frame,
        "degraded": degraded,
        "T": T,
        "holes_mask": holes,
        "occluded_truth": truth,
        "holes": holes.double().mean().item(),
    }


# --8<-- [end:occlusion_degradation]


# ----------------------------------------------------------------------------- tests

import torch.nn.functional as F

from snippets.neoverse.splat2d import psnr


def eroded(mask: torch.Tensor) -> torch.Tensor:
    """Pixels whose whole 3x3 neighbourhood lies in mask (H, W)."""
    return -F.max_pool2d(-mask.double()[None, None], 3, 1, 1)[0, 0] > 0.5


def agree_away_from_edges(mask: torch.Tensor, truth: torch.Tensor) -> bool:
    """mask == truth on every pixel whose 3x3 neighbourhood in truth is uniform: a
    one-pixel band along the truth's boundary is left to discretisation."""
    return bool(mask[eroded(truth)].all() and (~mask[eroded(~truth)]).all())


def test_agree_away_from_edges_needs_both_sides():
    truth = torch.zeros(8, 8, dtype=torch.bool)
    truth[2:6, 2:6] = True
    assert agree_away_from_edges(truth, truth)
    assert not agree_away_from_edges(torch.zeros_like(truth), truth)  # misses inside
    assert not agree_away_from_edges(torch.ones_like(truth), truth)  # extra outside


def test_novel_view_of_monocular_reconstruction_has_holes(shift=1.2, yaw_deg=-10.0):
    r = novel_view_experiment(shift=shift, yaw_deg=yaw_deg)
    # Seen from where it was reconstructed, the frame comes back: no holes.
    assert r["holes_source"] == 0.0, r["holes_source"]
    assert r["psnr_source"] > 25.0, r["psnr_source"]
    # From a moved camera, holes appear exactly where the moved camera sees a
    # surface the source camera never saw (ray-cast ground truth), and nowhere else.
    assert r["unseen_by_source"].any()
    assert agree_away_from_edges(r["holes_novel_mask"], r["unseen_by_source"])
    # What is covered is still right; the holes are what costs the PSNR.
    assert r["psnr_novel_covered"] > 24.0, r["psnr_novel_covered"]
    assert r["psnr_novel_all"] < r["psnr_novel_covered"] - 5.0, r
    # The returned record is consistent: masks and fractions from the same T.
    assert torch.equal(r["holes_novel_mask"], r["T_novel"] > 0.5)
    assert r["holes_novel"] == r["holes_novel_mask"].double().mean().item()
    assert r["holes_source"] == (r["T_source"] > 0.5).double().mean().item()
    assert r["psnr_source"] == psnr(r["source_render"], r["source"])
    assert r["psnr_novel_all"] == psnr(r["novel_render"], r["novel_gt"])


def occlusion_degradation_frustum_only(
    size: int = 32, shift: float = 1.2, yaw_deg: float = -10.0, tol: float = 0.05
):
    """The counterfactual: cull only what leaves the moved camera's image (a
    frustum test, no depth test), then render back into the source camera."""
    R0, t0 = camera(0.0, (0.0, 0.0, 0.0))
    R1, t1 = camera(yaw_deg, (shift, 0.0, 0.0))
    frame, depth = raycast_scene(R0, t0, size)
    g = pixel_aligned_gaussians(frame, depth, R0, t0)
    kept = subset(g, visible_from(g["mean"], R1, t1, size)["in_view"])
    degraded, T = render_3d(kept, R0, t0, size)
    holes = T > 0.5
    truth = visible_from(g["mean"], R1, t1, size)["occluded"].reshape(size, size)
    return {
        "target": frame,
        "degraded": degraded,
        "T": T,
        "holes_mask": holes,
        "occluded_truth": truth,
        "holes": holes.double().mean().item(),
    }


def occlusion_degradation_mirrored(
    size: int = 32, shift: float = 1.2, yaw_deg: float = -10.0, tol: float = 0.05
):
    """The counterfactual: the camera moved the other way (signs of the shift and the
    turn flipped), its own truth reported: holes on the square's other side."""
    return occlusion_degradation(size, -shift, -yaw_deg, tol)


def test_occlusion_simulation_makes_a_training_pair_from_one_frame(
    tol=0.05, degrade=occlusion_degradation
):
    R0, t0 = camera(0.0, (0.0, 0.0, 0.0))
    frame, depth = raycast_scene(R0, t0)
    uncut, _ = render_3d(pixel_aligned_gaussians(frame, depth, R0, t0), R0, t0)
    d4 = depth[None, None]
    spread = F.max_pool2d(d4, 3, 1, 1) + F.max_pool2d(-d4, 3, 1, 1)  # max - min
    means = pixel_aligned_gaussians(frame, depth, R0, t0)["mean"]
    for shift, yaw in ((1.2, -10.0), (-0.8, 8.0), (0.6, 0.0)):
        r = degrade(shift=shift, yaw_deg=yaw, tol=tol)
        # The ray-cast truth for THIS move, computed here, not taken from `degrade`.
        R1, t1 = camera(yaw, (shift, 0.0, 0.0))
        truth = visible_from(means, R1, t1)["occluded"].reshape(frame.shape[:2])
        # Holes appear in the ORIGINAL view, exactly where the source camera sees a
        # surface that the moved camera cannot see (behind the square) ...
        assert truth.any() and torch.equal(r["occluded_truth"], truth), (shift, yaw)
        assert agree_away_from_edges(r["holes_mask"], truth), (shift, yaw)
        # ... and elsewhere the render is the original frame, the target: as good as
        # the uncut render (within 1 dB, the tails of culled neighbours), on pixels
        # one pixel away from the holes and from the square's silhouette.
        assert torch.equal(r["target"], frame)
        assert torch.equal(r["holes_mask"], r["T"] > 0.5)
        assert r["holes"] == r["holes_mask"].double().mean().item()
        kept = eroded(~truth) & (spread[0, 0] < 0.5)
        cut_db = psnr(r["degraded"][kept], frame[kept])
        assert cut_db > psnr(uncut[kept], frame[kept]) - 1.0, (shift, yaw, cut_db)


def test_raycast_sees_the_square_in_front_of_the_wall():
    # A camera 1 unit behind the origin, looking along +z: the central pixels see the
    # red square at depth 3 + 1, the corners the wall at 6 + 1; all colours in [0, 1],
    # the wall textured.
    R, t = camera(0.0, (0.0, 0.0, -1.0))
    img, depth = raycast_scene(R, t, 16, 16.0)
    assert depth[7:9, 7:9].eq(4.0).all() and depth[0, 0] == depth[15, 15] == 7.0
    red = img[7:9, 7:9].reshape(-1, 3)
    assert (red[:, 0] > red[:, 1:].max(1).values).all(), red
    assert img.min() >= 0 and img.max() <= 1
    wall = img[depth == 7.0]
    assert wall.std(0).min() > 0.01, "the wall has a texture"
    # Visibility of known points from that camera (sight lines from (0, 0, -1)).
    pts = torch.tensor(
        [
            [0.0, 0.0, 6.0],  # straight behind the square: hidden
            [0.9, 0.0, 6.0],  # crosses z = 3 at x = 0.51: hidden
            [1.1, 0.0, 6.0],  # crosses z = 3 at x = 0.63: seen
            [0.3, 0.2, 3.0],  # on the square itself: seen
            [20.0, 0.0, 6.0],
        ],  # outside the image (u = 107 px)
        dtype=torch.float64,
    )
    v = visible_from(pts, R, t)
    assert v["in_view"].tolist() == [True, True, True, True, False]
    assert v["occluded"].tolist() == [True, True, False, False, False]


def test_render_3d_keeps_near_gaussians_and_dilation_widens_them():
    # One small Gaussian 0.5 in front of the camera is drawn (only z <= 0.1 is
    # dropped); the 0.3 px^2 dilation spreads it over more of the image.
    R, t = camera(0.0, (0.0, 0.0, 0.0))
    g = {
        "mean": torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64),
        "scale": torch.full((1, 3), 0.01, dtype=torch.float64),
        "quat": torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
        "color": torch.ones(1, 3, dtype=torch.float64),
        "opacity": torch.ones(1, dtype=torch.float64),
    }
    _, T = render_3d(g, R, t)
    _, T_wide = render_3d(g, R, t, dilation=0.3)
    assert T.min() < 0.9
    assert (1 - T_wide).sum() > 1.2 * (1 - T).sum()
    # a half-pixel offset from the mean: alpha is larger with the dilation
    assert T_wide[15, 15] < T[15, 15]


def test_raycast_and_pixel_gaussians_are_consistent():
    # Unprojected pixel centres re-project to the same pixel centres (a focal length
    # other than the default: it has to reach every step).
    f = 24.0
    R, t = camera(10.0, (0.3, -0.2, 0.1))
    img, depth = raycast_scene(R, t, 16, f)
    g = pixel_aligned_gaussians(img, depth, R, t, f=f)
    uv = project_mean(g["mean"] @ R.T + t, f, f) + 8
    centres = torch.arange(16, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    expected = torch.stack([xs, ys], -1).reshape(-1, 2)
    torch.testing.assert_close(uv, expected, atol=1e-9, rtol=0)
    # The rendered depth is the ray-cast depth, to 1 %, away from the square's edge
    # (there a pixel mixes the two depths: the blur `occluded_in` tolerates).
    z = render_depth(g, R, t, 16, f)
    d4 = depth[None, None]
    spread = F.max_pool2d(d4, 3, 1, 1) + F.max_pool2d(-d4, 3, 1, 1)  # max - min
    smooth = spread[0, 0] < 0.5
    assert smooth.double().mean() > 0.5
    torch.testing.assert_close(z[smooth], depth[smooth], atol=0, rtol=0.01)
