"""How good is the local affine (EWA) projection of a 3D Gaussian? A Monte Carlo check.

A pinhole camera maps (x, y, z) -> (fx x / z, fy y / z). This map is not linear, so the image
of a 3D Gaussian is not exactly a 2D Gaussian. EWA splatting (Zwicker et al. 2002) and 3DGS
(Kerbl et al. 2023, arXiv:2308.04079, Eq. (5)) replace it by its first-order Taylor expansion
at the mean, which gives Sigma' = J Sigma J^T. Here we draw many 3D points from the Gaussian,
project each one exactly, and compare the covariance of the projected points with Sigma'.

For a pinhole camera only the ratio (Gaussian size / depth) matters: scaling the whole scene
by k leaves the image unchanged. So "a wide Gaussian" and "a Gaussian close to the camera"
are the same failure, measured here by sigma_max / z.
"""

# --8<-- [start:monte_carlo]
import torch

from snippets.neoverse.gaussians import covariance_from_rotation_scale, project_covariance, project_mean


def monte_carlo_projection_error(
    quaternion: torch.Tensor,
    scale: torch.Tensor,
    mean_cam: torch.Tensor,
    fx: float = 100.0,
    fy: float = 100.0,
    num_samples: int = 200_000,
    seed: int = 0,
) -> dict[str, float]:
    """Compare the affine footprint J Sigma J^T of ONE Gaussian with the projected samples.

    quaternion: (4,); scale: (3,), linear; mean_cam: (3,) in camera coordinates, z > 0.
    returns a dict with
      rel_cov_error: ||Cov(projected samples) - J Sigma J^T||_F / ||J Sigma J^T||_F
      mean_shift:    distance between the mean of the projected samples and the projected
                     mean, in units of the footprint's RMS radius sqrt(tr(J Sigma J^T))
      behind:        fraction of samples with z <= 0 (dropped: they cannot be imaged)
    Sampling noise of rel_cov_error is about sqrt(2 / num_samples) (0.3 % for 200k samples).
    """
    g = torch.Generator().manual_seed(seed)
    q, s, mu = (t.double().unsqueeze(0) for t in (quaternion, scale, mean_cam))
    cov = covariance_from_rotation_scale(q, s)  # (1, 3, 3)
    L = torch.linalg.cholesky(cov[0])
    x = mu + torch.randn(num_samples, 3, generator=g, dtype=torch.float64) @ L.T  # x ~ N(mu, Sigma)
    front = x[:, 2] > 0
    uv = project_mean(x[front], fx, fy)  # exact, non-linear projection of every sample
    affine = project_covariance(cov, mu, fx, fy)[0]  # Eq. (5), arXiv:2308.04079 (W = I)
    rel = (torch.cov(uv.T) - affine).norm() / affine.norm()
    shift = (uv.mean(0) - project_mean(mu, fx, fy)[0]).norm() / affine.trace().sqrt()
    return {
        "rel_cov_error": rel.item(),
        "mean_shift": shift.item(),
        "behind": 1.0 - front.double().mean().item(),
    }
# --8<-- [end:monte_carlo]


# --8<-- [start:distance_sweep]
import torch

from snippets.neoverse.projection_check import monte_carlo_projection_error


def distance_sweep(depths: list[float], sigma: float = 0.1, num_samples: int = 200_000) -> list[dict[str, float]]:
    """One anisotropic, rotated Gaussian (largest std `sigma`) seen at several depths z.

    The mean sits off the optical axis at (0.3 z, -0.2 z, z), so the -fx x / z^2 terms of J
    matter. returns one dict per depth: depth, sigma_over_z and the fields of
    `monte_carlo_projection_error`.
    """
    q = torch.tensor([0.9, 0.3, -0.2, 0.25])
    s = torch.tensor([1.0, 0.6, 0.3]) * sigma
    rows = []
    for z in depths:
        mu = torch.tensor([0.3 * z, -0.2 * z, z])
        r = monte_carlo_projection_error(q, s, mu, num_samples=num_samples)
        rows.append({"depth": z, "sigma_over_z": sigma / z, **r})
    return rows
# --8<-- [end:distance_sweep]


# ----------------------------------------------------------------------------- tests


def test_affine_projection_matches_monte_carlo_for_small_gaussians():
    torch.set_num_threads(1)
    rows = distance_sweep([2.0, 5.0, 10.0])  # sigma / z = 0.05, 0.02, 0.01
    for r in rows:
        # 3 % is ten times the sampling noise sqrt(2/200k) = 0.3 %: what is left is the approximation.
        assert r["rel_cov_error"] < 0.03, f"z={r['depth']}: rel. error {r['rel_cov_error']:.4f}"
        assert r["mean_shift"] < 0.03, f"z={r['depth']}: mean shift {r['mean_shift']:.4f}"
    # Scale invariance of the pinhole: (mean, scale) -> k (mean, scale) leaves Sigma' unchanged.
    q = torch.tensor([[0.9, 0.3, -0.2, 0.25]], dtype=torch.float64)
    s = torch.tensor([[0.1, 0.06, 0.03]], dtype=torch.float64)
    mu = torch.tensor([[0.6, -0.4, 2.0]], dtype=torch.float64)
    a = project_covariance(covariance_from_rotation_scale(q, s), mu, 100.0, 100.0)
    b = project_covariance(covariance_from_rotation_scale(q, 7 * s), 7 * mu, 100.0, 100.0)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_qualifies_affine_projection_breaks_for_wide_or_close_gaussians():
    torch.set_num_threads(1)
    close, mid, far = distance_sweep([0.33, 0.5, 5.0])  # sigma / z = 0.30, 0.20, 0.02
    # Holds: far from the camera (small sigma / z) the affine footprint is right to MC noise.
    assert far["rel_cov_error"] < 0.03, far
    # Does not hold: the error grows roughly like (sigma / z)^2 as the Gaussian comes closer ...
    assert mid["rel_cov_error"] > 0.05, mid
    assert close["rel_cov_error"] > 0.15, close
    assert close["rel_cov_error"] > 2 * mid["rel_cov_error"] > 2 * far["rel_cov_error"]
    # ... and the projected samples are no longer centred on the projected mean.
    assert close["mean_shift"] > 0.08 and far["mean_shift"] < 0.03, (close, far)
