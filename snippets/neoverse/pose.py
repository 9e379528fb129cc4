"""Pose-free, concretely: recover the camera motion between two views from the data.

A method that "needs camera poses" gets, for every frame, the rotation R and the
translation t of the camera, usually from a Structure-from-Motion run (COLMAP)
before training. A "pose-free" method predicts them. The simplest version of
predicting them: if we know the 3D position of the same scene points in two camera
frames (e.g. from two depth maps and pixel matches), the camera motion is the rigid
transform q_i = R p_i + t that best maps one point set onto the other. Its
least-squares solution has a closed form via one SVD (Kabsch 1976; with a global
scale, Umeyama 1991, IEEE TPAMI 13(4)).

It only works when the points pin the motion down: at least three non-collinear
points, all static, and little noise. The tests below check the recovery and each
failure.
"""

# --8<-- [start:kabsch]
import torch


def rigid_transform(P: torch.Tensor, Q: torch.Tensor, with_scale: bool = False):
    """Least-squares (c, R, t) with Q ~ c R P + t (Kabsch; Umeyama 1991 if with_scale).

    P, Q: (N, 3) corresponding points in the two frames.
    returns: c (scalar, 1.0 unless with_scale), R (3, 3) with det +1, t (3,).
    """
    mp, mq = P.mean(0), Q.mean(0)
    Pc, Qc = P - mp, Q - mq
    H = Pc.T @ Qc / P.shape[0]  # cross-covariance (3, 3)
    U, S, Vh = torch.linalg.svd(H)
    # Without this sign fix the SVD can return a reflection (det -1), e.g. for
    # planar points.
    d = torch.sign(torch.linalg.det(Vh.T @ U.T))
    D = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
    R = Vh.T @ D @ U.T
    if with_scale:
        c = (S * D.diagonal()).sum() / Pc.pow(2).sum(1).mean()
    else:
        c = torch.ones((), dtype=P.dtype)
    t = mq - c * R @ mp
    return c, R, t


def rotation_error_deg(R_est: torch.Tensor, R_true: torch.Tensor) -> float:
    """Angle (degrees) of the rotation R_est^T R_true: 0 when the two agree.

    Uses ||R_est - R_true||_F = 2 sqrt(2) sin(angle / 2), accurate also for tiny
    angles (arccos of the trace loses half the digits there).
    """
    s = (R_est - R_true).norm() / (2 * 2**0.5)
    return torch.rad2deg(2 * torch.asin(s.clamp(0, 1))).item()


# --8<-- [end:kabsch]


# --8<-- [start:scenes]
import torch

from snippets.neoverse.gaussians import quaternion_to_rotation


def axis_angle_rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation by `angle` (radians) about the unit vector `axis` (3,)."""
    q = torch.cat([(angle / 2).cos()[None], (angle / 2).sin() * axis])  # (w, x, y, z)
    return quaternion_to_rotation(q[None])[0]


def random_motion(seed: int = 0, dtype=torch.float64):
    """A random camera motion: rotation of 20-40 degrees about a random axis,
    translation ~1."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(3, generator=g, dtype=dtype)
    axis = axis / axis.norm()
    angle = torch.deg2rad(20 + 20 * torch.rand((), generator=g, dtype=dtype))
    R = axis_angle_rotation(axis, angle)
    t = torch.randn(3, generator=g, dtype=dtype)
    return R, t


def scene_points(kind: str, n: int = 100, seed: int = 1, dtype=torch.float64):
    """(n, 3) points in the first camera frame: 'general' (a cloud 1-2 units deep),
    'planar' (a wall), or 'collinear' (a pole: every point on one line)."""
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(n, 3, generator=g, dtype=dtype)
    if kind == "planar":
        P[:, 2] = 0.0
    elif kind == "collinear":
        direction = torch.tensor([[1.0, 0.5, 0.2]], dtype=dtype)
        P = torch.randn(n, 1, generator=g, dtype=dtype) * direction
    return P + torch.tensor([0.0, 0.0, 4.0], dtype=dtype)


def observe(
    P: torch.Tensor, R: torch.Tensor, t: torch.Tensor, noise: float = 0.0, seed: int = 2
) -> torch.Tensor:
    """The same points seen from the second camera, Q = R P + t, plus Gaussian
    noise (std `noise`)."""
    g = torch.Generator().manual_seed(seed)
    return P @ R.T + t + noise * torch.randn(P.shape, generator=g, dtype=P.dtype)


# --8<-- [end:scenes]


# --8<-- [start:noise_sweep]
import torch

from snippets.neoverse.pose import (
    observe,
    random_motion,
    rigid_transform,
    rotation_error_deg,
    scene_points,
)


def noise_sweep(
    noises: list[float], n: int = 50, trials: int = 20, fit=rigid_transform
) -> list[dict]:
    """Mean rotation error (deg) and translation error over `trials` random motions
    per noise std; fit(P, Q) -> (c, R, t) is the estimator (default: Kabsch)."""
    rows = []
    for sigma in noises:
        rot, trans = [], []
        for k in range(trials):
            R, t = random_motion(seed=k)
            P = scene_points("general", n, seed=100 + k)
            _, R_est, t_est = fit(P, observe(P, R, t, sigma, seed=200 + k))
            rot.append(rotation_error_deg(R_est, R))
            trans.append((t_est - t).norm().item())
        rows.append(
            {
                "noise": sigma,
                "rot_err_deg": sum(rot) / trials,
                "trans_err": sum(trans) / trials,
            }
        )
    return rows


# --8<-- [end:noise_sweep]


# --8<-- [start:moving_points]
import torch

from snippets.neoverse.pose import (
    observe,
    random_motion,
    rigid_transform,
    rotation_error_deg,
    scene_points,
)


def pose_with_moving_points(fraction_moving: float, n: int = 100, seed: int = 0):
    """Rotation error (deg) when a fraction of the points belongs to an object that
    moved (by 1 unit and turned, no noise) between the two views: the rigid-scene
    assumption is violated."""
    R, t = random_motion(seed)
    P = scene_points("general", n, seed=seed + 1)
    Q = observe(P, R, t)
    k = int(fraction_moving * n)
    Q[:k] += torch.tensor([1.0, 0.0, 0.0], dtype=Q.dtype) @ R.T  # moved along its x
    centre = Q[:k].mean(0)
    Q[:k] = (Q[:k] - centre) @ random_motion(seed + 7)[0].T + centre  # and turned
    _, R_est, _ = rigid_transform(P, Q)
    return rotation_error_deg(R_est, R)


# --8<-- [end:moving_points]


# ----------------------------------------------------------------------------- tests

# A rotation error this large is a failure, not noise: noise of 0.01 on points ~1
# apart costs about 0.08 degrees (test_kabsch_error_grows_linearly_with_noise).
FAILED_DEG = 3.0


def kabsch_without_sign_fix(P: torch.Tensor, Q: torch.Tensor, with_scale=False):
    """Counterfactual: Kabsch without the det correction, R = V U^T, which can be
    a reflection. (N, 3), (N, 3) -> (c = 1, R (3, 3), t (3,))."""
    mp, mq = P.mean(0), Q.mean(0)
    U, _, Vh = torch.linalg.svd((P - mp).T @ (Q - mq))
    R = Vh.T @ U.T
    return torch.ones((), dtype=P.dtype), R, mq - R @ mp


def kabsch_from_three_points(P: torch.Tensor, Q: torch.Tensor, with_scale=False):
    """Counterfactual: the same solver on the first 3 correspondences only (a
    minimal solver): more points no longer help. (N, 3), (N, 3) -> (c, R, t)."""
    return rigid_transform(P[:3], Q[:3], with_scale)


def test_kabsch_recovers_known_rotation_and_translation(fit=rigid_transform):
    for seed in range(10):
        R, t = random_motion(seed)
        for kind in ("general", "planar"):  # a plane is enough: rank 2 + the det fix
            P = scene_points(kind, seed=seed + 50)
            c, R_est, t_est = fit(P, observe(P, R, t))
            assert rotation_error_deg(R_est, R) < 1e-5, (seed, kind)
            torch.testing.assert_close(t_est, t, atol=1e-10, rtol=0)
            assert abs(torch.linalg.det(R_est).item() - 1) < 1e-10
            assert c.item() == 1.0 and c.dtype == P.dtype
        # Umeyama: a monocular depth map knows the scene only up to scale.
        P = scene_points("general", seed=seed + 60)
        c, R_est, t_est = fit(P, 2.5 * observe(P, R, t), with_scale=True)
        assert abs(c.item() - 2.5) < 1e-10 and rotation_error_deg(R_est, R) < 1e-5
        torch.testing.assert_close(t_est, 2.5 * t, atol=1e-10, rtol=0)


def test_kabsch_error_grows_linearly_with_noise(fit=rigid_transform):
    rows = noise_sweep([0.005, 0.01, 0.02, 0.04], fit=fit)
    assert [r["noise"] for r in rows] == [0.005, 0.01, 0.02, 0.04]
    errs = [r["rot_err_deg"] for r in rows]
    # 4x the points -> about half the error (1/sqrt(4)). Each mean over 20 motions
    # scatters by ~10 %, so the ratio of two is 0.5 +- 0.07; band: 2.5 sigma.
    many = noise_sweep([0.02], n=200, fit=fit)[0]["rot_err_deg"]
    assert 0.35 < many / errs[2] < 0.7, (many, errs[2])
    # Small noise, small error: 0.01 units on points ~1 unit apart -> < 0.5 degree.
    assert errs[1] < 0.5, errs
    # The same noise samples, scaled: doubling them doubles the error to first order;
    # the second-order term is at most noise / spread <= 4 % of it, hence +-0.1.
    for a, b in zip(errs, errs[1:]):
        assert abs(b / a - 2) < 0.1, errs
    # The translation error behaves the same way (first order in the same noise):
    # at noise 0.01 it is of the order of noise / sqrt(n) plus the rotation error
    # times the depth, 4 x 0.0015 rad; asserted: < 0.02.
    trans = [r["trans_err"] for r in rows]
    assert trans[1] < 0.02, trans
    for a, b in zip(trans, trans[1:]):
        assert abs(b / a - 2) < 0.1, trans


def test_scenes_and_motions_are_seeded_and_what_they_say():
    # Seeded: the same seed gives the same data, another seed other data.
    for kind in ("general", "planar", "collinear"):
        P = scene_points(kind, seed=3)
        assert P.shape == (100, 3) and P.dtype == torch.float64
        assert torch.equal(P, scene_points(kind, seed=3))
        assert not torch.equal(P, scene_points(kind, seed=4))
    R, t = random_motion(5)
    assert torch.equal(R, random_motion(5)[0]) and torch.equal(t, random_motion(5)[1])
    P = scene_points("general")
    Q = observe(P, R, t, noise=0.01)
    assert torch.equal(Q, observe(P, R, t, noise=0.01))
    # The cloud: centred on the optical axis at depth 4, spread ~1 in every direction
    # (means within 5 standard errors 5 / sqrt(100) = 0.5).
    assert (P.mean(0) - torch.tensor([0.0, 0.0, 4.0], dtype=P.dtype)).abs().max() < 0.5
    assert (P.std(0) > 0.5).all()
    # The wall: every point at depth 4. The pole: one line through (0, 0, 4).
    assert (scene_points("planar")[:, 2] == 4.0).all()
    pole = scene_points("collinear") - torch.tensor([0.0, 0.0, 4.0], dtype=P.dtype)
    assert torch.linalg.matrix_rank(pole, atol=1e-12) == 1
    # Noise: the residual of the true motion has the asked-for std (5 standard
    # errors of a std over 300 values: 5 / sqrt(600) = 20 %).
    resid = Q - (P @ R.T + t)
    assert abs(resid.std().item() / 0.01 - 1) < 0.2, resid.std()
    # The motions: proper rotations turning 20-40 degrees.
    eye = torch.eye(3, dtype=torch.float64)
    for seed in range(10):
        R, _ = random_motion(seed)
        torch.testing.assert_close(R @ R.T, eye, atol=1e-12, rtol=0)
        assert 20.0 <= rotation_error_deg(R, eye) <= 40.0, seed
    # A half turn about any axis measures 180 degrees: ||R - I|| / (2 sqrt 2) rounds
    # to just above 1 for some axes, and the clamp keeps asin defined there. Near 1,
    # asin turns a round-off of 1e-15 into ~1e-7 rad: tolerance 1e-4 degree.
    g = torch.Generator().manual_seed(0)
    half_turn = torch.tensor(torch.pi, dtype=torch.float64)
    for _ in range(20):
        axis = torch.randn(3, generator=g, dtype=torch.float64)
        R = axis_angle_rotation(axis / axis.norm(), half_turn)
        assert abs(rotation_error_deg(R, eye) - 180.0) < 1e-4


def test_refutes_correspondences_always_determine_the_pose(kind="collinear"):
    # Collinear points (a pole through its centroid c along u): turning the first
    # camera's scene about that line by theta moves no point. So the motions
    # (R, t) and (R A, t + R (I - A) c) produce IDENTICAL data, theta apart.
    theta = torch.tensor(torch.pi / 2, dtype=torch.float64)
    for seed in range(5):
        R, t = random_motion(seed)
        P = scene_points(kind, seed=seed + 4)
        c = P.mean(0)
        u = (P[0] - c) / (P[0] - c).norm()
        A = axis_angle_rotation(u, theta)
        R2, t2 = R @ A, t + R @ (torch.eye(3, dtype=P.dtype) - A) @ c
        Q, Q2 = observe(P, R, t), observe(P, R2, t2)
        torch.testing.assert_close(Q2, Q, atol=1e-12, rtol=0)  # same data ...
        assert abs(rotation_error_deg(R2, R) - 90.0) < 1e-9  # ... different motions
        # Whatever the estimator returns from Q, it is >= 45 deg off one of them.
        _, R_est, t_est = rigid_transform(P, Q)
        residual = (P @ R_est.T + t_est - Q).norm(dim=1).max().item()
        assert residual < 1e-9, "the estimate explains the data perfectly ..."
        worst = max(rotation_error_deg(R_est, R), rotation_error_deg(R_est, R2))
        assert worst >= 45.0 - 1e-9, "... and cannot be right for both motions"


def test_qualifies_pose_from_data_needs_static_well_spread_points():
    for seed in range(10):
        # Holds: static, well-spread points give the motion with no pose input.
        assert pose_with_moving_points(0.0, seed=seed) < 1e-5, seed
        # Does not hold: when 30 % of the points sit on an object that moved, the
        # rigid fit mixes camera motion and object motion.
        assert pose_with_moving_points(0.3, seed=seed) > FAILED_DEG, seed
    # Degenerate points fail as well (see the refuting test): a pole.
    R, t = random_motion(3)
    P = scene_points("collinear", seed=4)
    assert rotation_error_deg(rigid_transform(P, observe(P, R, t))[1], R) > FAILED_DEG


def test_generators_return_the_dtype_asked_for():
    # dtype= is honoured end to end, also in half precision, where a value drawn or
    # built in the default float32 would promote the result to float32.
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        R, t = random_motion(4, dtype=dtype)
        assert R.dtype == t.dtype == dtype
        for kind in ("general", "planar", "collinear"):
            P = scene_points(kind, n=10, dtype=dtype)
            assert P.dtype == dtype, (kind, dtype)
            assert observe(P, R, t, noise=0.1).dtype == dtype


def test_random_motion_turns_uniformly_between_20_and_40_degrees():
    # Angle 20 + 20 u, u ~ U(0, 1): over 1000 seeds every angle lies in [20, 40] and
    # both ends are reached within 0.5 degree (each end missed by all 1000 draws with
    # probability 0.975^1000 < 1e-10). Float64 round-off of the angle: 1e-6 degree.
    eye = torch.eye(3, dtype=torch.float64)
    angles = torch.tensor(
        [rotation_error_deg(random_motion(s)[0], eye) for s in range(1000)]
    )
    assert angles.min() >= 20.0 - 1e-6 and angles.max() <= 40.0 + 1e-6
    assert angles.min() < 20.5 and angles.max() > 39.5


def test_noise_sweep_fits_the_pages_trials():
    # The page: "50 points ... the mean over 20 random motions". An estimator that
    # records what it is given sees, per noise level, 20 different general scenes of
    # 50 points, each observed with its own noise draw of the asked-for std.
    seen = []

    def spy(P, Q):
        seen.append((P, Q))
        return rigid_transform(P, Q)

    noise_sweep([0.0, 0.01], fit=spy)
    assert len(seen) == 2 * 20 and all(P.shape == (50, 3) for P, _ in seen)
    clean, noisy = seen[:20], seen[20:]
    eps = [(Qn - Qc) / 0.01 for (_, Qc), (_, Qn) in zip(clean, noisy)]
    for k in range(20):
        assert torch.equal(clean[k][0], noisy[k][0])  # the same scene at each noise
        for j in range(k):
            assert not torch.equal(clean[k][0], clean[j][0]), (j, k)
            assert not torch.equal(eps[k], eps[j]), (j, k)
    # Noise std 1 after dividing by 0.01: 3000 values, 5 standard errors of a std is
    # 5 / sqrt(6000) = 6.5 %.
    assert abs(torch.cat(eps).std().item() - 1) < 0.065


def moving_points_by_hand(fraction_moving, n, seed):
    """pose_with_moving_points as its docstring says it: the first k = fraction * n
    points form an object that moved 1 unit along the scene's x and turned (by
    another random rotation) about its own centre; the rest is static.
    -> (rotation error (deg), the rotation the object turned by (3, 3))."""
    R, t = random_motion(seed)
    P = scene_points("general", n, seed=seed + 1)
    k = int(fraction_moving * n)
    P_moved = P[:k] + torch.tensor([1.0, 0.0, 0.0], dtype=P.dtype)
    turn = random_motion(seed + 7)[0]  # the object's own turn, in the second view
    Q_obj = observe(P_moved, R, t)
    centre = Q_obj.mean(0)
    Q = torch.cat([(Q_obj - centre) @ turn.T + centre, observe(P[k:], R, t)])
    return rotation_error_deg(rigid_transform(P, Q)[1], R), turn


def test_moving_points_are_an_object_moved_one_unit_and_turned():
    eye = torch.eye(3, dtype=torch.float64)
    # The page's default: 100 points, seed 0. Round-off of two equal computations in
    # a different order: 1e-9 degree.
    assert (
        abs(pose_with_moving_points(0.3) - moving_points_by_hand(0.3, 100, 0)[0]) < 1e-9
    )
    for fraction, n, seed in ((0.3, 60, 3), (0.5, 40, 5), (0.2, 80, 2)):
        err, _ = moving_points_by_hand(fraction, n, seed)
        assert abs(pose_with_moving_points(fraction, n=n, seed=seed) - err) < 1e-9
    # Every point moved: the whole scene moved rigidly, so the fit is exact and its
    # rotation is the camera's turn composed with the object's: the error is the
    # object's turn angle.
    for seed in range(3):
        _, turn = moving_points_by_hand(1.0, 50, seed)
        expected = rotation_error_deg(turn, eye)
        assert abs(pose_with_moving_points(1.0, n=50, seed=seed) - expected) < 1e-6
