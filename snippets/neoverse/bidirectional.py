"""NeoVerse's bidirectional motion: move key-frame Gaussians to any query time.

NeoVerse (Yang et al. 2026, arXiv:2601.00393, Sec. 3.1) gives every Gaussian of a
key frame at time t two linear velocities v+ and v-, two angular velocities w+ and
w- and a life span tau in (0, 1). A frame between key frames, at time tq, is
rendered from key-frame Gaussians moved along the velocity that points to tq
(Sec. 3.2):

    mu(tq)    = mu + v+- d               (v+ if tq >= t, v- otherwise)  # Eq. (3)
    r(tq)     = r * phi(w+- d)           (phi: axis-angle -> quaternion) # Eq. (4)
    alpha(tq) = alpha exp(-gamma d^(1 / (1 - tau)))                       # Eq. (5)
    d = |tq - t| / |T_k+1 - T_k| <= 1    ([T_k, T_k+1]: the key interval holding tq)

What a velocity is: v+ (v-) is the displacement to the next (previous) input frame
(Appendix A), and only the key frames are input (Sec. 3.2, "two adjacent input
frames"; Appendix F, "adjacent key frames"). The authors' code (IamCreateAI/NeoVerse,
diffsynth/auxiliary_models/worldmirror/models/models/rasterization.py,
Gaussians.transition_means) multiplies v+ by (tq - t) / (T_next - t): the time in
Eq. (3) is the d of Eq. (5), counted in key intervals, and gamma = 10. Which key
frames: the paper moves "a nearest key-frame Gaussian"; the code's Rasterizer
(bidirection=True, its default) renders the Gaussians of both neighbouring key
frames, each faded by Eq. (5).

The tests use true displacements in place of the network's predictions:
(1) forward velocities alone (from the previous key frame) land every Gaussian
exactly where the nearest-key rule does, on the chord between the key positions:
a motion that starts or stops at a key frame is exact, a smooth curve misses by
the chord's sagitta (a h^2 / 8) either way; only the per-frame reading of v+-
(displacement to the next video frame) makes the nearest key frame better;
(2) what the backward velocity buys is content: a Gaussian that exists only in the
later key frame (something that comes into view) can be rendered between the two
key frames, which carrying Gaussians forward only can never do.
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
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def transfer(
    g: dict[str, torch.Tensor],
    t: float,
    tq: float,
    interval: float,
    gamma: float = 10.0,
) -> dict[str, torch.Tensor]:
    """Move the Gaussians of the key frame at time t to the query time tq.

    g: mean (N, 3); v_fwd, v_bwd (N, 3) displacements to the next / previous key
    frame; quat (N, 4); w_fwd, w_bwd (N, 3) rotation vectors over one key interval;
    opacity (N,); life_span (N,) in (0, 1).
    interval: |T_k+1 - T_k|, the length of the key-frame interval holding tq.
    gamma: decay speed of Eq. (5); the paper gives no value, the authors' code 10.
    returns the same keys at tq (velocities unchanged).
    """
    d = abs(tq - t) / interval  # normalised temporal distance, <= 1 inside the interval
    v, w = (g["v_fwd"], g["w_fwd"]) if tq >= t else (g["v_bwd"], g["w_bwd"])
    mean = g["mean"] + v * d  # Eq. (3), arXiv:2601.00393, time in key intervals
    turn = axis_angle_to_quaternion(w * d)
    quat = quaternion_multiply(g["quat"], turn)  # Eq. (4), arXiv:2601.00393
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


def key_frames_used(key_times: list[int], tq: int, rule: str = "nearest") -> list[int]:
    """Indices of the key frames whose Gaussians are rendered at frame tq, between
    the first and the last key frame.
      nearest: the nearest key frame (the paper, Sec. 3.2; ties: the earlier one).
      both:    the key frame at tq, else both neighbours of tq (the authors' code,
               Rasterizer with bidirection=True).
      forward: the key frame at or before tq (forward velocities only).
    """
    left = max(i for i, s in enumerate(key_times) if s <= tq)
    if key_times[left] == tq or rule == "forward":
        return [left]
    if rule == "both":
        return [left, left + 1]
    return [nearest_key_frame([float(s) for s in key_times], float(tq))[0]]


def from_key(
    track: torch.Tensor,
    key_times: list[int],
    k: int,
    tq: int,
    reading: str = "key",
    single: bool = False,
) -> torch.Tensor:
    """Position at frame tq of a point with true positions track (T, 3), carried
    from key frame key_times[k] by Eq. (3).

    reading "key":   v+- = displacement to the next / previous KEY frame (Appendix A
                     with the key frames as input frames; the authors' code).
    reading "frame": v+- = displacement to the next / previous VIDEO frame per frame
                     (per key interval: that displacement times the interval).
    single: one velocity per Gaussian, used both ways (v- = -v+).
    returns (3,).
    """
    T, n, t = track.shape[0], len(key_times), key_times[k]
    _, interval = nearest_key_frame([float(s) for s in key_times], float(tq))
    if reading == "key":
        nxt, prv, scale = key_times[min(k + 1, n - 1)], key_times[max(k - 1, 0)], 1.0
    else:
        nxt, prv, scale = min(t + 1, T - 1), max(t - 1, 0), interval
    v_fwd, v_bwd = (track[nxt] - track[t]) * scale, (track[prv] - track[t]) * scale
    if single:  # the forward velocity, or minus the backward one at the end
        v_fwd = v_fwd if nxt != t else -v_bwd
        v_bwd = -v_fwd
    zeros = torch.zeros(1, 3, dtype=track.dtype)
    g = {
        "mean": track[t][None],
        "v_fwd": v_fwd[None],
        "v_bwd": v_bwd[None],
        "quat": torch.tensor([[1.0, 0, 0, 0]], dtype=track.dtype),
        "w_fwd": zeros,
        "w_bwd": zeros,
        "opacity": torch.ones(1, dtype=track.dtype),
        "life_span": torch.full((1,), 0.5, dtype=track.dtype),
    }
    return transfer(g, float(t), float(tq), interval)["mean"][0]


def positions_at(
    track: torch.Tensor,
    key_times: list[int],
    tq: int,
    rule: str = "nearest",
    reading: str = "key",
) -> torch.Tensor:
    """Position at frame tq of a point with true positions track (T, 3), rebuilt
    from key frames only.
      nearest: the nearest key frame, the velocity pointing to tq (Eq. (3)).
      forward: the key frame before tq, forward velocity only (no v-).
      single:  the nearest key frame, one velocity used both ways (v- = -v+).
    returns (3,).
    """
    k = key_frames_used(key_times, tq, "forward" if rule == "forward" else "nearest")
    return from_key(track, key_times, k[0], tq, reading, single=rule == "single")


def worst_error(
    track: torch.Tensor, key_times: list[int], rule: str, reading: str = "key"
) -> float:
    """Largest position error over all frames between the first and last key."""
    frames = range(key_times[0], key_times[-1] + 1)
    return max(
        (positions_at(track, key_times, q, rule, reading) - track[q]).norm().item()
        for q in frames
    )


def rendered_points(
    tracks: torch.Tensor,
    visible: torch.Tensor,
    key_times: list[int],
    tq: int,
    rule: str = "nearest",
) -> dict[int, list[torch.Tensor]]:
    """Points rendered at frame tq. A key frame holds a Gaussian for each point it
    sees (pixel-aligned: one per pixel of that frame), so a point hidden at a key
    frame has no Gaussian there. tracks (P, T, 3) true positions; visible (P, T).
    rule: as in key_frames_used, or "single" (nearest key frame, v- = -v+).
    returns point index -> its (3,) positions, one per key frame that carries it.
    """
    out: dict[int, list[torch.Tensor]] = {}
    for k in key_frames_used(key_times, tq, rule):
        for p in range(tracks.shape[0]):
            if visible[p, key_times[k]]:
                x = from_key(tracks[p], key_times, k, tq, single=rule == "single")
                out.setdefault(p, []).append(x)
    return out


# --8<-- [end:interpolate]


# ----------------------------------------------------------------------------- tests

F64 = torch.float64


# (33, 3) positions of a thrown ball: constant velocity + acceleration 0.02 downwards
_T = torch.arange(33, dtype=F64)[:, None]
PARABOLA = (
    torch.tensor([[0.1, 0.3, 0.05]], dtype=F64) * _T
    + 0.5 * torch.tensor([[0.0, -0.02, 0.0]], dtype=F64) * _T**2
)
# (33, 3) a point on a circle of radius 3, 0.03 rad per frame
_W = torch.arange(33, dtype=F64) * 0.03
CIRCLE = torch.stack([3 * _W.cos(), 3 * _W.sin(), torch.full_like(_W, 6.0)], -1)


def _track(x: torch.Tensor) -> torch.Tensor:
    """(T,) x positions -> (T, 3) track at y = 0, z = 5."""
    return torch.stack([x, torch.zeros_like(x), torch.full_like(x, 5.0)], dim=-1)


def test_refutes_one_velocity_cannot_follow_a_kink_at_a_key_frame(rule="forward"):
    # Claim: with one velocity per Gaussian a motion that starts or stops at a key
    # frame cannot be described; it takes v+ and v-. Boxes with a kink at key frame
    # 8 (keys 0, 8, 16): one at rest, then sliding 0.25 per frame; one sliding, then
    # at rest. On each key interval the motion is linear, so carrying the previous
    # key frame's Gaussian FORWARD with its one velocity is exact, under either
    # reading of v+ (to the next key frame, or to the next video frame): float64
    # rounding of numbers <= 4 is ~1e-15, asserted 1e-12.
    t = torch.arange(17, dtype=F64)
    keys = [0, 8, 16]
    for track in (_track(0.25 * (t - 8).clamp(min=0)), _track(0.25 * t.clamp(max=8))):
        for reading in ("key", "frame"):
            assert worst_error(track, keys, "nearest", reading) < 1e-12
            err = worst_error(track, keys, rule, reading)
            assert err < 1e-12, (rule, reading, err)


def test_refutes_nearest_key_frame_quarters_the_worst_error_of_forward_only(
    reading="key",
):
    # Claim: from the nearest key frame (forward or backward) the worst error on a
    # smooth curve is about a quarter of carrying Gaussians forward only. With v+-
    # the displacement to the adjacent KEY frame (Appendix A, the authors' code),
    # both rules land on the chord between the key positions x_k, x_k+1, for any
    # motion (s = tq - T_k, h = key interval):
    #   forward from T_k:      x_k + (x_k+1 - x_k) s / h
    #   backward from T_k+1:   x_k+1 + (x_k - x_k+1) (1 - s / h)      (the same point)
    # On a parabola (acceleration a) the chord misses by a s (h - s) / 2, worst
    # a h^2 / 8 at the midpoint (a frame for even h). (Per-frame reading: d frames
    # carried miss by a d (d - 1) / 2, ratio h / (4 (h - 1)) -> 1/4.)
    a = 0.02
    for h in (4, 8, 16):
        keys = list(range(0, 33, h))
        bi = worst_error(PARABOLA, keys, "nearest", reading)
        fwd = worst_error(PARABOLA, keys, "forward", reading)
        assert bi / fwd > 1 - 1e-9, (h, bi / fwd)  # not a quarter: the same
        assert abs(fwd - a * h**2 / 8) < 1e-9, (h, fwd)
    # The same point at every frame of a curve that is not a parabola either.
    keys = [0, 16, 32]
    for q in range(33):
        torch.testing.assert_close(
            positions_at(CIRCLE, keys, q, "nearest", reading),
            positions_at(CIRCLE, keys, q, "forward", reading),
            atol=1e-12,
            rtol=0,
        )


def test_backward_velocity_brings_the_later_key_frame_into_the_interval(
    rules=("nearest", "both"),
):
    # A ball always in view, moving at constant velocity, and a box that comes into
    # view at frame 3 (hidden before, e.g. behind an occluder), at rest until key
    # frame 8 and sliding 0.1 per frame after it; keys 0, 8, 16.
    # Key frame 0 holds no Gaussian for the box, key frame 8 does. With v- the box's
    # Gaussian of key frame 8 is carried back into (0, 8): at frames 5-7 from the
    # nearest key frame (the paper), at every frame with both neighbours (the code).
    # Carried forward only, frames 1-7 use key frame 0 alone: no box there. One
    # velocity used both ways (v- = -v+) carries the box back too, but slides it
    # backwards where it was at rest. Each key interval is linear: every copy moved
    # by its own v+ or v- is exact up to float64 rounding (~1e-15).
    t = torch.arange(17, dtype=F64)
    ball = torch.stack([0.05 * t, 0.3 - 0.02 * t, torch.full_like(t, 4.0)], -1)
    tracks = torch.stack([ball, _track(0.1 * (t - 8).clamp(min=0))])
    visible = torch.stack([torch.ones(17, dtype=torch.bool), t >= 3])
    keys = [0, 8, 16]
    for rule in rules:
        for q in range(17):
            pts = rendered_points(tracks, visible, keys, q, rule)
            assert 0 in pts, (rule, q)
            nearer_next = q % 8 > 4 or q % 8 == 0  # nearest key frame at or after q
            if visible[1, q] and (nearer_next or rule == "both"):
                assert 1 in pts, (rule, q)
            for p, copies in pts.items():  # every rendered copy is where the point is
                for x in copies:
                    assert (x - tracks[p, q]).norm() < 1e-12, (rule, q, p)


def test_rotation_and_opacity_follow_eqs_4_and_5():
    # Eq. (4): after a fraction d = |tq - t| / interval of the key interval the
    # orientation has turned by |w| d (the geodesic angle between the quaternions),
    # forwards with w+ and backwards with w-, stays a unit quaternion, and two steps
    # add up (constant w: one-parameter group).
    axis = torch.tensor([[0.0, 0.6, 0.8]], dtype=F64)
    start = axis_angle_to_quaternion(torch.tensor([[0.3, -0.2, 0.1]], dtype=F64))
    zeros = torch.zeros(1, 3, dtype=F64)
    g = {
        "mean": zeros,
        "v_fwd": zeros,
        "v_bwd": zeros,
        "quat": start,
        "w_fwd": 0.1 * axis,
        "w_bwd": 0.4 * axis,
        "opacity": torch.full((1,), 0.8, dtype=F64),
        "life_span": torch.full((1,), 0.5, dtype=F64),
    }

    def turned(q1, q2):
        return 2 * torch.acos((q1 * q2).sum().abs().clamp(max=1)).item()

    for tq, rate in ((7.0, 0.1), (3.0, 0.4), (9.0, 0.1)):
        out = transfer(g, 5.0, tq, interval=4.0)
        assert abs(turned(out["quat"], start) - rate * abs(tq - 5.0) / 4.0) < 1e-7, tq
        assert abs(out["quat"].norm().item() - 1) < 1e-12
    twice = transfer(transfer(g, 5.0, 6.0, 4.0), 6.0, 7.0, 4.0)["quat"]
    torch.testing.assert_close(
        twice, transfer(g, 5.0, 7.0, 4.0)["quat"], atol=1e-12, rtol=0
    )

    # Eq. (5): full opacity at the key frame; the decay grows with the distance;
    # a long life span (tau -> 1) keeps the opacity inside the interval, a short
    # one (tau -> 0) decays like exp(-gamma d); at the far end d = 1 every tau
    # gives alpha exp(-gamma).
    def alpha(tq, tau, gamma=2.0):
        h = dict(g, life_span=torch.full((1,), tau, dtype=F64))
        return transfer(h, 5.0, tq, interval=4.0, gamma=gamma)["opacity"].item()

    assert alpha(5.0, 0.5) == 0.8
    # gamma defaults to 10 (the authors' code): at the far end alpha = 0.8 e^-10
    far = transfer(g, 5.0, 9.0, interval=4.0)["opacity"].item()
    assert abs(far - 0.8 * torch.e**-10.0) < 1e-15
    assert alpha(6.0, 0.5) > alpha(7.0, 0.5) > alpha(8.0, 0.5)
    assert abs(alpha(7.0, 0.99) - 0.8) < 1e-12  # d = 0.5: 0.5^100 ~ 1e-30
    assert abs(alpha(7.0, 1e-9) - 0.8 * torch.e ** (-2.0 * 0.5)) < 1e-9
    for tau in (0.1, 0.5, 0.9):
        assert abs(alpha(9.0, tau) - 0.8 * torch.e**-2.0) < 1e-12


def test_worst_error_is_that_of_the_longest_interval_wherever_it_lies():
    # worst_error scans every frame from the first key to the last. With uneven key
    # intervals (and keys not starting at frame 0) the worst frame lies in the
    # longest interval h, first or last. Key reading: the chord's sagitta a h^2 / 8
    # for both rules. Per-frame reading: forward only misses by a (h - 1)(h - 2) / 2,
    # the nearest key frame by a d (d - 1) / 2 with d = h / 2.
    a = 0.02
    for keys, h in (([3, 19, 27], 16), ([3, 11, 27], 16), ([4, 10, 14], 6)):
        for rule in ("forward", "nearest"):
            err = worst_error(PARABOLA, keys, rule, "key")
            assert abs(err - a * h**2 / 8) < 1e-9, (keys, rule, err)
        fwd = worst_error(PARABOLA, keys, "forward", "frame")
        bi = worst_error(PARABOLA, keys, "nearest", "frame")
        assert abs(fwd - a * (h - 1) * (h - 2) / 2) < 1e-9, (keys, fwd)
        assert abs(bi - a * (h // 2) * (h // 2 - 1) / 2) < 1e-9, (keys, bi)
    # One step forward with the key's own forward displacement is exact for any
    # track; in "single" mode that holds at every key with a next frame, including
    # the one just before the end; and at a key frame every rule returns the key.
    for rule in ("single", "nearest", "forward"):
        for reading in ("key", "frame"):
            out = positions_at(PARABOLA, [0, 31, 32], 32, rule, reading)
            torch.testing.assert_close(out, PARABOLA[32], atol=1e-12, rtol=0)
            out = positions_at(PARABOLA, [0, 31], 32, rule, "frame")
            torch.testing.assert_close(out, PARABOLA[32], atol=1e-12, rtol=0)
    # "single" reuses v+ backwards, and -v- forwards at the last key frame: on the
    # parabola (keys 0, 16, 32) from key 16 back to frame 12 it lands at
    # x16 - (x32 - x16) / 4, from the last key 32 back to 28 at x32 + (x16 - x32) / 4.
    keys = [0, 16, 32]
    x = PARABOLA
    torch.testing.assert_close(
        positions_at(x, keys, 12, "single"),
        x[16] - (x[32] - x[16]) / 4,
        atol=1e-12,
        rtol=0,
    )
    torch.testing.assert_close(
        positions_at(x, keys, 28, "single"),
        x[32] + (x[16] - x[32]) / 4,
        atol=1e-12,
        rtol=0,
    )


def test_key_frames_used_by_each_rule():
    keys = [0, 8, 16]
    assert key_frames_used(keys, 8, "both") == [1]  # a key frame: its own Gaussians
    assert key_frames_used(keys, 3, "both") == [0, 1]
    assert key_frames_used(keys, 3, "nearest") == [0]
    assert key_frames_used(keys, 4, "nearest") == [0]  # a tie: the earlier key
    assert key_frames_used(keys, 5, "nearest") == [1]
    assert key_frames_used(keys, 7, "forward") == [0]
    assert key_frames_used(keys, 16, "forward") == [2]


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
    torch.testing.assert_close(
        quaternion_to_rotation(quaternion_multiply(q, b)),
        quaternion_to_rotation(q) @ quaternion_to_rotation(b),
        atol=1e-12,
        rtol=0,
    )


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
