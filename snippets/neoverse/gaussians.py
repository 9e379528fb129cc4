"""The Gaussian primitive of 3D Gaussian Splatting and the operations that render it.

3DGS (Kerbl et al. 2023, arXiv:2308.04079, Sec. 4) represents a scene by many
anisotropic 3D Gaussians. Each has a mean mu (3,), a rotation (unit quaternion,
(w, x, y, z) order as in the reference code), a scale s (3,), an opacity o in [0, 1]
and a colour. Rendering needs

1. the 3D covariance Sigma = R S S^T R^T                # Eq. (6), arXiv:2308.04079
2. its image-plane footprint Sigma' = J W Sigma W^T J^T   # Eq. (5), arXiv:2308.04079
   (the local affine approximation of EWA splatting, Zwicker et al. 2002)
3. front-to-back compositing C = sum_i c_i a_i prod_{j<i}(1 - a_j)   # Eq. (3)

This module holds exactly these three functions plus the back-to-front "over" loop
used to check the third one.
"""

# --8<-- [start:covariance]
import torch


def quaternion_to_rotation(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions.

    quaternion: (..., 4) in (w, x, y, z) order, any non-zero norm (normalised here),
    e.g. (N, 4) or a single (4,).
    returns: (..., 3, 3) rotation matrices (orthonormal, det = +1).
    """
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    # Unit quaternion -> matrix (same convention as the 3DGS reference code).
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def covariance_from_rotation_scale(
    quaternion: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """3D covariance of each Gaussian.

    quaternion: (N, 4), (w, x, y, z); scale: (N, 3), linear standard deviations
    along the Gaussian's own axes (not log-scales).
    returns: (N, 3, 3), Sigma = R S S^T R^T  (Eq. (6), arXiv:2308.04079).

    Written as M M^T with M = R S, Sigma is symmetric positive semi-definite for
    *any* parameters, which is why 3DGS optimises (q, s) and not Sigma's 9 entries.
    """
    R = quaternion_to_rotation(quaternion)
    M = R * scale.unsqueeze(-2)  # R @ diag(s): scales the columns of R
    return M @ M.transpose(-1, -2)  # Eq. (6), arXiv:2308.04079


# --8<-- [end:covariance]


# --8<-- [start:projection]
import torch


def project_mean(mean_cam: torch.Tensor, fx: float, fy: float) -> torch.Tensor:
    """Pinhole projection u = fx x / z, v = fy y / z (principal point at 0).

    mean_cam: (..., 3) points in camera coordinates (z > 0 in front of the camera).
    returns: (..., 2) image-plane coordinates in pixels.
    """
    x, y, z = mean_cam.unbind(-1)
    return torch.stack([fx * x / z, fy * y / z], dim=-1)


def project_covariance(
    cov3d: torch.Tensor, mean_cam: torch.Tensor, fx: float, fy: float
) -> torch.Tensor:
    """Image-plane covariance of 3D Gaussians whose means are in camera coordinates.

    cov3d: (..., 3, 3) covariances in camera coordinates (so W = I in
    Sigma' = J W Sigma W^T J^T); mean_cam: (..., 3); fx, fy: focal lengths in pixels.
    returns: (..., 2, 2), Sigma' = J Sigma J^T  (Eq. (5), arXiv:2308.04079), J the
    Jacobian of (x, y, z) -> (fx x / z, fy y / z) at the mean (EWA's local affine
    approximation). No low-pass dilation here (the reference rasterizer adds
    0.3 px^2 to the diagonal).
    """
    x, y, z = mean_cam.unbind(-1)
    zeros = torch.zeros_like(z)
    J = torch.stack(
        [
            fx / z,
            zeros,
            -fx * x / z**2,
            zeros,
            fy / z,
            -fy * y / z**2,
        ],
        dim=-1,
    ).reshape(mean_cam.shape[:-1] + (2, 3))
    return J @ cov3d @ J.transpose(-1, -2)  # Eq. (5), arXiv:2308.04079 (W = I)


# --8<-- [end:projection]


# --8<-- [start:composite]
import torch


def composite(
    colors: torch.Tensor, alphas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back alpha compositing over the leading dimension (index 0 nearest).

    colors: (N, ..., C); alphas: (N, ...) in [0, 1], same middle dims as colors.
    returns: color (..., C) = sum_i c_i a_i prod_{j<i} (1 - a_j)  (Eq. (3),
             arXiv:2308.04079) and transmittance (...) = prod_i (1 - a_i), the
             light that passes all N layers (multiply a background colour by it).
    """
    one_minus = 1.0 - alphas
    passed = torch.cumprod(one_minus, dim=0)  # prod_{j<=i} (1 - a_j)
    # T_i = prod_{j<i} (1 - a_j): exclusive product, T_0 = 1 for the nearest layer.
    T = torch.cat([torch.ones_like(alphas[:1]), passed[:-1]], dim=0)
    weights = alphas * T  # a_i T_i
    color = (weights.unsqueeze(-1) * colors).sum(dim=0)  # Eq. (3), arXiv:2308.04079
    return color, passed[-1]


# --8<-- [end:composite]


# --8<-- [start:over]
import torch


def composite_back_to_front(
    colors: torch.Tensor, alphas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same image by the painter's loop: farthest layer first, nearer ones "over".

    colors: (N, ..., C); alphas: (N, ...); index 0 is nearest, so i = N-1 .. 0.
    over (Porter & Duff 1984): C <- a_i c_i + (1 - a_i) C,   T <- (1 - a_i) T.
    returns: (color (..., C), transmittance (...)), to compare with `composite`.
    """
    color = torch.zeros_like(colors[0])
    T = torch.ones_like(alphas[0])
    for i in reversed(range(colors.shape[0])):
        a = alphas[i].unsqueeze(-1)
        color = a * colors[i] + (1 - a) * color
        T = (1 - alphas[i]) * T
    return color, T


# --8<-- [end:over]


# ----------------------------------------------------------------------------- tests

import functools

F64 = torch.float64
# assert_near(actual, expected, atol): an absolute tolerance only
assert_near = functools.partial(torch.testing.assert_close, rtol=0)


def covariance_rows_scaled(quaternion: torch.Tensor, scale: torch.Tensor):
    """Counterfactual: M = diag(s) R (the scale on the wrong side), Sigma = M M^T.
    (N, 4), (N, 3) -> (N, 3, 3)."""
    M = quaternion_to_rotation(quaternion) * scale.unsqueeze(-1)  # rows scaled
    return M @ M.transpose(-1, -2)


def over_nearest_first(colors: torch.Tensor, alphas: torch.Tensor):
    """Counterfactual: the painter's loop in the wrong order, nearest layer first,
    so the farthest ends on top. (N, ..., C), (N, ...) -> colour, transmittance."""
    color, T = torch.zeros_like(colors[0]), torch.ones_like(alphas[0])
    for i in range(colors.shape[0]):
        a = alphas[i].unsqueeze(-1)
        color = a * colors[i] + (1 - a) * color
        T = (1 - alphas[i]) * T
    return color, T


def composite_linear_transmittance(colors: torch.Tensor, alphas: torch.Tensor):
    """Counterfactual: light used up linearly, T_i = max(0, 1 - sum_{j<i} a_j),
    instead of the product. (N, ..., C), (N, ...) -> colour, transmittance."""
    used = torch.cumsum(alphas, dim=0)
    T = (1 - torch.cat([torch.zeros_like(alphas[:1]), used[:-1]])).clamp(min=0)
    color = ((alphas * T).unsqueeze(-1) * colors).sum(dim=0)
    return color, (1 - used[-1]).clamp(min=0)


def test_covariance_is_symmetric_psd_with_scale_eigenvalues(
    covariance=covariance_from_rotation_scale,
):
    g = torch.Generator().manual_seed(0)
    n = 256
    q = torch.randn(n, 4, generator=g, dtype=F64) * 3.0  # deliberately not unit norm
    s = torch.rand(n, 3, generator=g, dtype=F64) * 2.0 + 1e-3
    R = quaternion_to_rotation(q)
    eye = torch.eye(3, dtype=F64).expand(n, 3, 3)
    # The quaternion is normalised inside: R is a proper rotation.
    assert_near(R @ R.transpose(-1, -2), eye, atol=1e-12)
    assert_near(torch.linalg.det(R), torch.ones(n, dtype=F64), atol=1e-12)
    cov = covariance(q, s)
    assert cov.shape == (n, 3, 3)
    assert_near(cov, cov.transpose(-1, -2), atol=1e-12)
    # Eigenvalues are exactly the squared scales: PSD by construction ...
    eig = torch.linalg.eigvalsh(cov)
    torch.testing.assert_close(eig, (s**2).sort(dim=-1).values, atol=1e-10, rtol=1e-10)
    assert (eig > 0).all(), "covariance with positive scales must be positive definite"
    # ... and the eigenvectors are the columns of R: Sigma R = R diag(s^2). This is
    # what "R turns the axes" means; diag(s) R (rows scaled) would fail here.
    assert_near(cov @ R, R * (s**2).unsqueeze(-2), atol=1e-10)
    # A zero scale gives a flat (rank-2) Gaussian: still PSD, smallest eigenvalue 0.
    s0 = s.clone()
    s0[:, 2] = 0.0
    eig0 = torch.linalg.eigvalsh(covariance(q, s0))
    assert eig0.min() > -1e-12, f"min eigenvalue {eig0.min():.2e} < 0"
    # Identity quaternion: Sigma = diag(s^2).
    q_id = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64)
    expected = torch.diag_embed(s[:1] ** 2)
    assert_near(covariance(q_id, s[:1]), expected, atol=1e-12)


def test_quaternion_matches_axis_angle_rotation():
    # 90 degrees about z in (w, x, y, z) order: q = (cos 45, 0, 0, sin 45) maps x -> y.
    h = torch.tensor(0.5 * torch.pi / 2, dtype=F64)
    zero = torch.zeros_like(h)
    q = torch.stack([h.cos(), zero, zero, h.sin()]).unsqueeze(0)
    R = quaternion_to_rotation(q)[0]
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    assert_near(R @ ex, torch.tensor([0.0, 1.0, 0.0], dtype=F64), atol=1e-12)
    # The long axis follows the rotation: s = (3, 1, 1) turned by 90 deg about z
    # lies along y, Sigma = diag(1, 9, 1).
    s = torch.tensor([[3.0, 1.0, 1.0]], dtype=F64)
    expected = torch.diag(torch.tensor([1.0, 9.0, 1.0], dtype=F64))
    assert_near(covariance_from_rotation_scale(q, s)[0], expected, atol=1e-12)


def test_operations_act_on_any_leading_dims():
    # Each Gaussian is handled on its own: a (2, 5) batch of Gaussians gives the same
    # results as the 10 in a row (up to float64 round-off of batched matmuls), and a
    # single unbatched one the same as its row.
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 5, 4, generator=g, dtype=F64)
    mean = torch.randn(2, 5, 3, generator=g, dtype=F64)
    mean[..., 2] = mean[..., 2].abs() + 2.0
    cov = covariance_from_rotation_scale(q, torch.rand(2, 5, 3, generator=g, dtype=F64))
    flat = lambda a: a.reshape((10,) + a.shape[2:])  # (2, 5, ...) -> (10, ...)
    R = quaternion_to_rotation(q)
    assert R.shape == (2, 5, 3, 3)
    assert_near(flat(R), quaternion_to_rotation(flat(q)), atol=1e-12)
    assert_near(R[1, 3], quaternion_to_rotation(q[1, 3]), atol=1e-12)
    uv = project_mean(mean, 300.0, 250.0)
    assert uv.shape == (2, 5, 2)
    assert_near(flat(uv), project_mean(flat(mean), 300.0, 250.0), atol=1e-12)
    c2 = project_covariance(cov, mean, 300.0, 250.0)
    assert c2.shape == (2, 5, 2, 2)
    expected = project_covariance(flat(cov), flat(mean), 300.0, 250.0)
    assert_near(flat(c2), expected, atol=1e-12)
    assert_near(
        c2[0, 2], project_covariance(cov[0, 2], mean[0, 2], 300.0, 250.0), atol=1e-12
    )


def test_project_covariance_matches_explicit_jacobian():
    g = torch.Generator().manual_seed(1)
    n = 32
    q = torch.randn(n, 4, generator=g, dtype=F64)
    s = torch.rand(n, 3, generator=g, dtype=F64) * 0.2 + 0.01
    mean = torch.randn(n, 3, generator=g, dtype=F64)
    mean[:, 2] = mean[:, 2].abs() + 2.0
    fx, fy = 300.0, 250.0
    cov3d = covariance_from_rotation_scale(q, s)
    cov2d = project_covariance(cov3d, mean, fx, fy)
    assert cov2d.shape == (n, 2, 2)
    # J from autograd of the projection itself, one Gaussian at a time.
    for i in range(n):
        J = torch.autograd.functional.jacobian(
            lambda p: project_mean(p[None], fx, fy)[0], mean[i]
        )
        expected = J @ cov3d[i] @ J.T
        torch.testing.assert_close(cov2d[i], expected, atol=1e-10, rtol=1e-10)


def test_front_to_back_equals_back_to_front_over(over=composite_back_to_front):
    g = torch.Generator().manual_seed(2)
    n, h, w = 12, 5, 7
    colors = torch.rand(n, h, w, 3, generator=g, dtype=F64)
    alphas = torch.rand(n, h, w, generator=g, dtype=F64)
    alphas[3] = 0.0  # a fully transparent layer
    alphas[7, 0, 0] = 1.0  # an opaque layer at one pixel: it hides everything behind
    c1, t1 = composite(colors, alphas)
    c2, t2 = over(colors, alphas)
    assert c1.shape == (h, w, 3) and t1.shape == (h, w)
    assert_near(c1, c2, atol=1e-12)
    assert_near(t1, t2, atol=1e-12)
    # Behind the opaque layer nothing shows: changing layers 8.. leaves (0, 0) alone.
    colors2 = colors.clone()
    colors2[8:] = torch.rand(n - 8, h, w, 3, generator=g, dtype=F64)
    assert_near(composite(colors2, alphas)[0][0, 0], c1[0, 0], atol=1e-12)


def test_one_layer_is_its_own_over():
    # A single layer over nothing: colour a c, transmittance 1 - a, both ways.
    colors = torch.tensor([[[0.2, 0.4, 0.8]], [[1.0, 0.5, 0.0]]], dtype=F64)[None]
    alphas = torch.tensor([[0.25], [1.0]], dtype=F64)[None]  # (1, 2, 1)
    for fn in (composite, composite_back_to_front):
        c, t = fn(colors, alphas)
        assert_near(c, alphas[0, ..., None] * colors[0], atol=1e-15)
        assert_near(t, 1 - alphas[0], atol=1e-15)


def test_transmittance_is_product_and_never_increases(comp=composite):
    g = torch.Generator().manual_seed(3)
    n = 40
    alphas = torch.rand(n, 100, generator=g, dtype=F64) * 0.3
    colors = torch.ones(n, 100, 1, dtype=F64)
    c, t_final = comp(colors, alphas)
    # T_N = prod (1 - a_i); with all colours 1 the image is the covered fraction
    # 1 - T_N: the weights a_i T_i and the leftover transmittance add up to 1.
    assert_near(t_final, (1 - alphas).prod(0), atol=1e-12)
    assert_near(c[..., 0] + t_final, torch.ones(100, dtype=F64), atol=1e-12)
    # Transmittance after each layer never increases and stays in [0, 1].
    Ts = torch.stack([comp(colors[: k + 1], alphas[: k + 1])[1] for k in range(n)])
    assert (Ts[1:] <= Ts[:-1] + 1e-15).all(), "transmittance increased"
    assert Ts.min() >= 0 and Ts.max() <= 1
    # It decays like exp(-sum a_i) for small alphas: -log T >= sum a (= as a -> 0).
    assert (-t_final.log() >= alphas.sum(0) - 1e-12).all()
