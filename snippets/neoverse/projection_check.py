"""How good is the local affine (EWA) projection of a 3D Gaussian? A Monte Carlo check.

A pinhole camera maps (x, y, z) -> (fx x / z, fy y / z). This map is not linear, so
the image of a 3D Gaussian is not exactly a 2D Gaussian. EWA splatting (Zwicker et al.
2002) and 3DGS (Kerbl et al. 2023, arXiv:2308.04079, Eq. (5)) replace it by its
first-order Taylor expansion at the mean, which gives Sigma' = J Sigma J^T. Here we
draw many 3D points from the Gaussian, project each one exactly, and compare the
projected points with Sigma' and with the projected mean.

For a pinhole camera only the ratio (Gaussian size / depth) matters: scaling the
whole scene by k leaves the image unchanged. So "a wide Gaussian" and "a Gaussian
close to the camera" are the same failure, measured here by sigma_max / z.

Samples come in antithetic pairs (mu + e, mu - e): still exact draws from N(mu,
Sigma), but every odd function of e averages to exactly 0. That removes the
sampling noise of the linear part from the comparison of the exact projection with
its linearisation (`cov_gap`), so the (sigma/z)^2 law can be checked at small
sigma/z, where the plain error drowns in the sqrt(2 / M) noise.
"""

# --8<-- [start:monte_carlo]
import torch

from snippets.neoverse.gaussians import (
    covariance_from_rotation_scale,
    project_covariance,
    project_mean,
)


def monte_carlo_projection_error(
    quaternion: torch.Tensor,
    scale: torch.Tensor,
    mean_cam: torch.Tensor,
    fx: float = 100.0,
    fy: float = 100.0,
    num_samples: int = 200_000,
    seed: int = 0,
    affine_fn=project_covariance,
) -> dict[str, float]:
    """Compare the affine footprint J Sigma J^T of ONE Gaussian with projected samples.

    quaternion: (4,); scale: (3,), linear; mean_cam: (3,) in camera coords, z > 0.
    affine_fn: the footprint under test (default: Eq. (5), `project_covariance`).
    returns a dict with
      rel_cov_error: ||Cov(projected) - J Sigma J^T||_F / ||J Sigma J^T||_F
                     (sampling noise about sqrt(2 / num_samples), 0.3 % for 200k)
      cov_gap:       ||Cov(projected) - Cov(linearised)||_F / ||J Sigma J^T||_F on
                     the same samples: the approximation error without the noise
      mean_shift:    |mean(projected) - projected mean| in units of the footprint's
                     RMS radius sqrt(tr(J Sigma J^T))
      behind:        fraction of samples with z <= 0 (they cannot be imaged)
    """
    g = torch.Generator().manual_seed(seed)
    q, s, mu = (t.double().unsqueeze(0) for t in (quaternion, scale, mean_cam))
    cov = covariance_from_rotation_scale(q, s)  # (1, 3, 3)
    L = torch.linalg.cholesky(cov[0])
    e = torch.randn(num_samples // 2, 3, generator=g, dtype=torch.float64)
    x = mu + torch.cat([e, -e]) @ L.T  # antithetic pairs, x ~ N(mu, Sigma)
    front = x[:, 2] > 0
    uv = project_mean(x[front], fx, fy)  # exact, non-linear projection per sample
    J = torch.autograd.functional.jacobian(lambda p: project_mean(p, fx, fy)[0], mu)[
        :, 0
    ]  # (2, 3), the Jacobian at the mean
    uv_lin = project_mean(mu, fx, fy) + (x[front] - mu) @ J.T  # first-order Taylor
    affine = affine_fn(cov, mu, fx, fy)[0]  # Eq. (5), arXiv:2308.04079
    scale2d = affine.norm()
    shift = uv.mean(0) - project_mean(mu, fx, fy)[0]
    return {
        "rel_cov_error": ((torch.cov(uv.T) - affine).norm() / scale2d).item(),
        "cov_gap": ((torch.cov(uv.T) - torch.cov(uv_lin.T)).norm() / scale2d).item(),
        "mean_shift": (shift.norm() / affine.trace().sqrt()).item(),
        "behind": 1.0 - front.double().mean().item(),
    }


# --8<-- [end:monte_carlo]


# --8<-- [start:distance_sweep]
import torch

from snippets.neoverse.projection_check import monte_carlo_projection_error


def distance_sweep(
    depths: list[float], sigma: float = 0.1, num_samples: int = 200_000
) -> list[dict[str, float]]:
    """One anisotropic, rotated Gaussian (largest std `sigma`) seen at several depths.

    The mean sits off the optical axis at (0.3 z, -0.2 z, z), so the -fx x / z^2
    terms of J matter. returns one dict per depth: depth, sigma_over_z and the
    fields of `monte_carlo_projection_error`.
    """
    q = torch.tensor([0.9, 0.3, -0.2, 0.25])
    s = torch.tensor([1.0, 0.6, 0.3]) * sigma
    rows = []
    for z in depths:
        mu = torch.tensor([0.3 * z, -0.2 * z, z])
        r = monte_carlo_projection_error(q, s, mu, num_samples=num_samples)
        rows.append({"depth": z, "sigma_over_z": sigma / z, **r})
    return rows


def random_gaussian_at(sigma_over_z: float, seed: int) -> dict[str, torch.Tensor]:
    """A random Gaussian (rotation, anisotropy, off-axis direction up to ~30 deg)
    with largest std 0.1, placed at the depth z = 0.1 / sigma_over_z."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, generator=g, dtype=torch.float64)
    s = torch.rand(3, generator=g, dtype=torch.float64) * 0.8 + 0.2
    s = 0.1 * s / s.max()
    d = torch.randn(2, generator=g, dtype=torch.float64) * 0.3  # (x / z, y / z)
    z = 0.1 / sigma_over_z
    mu = torch.tensor([d[0] * z, d[1] * z, z], dtype=torch.float64)
    return {"quaternion": q, "scale": s, "mean_cam": mu}


# --8<-- [end:distance_sweep]


# ----------------------------------------------------------------------------- tests


import math

# "Agrees" means: within 10x the Monte Carlo noise sqrt(2 / 200k) = 0.3 %.
AGREE = 0.03
SEEDS = range(5)  # five random Gaussians (orientation, anisotropy, off-axis angle)


def error_at(sigma_over_z: float, seed: int, affine_fn=project_covariance):
    return monte_carlo_projection_error(
        **random_gaussian_at(sigma_over_z, seed), affine_fn=affine_fn
    )


def project_covariance_weak_perspective(cov3d, mean_cam, fx, fy):
    """Counterfactual footprint: J without its -f x / z^2, -f y / z^2 column, i.e.
    the Gaussian scaled by f / z as if it sat on the optical axis (weak
    perspective). (..., 3, 3), (..., 3) -> (..., 2, 2)."""
    z = mean_cam[..., 2]
    f = torch.tensor([fx, fy], dtype=cov3d.dtype)
    return cov3d[..., :2, :2] * (f[:, None] * f[None, :]) / (z**2)[..., None, None]


def local_slope(field: str, seed: int, lo: float, hi: float) -> float:
    """d log(error) / d log(sigma / z) between two sizes."""
    a, b = error_at(lo, seed)[field], error_at(hi, seed)[field]
    return math.log(b / a) / math.log(hi / lo)


def test_affine_projection_matches_monte_carlo_for_small_gaussians(
    affine_fn=project_covariance,
):
    for seed in SEEDS:
        for sigma_over_z in (0.05, 0.02, 0.01):
            r = error_at(sigma_over_z, seed, affine_fn)
            assert r["rel_cov_error"] < AGREE, (seed, sigma_over_z, r)
        # The error is second order: the covariance gap scales like (sigma / z)^2,
        # the mean shift like sigma / z (the quadratic Taylor term has mean
        # O(sigma^2)). The band +-0.1 leaves room for next-order terms and the ~1 %
        # noise of cov_gap and rejects every other integer exponent.
        gap_slope = local_slope("cov_gap", seed, 0.0125, 0.05)
        shift_slope = local_slope("mean_shift", seed, 0.0125, 0.05)
        assert abs(gap_slope - 2) < 0.1, (seed, gap_slope)
        assert abs(shift_slope - 1) < 0.1, (seed, shift_slope)


def test_random_gaussians_and_the_behind_fraction():
    # random_gaussian_at: seeded; largest std exactly 0.1, the others 0.02-0.1; the
    # depth is 0.1 / (sigma / z) and the viewing direction (x / z, y / z) does not
    # depend on the depth.
    a, b = random_gaussian_at(0.02, 3), random_gaussian_at(0.05, 3)
    assert all(torch.equal(a[k], random_gaussian_at(0.02, 3)[k]) for k in a)
    assert all(v.dtype == torch.float64 for v in a.values())
    assert a["scale"].max() == 0.1 and a["scale"].min() >= 0.02 - 1e-12
    assert abs(a["mean_cam"][2].item() - 5.0) < 1e-12
    torch.testing.assert_close(
        a["mean_cam"] / a["mean_cam"][2],
        b["mean_cam"] / b["mean_cam"][2],
        atol=1e-12,
        rtol=0,
    )
    # A Gaussian whose mean is one std in front of the camera: a fraction
    # Phi(-1) = 0.159 of it lies behind (z <= 0); 5 standard errors of a fraction
    # over the 10 000 independent pairs.
    q = torch.tensor([1.0, 0.0, 0.0, 0.0])
    r = monte_carlo_projection_error(
        q, torch.full((3,), 0.1), torch.tensor([0.0, 0.0, 0.1]), num_samples=20_000
    )
    p = 0.15866
    assert abs(r["behind"] - p) < 5 * (p * (1 - p) / 10_000) ** 0.5, r["behind"]


def test_pinhole_only_sees_size_over_depth():
    # Scale invariance: (mean, scale) -> k (mean, scale) leaves Sigma' unchanged.
    q = torch.tensor([[0.9, 0.3, -0.2, 0.25]], dtype=torch.float64)
    s = torch.tensor([[0.1, 0.06, 0.03]], dtype=torch.float64)
    mu = torch.tensor([[0.6, -0.4, 2.0]], dtype=torch.float64)
    a = project_covariance(covariance_from_rotation_scale(q, s), mu, 100.0, 100.0)
    cov7 = covariance_from_rotation_scale(q, 7 * s)
    b = project_covariance(cov7, 7 * mu, 100.0, 100.0)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_qualifies_affine_projection_breaks_for_wide_or_close_gaussians():
    for seed in SEEDS:
        far, close = error_at(0.02, seed), error_at(0.3, seed)
        # Holds: far from the camera the footprint agrees to Monte Carlo noise.
        assert far["rel_cov_error"] < AGREE, (seed, far)
        # Does not hold: at sigma / z = 0.3 the error leaves that band for every
        # Gaussian tried, and the samples drift off the projected mean (15x farther
        # than at sigma / z = 0.02 by the linear law; asserted: more than 10x).
        assert close["rel_cov_error"] > AGREE, (seed, close)
        assert close["mean_shift"] > 10 * far["mean_shift"], (seed, close, far)


def test_close_gaussian_covariance_error_does_not_settle():
    # The page's table Gaussian (distance_sweep) with 8 sample seeds. The projected
    # u = fx x / z has no variance: z has a positive density at 0, so P(|u| > r)
    # ~ 1 / r and u^2 has tail index 1/2; the sample covariance is of the order of
    # its largest term and changes by orders of magnitude between runs. Where the
    # samples stay far from z = 0 (sigma / z <= 0.2) the 8 runs agree to 10x the
    # noise sqrt(2 / M) = 0.3 %; at sigma / z = 0.4 they spread over more than a
    # factor 2 (a conservative bar for a tail index 1/2), so no single value of
    # that row is a measurement.
    q = torch.tensor([0.9, 0.3, -0.2, 0.25])
    s = torch.tensor([1.0, 0.6, 0.3]) * 0.1

    def runs(z: float) -> list[float]:
        mu = torch.tensor([0.3 * z, -0.2 * z, z])
        return [
            monte_carlo_projection_error(q, s, mu, seed=k)["rel_cov_error"]
            for k in range(8)
        ]

    for z in (1.0, 0.5):
        e = runs(z)
        assert max(e) - min(e) < AGREE, (z, e)
    e = runs(0.25)
    assert max(e) / min(e) > 2, e
