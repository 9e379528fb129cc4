"""NeoVerse's bidirectional motion: move key-frame Gaussians to any query time.

NeoVerse (Yang et al. 2026, arXiv:2601.00393, Sec. 3.1) gives every Gaussian of a
key frame at time t two linear velocities v+ (towards t + 1) and v- (towards t - 1),
two angular velocities w+ and w- and a life span tau in (0, 1). A frame that is not
a key frame, at time tq, is rendered from the Gaussians of the NEAREST key frame,
moved along the velocity that points towards tq (Sec. 3.2):

    mu(tq)    = mu + v+ |tq - t|  if tq >= t,   mu + v- |tq - t|  otherwise  # Eq. (3)
    r(tq)     = r * phi(w+- |tq - t|)   (phi: axis-angle -> quaternion)      # Eq. (4)
    alpha(tq) = alpha exp(-gamma d^(1 / (1 - tau))),
                d = |tq - t| / |T_k+1 - T_k| <= 1                            # Eq. (5)

Velocities are displacements per frame (to the next / previous frame, Appendix A),
so times are frame indices here. The paper assumes motion between adjacent frames
is about linear. The tests check what the backward direction buys, with the true
per-frame displacements in place of the network's predictions: (1) a motion that
changes at a key frame (an object that starts moving) is reproduced exactly, which
one velocity per Gaussian cannot do; (2) using the nearest key frame halves the
longest transfer, so a curved motion's worst error drops to about a quarter of
carrying Gaussians forward only (for smooth motion one velocity used both ways
does as well as two).
"""

# --8<-- [start:transfer]
import torch


def axis_angle_to_quaternion(rotvec: torch.Tensor) -> torch.Tensor:
    """phi in Eq. (4): rotation vectors (N, 3) (axis * angle) -> (N, 4) (w, x, y, z)."""
    angle = rotvec.norm(dim=-1, keepdim=True)
    axis = rotvec / angle.clamp_min(1e-12)
    return torch.cat([(angle / 2).cos(), (angle / 2).sin() * axis], dim=-1)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of (N, 4) quaternions in (w, x, y, z) order."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def transfer(g: dict[str, torch.Tensor], t: float, tq: float,
             interval: float, gamma: float = 1.0) -> dict[str, torch.Tensor]:
    """Move the Gaussians of the key frame at time t to the query time tq.

    g: mean (N, 3), v_fwd, v_bwd (N, 3) per frame; quat (N, 4); w_fwd, w_bwd (N, 3)
    rotation vectors per frame; opacity (N,); life_span (N,) in (0, 1).
    interval: |T_k+1 - T_k|, the length of the key-frame interval holding tq.
    gamma: decay speed of Eq. (5) (a hyper-parameter; the paper gives no value).
    returns the same keys at tq (velocities unchanged).
    """
    dt = abs(tq - t)
    v, w = (g["v_fwd"], g["w_fwd"]) if tq >= t else (g["v_bwd"], g["w_bwd"])
    mean = g["mean"] + v * dt  # Eq. (3), arXiv:2601.00393
    turn = axis_angle_to_quaternion(w * dt)
    quat = quaternion_multiply(g["quat"], turn)  # Eq. (4), arXiv:2601.00393
    d = dt / interval  # normalised temporal distance, <= 1 inside the interval
    decay = torch.exp(-gamma * d ** (1 / (1 - g["life_span"])))
    opacity = g["opacity"] * decay  # Eq. (5), arXiv:2601.00393
    return dict(g, mean=mean, quat=quat, opacity=opacity)


def nearest_key_frame(key_times: list[float], tq: float) -> tuple[int, float]:
    """Index of the key frame nearest to tq (ties go to the earlier one) and the
    length of the key-frame interval containing tq."""
    k = min(range(len(key_times)), key=lambda i: (abs(key_times[i] - tq), i))
    right = next((i for i, s in enumerate(key_times) if s >= tq), len(key_times) - 1)
    left = max(right - 1, 0)
    return k, max(key_times[right] - key_times[left], 1e-12)
# --8<-- [end:transfer]


# --8<-- [start:interpolate]
import torch

from snippets.neoverse.bidirectional import nearest_key_frame, transfer


def positions_at(track: torch.Tensor, key_times: list[int], tq: int,
                 mode: str = "bidirectional") -> torch.Tensor:
    """Position at frame tq of a point whose true positions per frame are track
    (T, 3), rebuilt from key frames only.

    Each key frame holds the point and its per-frame displacements to the next and
    previous frame (what the network is trained to predict, Appendix A).
      bidirectional: nearest key frame, forward or backward velocity (Eq. (3)).
      single:        nearest key frame, one velocity v+ used both ways (+- v+).
      forward:       previous key frame, forward velocity only.
    returns (3,).
    """
    T = track.shape[0]

    def key(i: int) -> dict[str, torch.Tensor]:
        nxt, prv = min(i + 1, T - 1), max(i - 1, 0)
        v_fwd, v_bwd = track[nxt] - track[i], track[prv] - track[i]
        if mode == "single":  # one velocity: forward where there is a next frame
            v_fwd = v_fwd if i < T - 1 else -v_bwd
            v_bwd = -v_fwd
        zeros = torch.zeros(1, 3, dtype=track.dtype)
        return {"mean": track[i][None], "v_fwd": v_fwd[None], "v_bwd": v_bwd[None],
                "quat": torch.tensor([[1.0, 0, 0, 0]], dtype=track.dtype),
                "w_fwd": zeros, "w_bwd": zeros,
                "opacity": torch.ones(1, dtype=track.dtype),
                "life_span": torch.full((1,), 0.5, dtype=track.dtype)}

    k, interval = nearest_key_frame([float(s) for s in key_times], float(tq))
    if mode == "forward":
        k = max(i for i, s in enumerate(key_times) if s <= tq)
    t = key_times[k]
    return transfer(key(t), float(t), float(tq), interval)["mean"][0]


def worst_error(track: torch.Tensor, key_times: list[int], mode: str) -> float:
    """Largest position error over all frames between the first and last key."""
    frames = range(key_times[0], key_times[-1] + 1)
    return max((positions_at(track, key_times, q, mode) - track[q]).norm().item()
               for q in frames)
# --8<-- [end:interpolate]


# ----------------------------------------------------------------------------- tests

F64 = torch.float64


# (33, 3) positions of a thrown ball: constant velocity + acceleration 0.02 downwards
_T = torch.arange(33, dtype=F64)[:, None]
PARABOLA = (torch.tensor([[0.1, 0.3, 0.05]], dtype=F64) * _T
            + 0.5 * torch.tensor([[0.0, -0.02, 0.0]], dtype=F64) * _T**2)


def test_two_velocities_follow_a_motion_that_changes_at_a_key_frame():
    # A box at rest until frame 8, then sliding at 0.25 per frame: the motion has a
    # kink at key frame 8. Its backward velocity is 0, its forward velocity is not.
    t = torch.arange(17, dtype=F64)
    x = torch.where(t < 8, torch.zeros_like(t), 0.25 * (t - 8))
    track = torch.stack([x, torch.zeros_like(t), torch.full_like(t, 5.0)], dim=-1)
    keys = [0, 8, 16]
    assert worst_error(track, keys, "bidirectional") < 1e-12
    # One velocity per Gaussian extrapolates the slide backwards into the rest phase:
    # at frame 5 (nearest key 8) it is 0.25 x 3 = 0.75 off.
    single = (positions_at(track, keys, 5, "single") - track[5]).norm().item()
    assert abs(single - 0.75) < 1e-12, single


def test_nearest_key_frame_quarters_the_worst_error_of_forward_only():
    # Constant acceleration a: moving d frames with the one-frame displacement (in
    # either direction) misses by a d (d - 1) / 2, exactly for a parabola (Taylor).
    # Nearest key frame: d <= h / 2; forward only: d <= h - 1. Worst errors
    # a (h/2)(h/2 - 1) / 2 and a (h - 1)(h - 2) / 2, ratio h / (4 (h - 1)) -> 1/4.
    track, a = PARABOLA, 0.02
    for h in (4, 8, 16):
        keys = list(range(0, 33, h))
        bi = worst_error(track, keys, "bidirectional")
        fwd = worst_error(track, keys, "forward")
        d = h // 2
        assert abs(bi - a * d * (d - 1) / 2) < 1e-9, (h, bi)
        assert abs(fwd - a * (h - 1) * (h - 2) / 2) < 1e-9, (h, fwd)
        # For smooth motion one velocity used both ways does as well: the gain here
        # comes from using the nearest key frame, which needs the backward direction.
        assert abs(worst_error(track, keys, "single") - bi) < 1e-9, h
    # A curve that is a parabola only to second order: a point on a circle (radius
    # 3, 0.03 rad per frame), |a| = r w^2. The next terms change the errors by a
    # relative O((w d)^2 / 10) <= 2 % for d <= 15 frames (0.45 rad); asserted: 5 %.
    w, r = 0.03, 3.0
    t = torch.arange(33, dtype=F64) * w
    circle = torch.stack([r * t.cos(), r * t.sin(), torch.full_like(t, 6.0)], -1)
    a = r * w**2
    for h in (8, 16):
        keys = list(range(0, 33, h))
        bi = worst_error(circle, keys, "bidirectional")
        fwd = worst_error(circle, keys, "forward")
        d = h // 2
        assert abs(bi / (a * d * (d - 1) / 2) - 1) < 0.05, (h, bi)
        assert abs(fwd / (a * (h - 1) * (h - 2) / 2) - 1) < 0.05, (h, fwd)
        assert bi / fwd < 0.3, (h, bi / fwd)


def test_rotation_and_opacity_follow_eqs_4_and_5():
    # Eq. (4): after dt frames the orientation has turned by |w| dt (the geodesic
    # angle between the quaternions), forwards with w+ and backwards with w-, stays
    # a unit quaternion, and two steps add up (constant w: one-parameter group).
    axis = torch.tensor([[0.0, 0.6, 0.8]], dtype=F64)
    start = axis_angle_to_quaternion(torch.tensor([[0.3, -0.2, 0.1]], dtype=F64))
    zeros = torch.zeros(1, 3, dtype=F64)
    g = {"mean": zeros, "v_fwd": zeros, "v_bwd": zeros, "quat": start,
         "w_fwd": 0.1 * axis, "w_bwd": 0.4 * axis,
         "opacity": torch.full((1,), 0.8, dtype=F64),
         "life_span": torch.full((1,), 0.5, dtype=F64)}

    def turned(q1, q2):
        return 2 * torch.acos((q1 * q2).sum().abs().clamp(max=1)).item()

    for tq, rate in ((7.0, 0.1), (3.0, 0.4)):
        out = transfer(g, 5.0, tq, interval=4.0)
        assert abs(turned(out["quat"], start) - rate * abs(tq - 5.0)) < 1e-7, tq
        assert abs(out["quat"].norm().item() - 1) < 1e-12
    twice = transfer(transfer(g, 5.0, 6.0, 4.0), 6.0, 7.0, 4.0)["quat"]
    torch.testing.assert_close(twice, transfer(g, 5.0, 7.0, 4.0)["quat"],
                               atol=1e-12, rtol=0)
    # Eq. (5): full opacity at the key frame; the decay grows with the distance;
    # a long life span (tau -> 1) keeps the opacity inside the interval, a short
    # one (tau -> 0) decays like exp(-gamma d); at the far end d = 1 every tau
    # gives alpha exp(-gamma).
    def alpha(tq, tau, gamma=2.0):
        h = dict(g, life_span=torch.full((1,), tau, dtype=F64))
        return transfer(h, 5.0, tq, interval=4.0, gamma=gamma)["opacity"].item()

    assert alpha(5.0, 0.5) == 0.8
    # gamma defaults to 1: at the far end of the interval alpha = 0.8 e^-1
    far = transfer(g, 5.0, 9.0, interval=4.0)["opacity"].item()
    assert abs(far - 0.8 * torch.e ** -1.0) < 1e-12
    assert alpha(6.0, 0.5) > alpha(7.0, 0.5) > alpha(8.0, 0.5)
    assert abs(alpha(7.0, 0.99) - 0.8) < 1e-12  # d = 0.5: 0.5^100 ~ 1e-30
    assert abs(alpha(7.0, 1e-9) - 0.8 * torch.e ** (-2.0 * 0.5)) < 1e-9
    for tau in (0.1, 0.5, 0.9):
        assert abs(alpha(9.0, tau) - 0.8 * torch.e ** -2.0) < 1e-12


def test_worst_error_is_that_of_the_longest_interval_wherever_it_lies():
    # worst_error scans every frame from the first key to the last. With uneven key
    # intervals (and keys not starting at frame 0) the worst frame lies in the
    # longest interval, first or last: forward only misses by a (h - 1)(h - 2) / 2
    # there, the nearest key frame by a d (d - 1) / 2 with d = h / 2.
    a = 0.02
    for keys, h in (([3, 19, 27], 16), ([3, 11, 27], 16), ([4, 10, 14], 6)):
        fwd = worst_error(PARABOLA, keys, "forward")
        bi = worst_error(PARABOLA, keys, "bidirectional")
        assert abs(fwd - a * (h - 1) * (h - 2) / 2) < 1e-9, (keys, fwd)
        assert abs(bi - a * (h // 2) * (h // 2 - 1) / 2) < 1e-9, (keys, bi)
    # One step forward with the key's own forward displacement is exact for any
    # track; in "single" mode that holds at every key with a next frame, including
    # the one just before the end.
    for mode in ("single", "bidirectional", "forward"):
        out = positions_at(PARABOLA, [0, 31], 32, mode)
        torch.testing.assert_close(out, PARABOLA[32], atol=1e-12, rtol=0)


def test_quaternion_helpers_compose_rotations():
    # phi of Eq. (4) and the Hamilton product against rotation matrices
    # (gaussians.quaternion_to_rotation): R(phi(w)) is Rodrigues' rotation by |w|
    # about w / |w|, and R(a * b) = R(a) R(b); on a (2, 5) batch, and phi(0) = 1.
    from snippets.neoverse.gaussians import quaternion_to_rotation

    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 5, 3, generator=g, dtype=F64)
    q = axis_angle_to_quaternion(w)
    assert q.shape == (2, 5, 4)
    theta = w.norm(dim=-1)[..., None, None]
    k = w / w.norm(dim=-1, keepdim=True)
    K = torch.zeros(2, 5, 3, 3, dtype=F64)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - K.transpose(-1, -2)
    rodrigues = torch.eye(3, dtype=F64) + theta.sin() * K + (1 - theta.cos()) * K @ K
    torch.testing.assert_close(quaternion_to_rotation(q), rodrigues, atol=1e-12, rtol=0)
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64)
    assert torch.equal(axis_angle_to_quaternion(torch.zeros(1, 3, dtype=F64)), identity)
    b = axis_angle_to_quaternion(torch.randn(2, 5, 3, generator=g, dtype=F64))
    torch.testing.assert_close(quaternion_to_rotation(quaternion_multiply(q, b)),
                               quaternion_to_rotation(q) @ quaternion_to_rotation(b),
                               atol=1e-12, rtol=0)


def test_nearest_key_frame_and_interval():
    keys = [0.0, 4.0, 10.0]
    assert nearest_key_frame(keys, 1.0) == (0, 4.0)
    assert nearest_key_frame(keys, 2.0) == (0, 4.0)  # a tie goes to the earlier key
    assert nearest_key_frame(keys, 3.0) == (1, 4.0)
    assert nearest_key_frame(keys, 8.0) == (2, 6.0)
    assert nearest_key_frame(keys, 4.0) == (1, 4.0)
    # past the last key: the last interval; a single key: no interval, but a positive
    # length (Eq. (5) divides by it)
    assert nearest_key_frame(keys, 12.0) == (2, 6.0)
    k, interval = nearest_key_frame([3.0], 3.0)
    assert k == 0 and 0 < interval < 1e-9
