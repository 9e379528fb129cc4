"""2D experiment: a mixture of 8 Gaussians, a flow matching model trained in seconds on
CPU, and the sliced Wasserstein distance (SWD) between its samples and fresh data."""

# --8<-- [start:data]
import math

import torch

RADIUS, MODE_STD = 2.0, 0.1
ANGLES = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
# (8, 2): mode k at angle 45 k degrees
MEANS = RADIUS * torch.stack([ANGLES.cos(), ANGLES.sin()], dim=1)


def eight_gaussians(n: int, generator=None, dtype=torch.float32) -> torch.Tensor:
    """n samples of the equal-weight mixture of N(MEANS[k], MODE_STD^2 I), (n, 2)."""
    k = torch.randint(0, 8, (n,), generator=generator)
    eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (MEANS[k] + MODE_STD * eps).to(dtype)


# --8<-- [end:data]


# --8<-- [start:swd]
import torch


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj=256, seed=0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point clouds (n, d):
    sqrt(mean over random directions theta of W2^2 of the 1D projections), where the
    1D W2 is computed exactly by sorting (Rabin et al. 2011; Bonneel et al. 2015)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x.double() @ theta, dim=0)
    py, _ = torch.sort(y.double() @ theta, dim=0)
    return ((px - py) ** 2).mean().sqrt().item()


# --8<-- [end:swd]


# --8<-- [start:experiment]
import time

import torch

from snippets.flow_matching.model import train_flow_matching
from snippets.flow_matching.sampling import euler_sample
from snippets.flow_matching.toy2d import eight_gaussians, sliced_wasserstein


def pretrained_toy_model(steps: int = 2000, seed: int = 0):
    """Train the 8-Gaussians flow model (seconds on a CPU; snippets/flow_grpo uses it
    as its frozen reference model). returns (model, CPU seconds spent training)."""
    start = time.process_time()  # CPU seconds: the machine is shared
    model = train_flow_matching(
        eight_gaussians, steps=steps, batch=512, lr=3e-3, hidden=128, seed=seed
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model, time.process_time() - start


def sample_quality(model, n=5000, num_steps=50, seed=1, repeats=5):
    """SWD(model samples, fresh data) against the noise floor SWD(fresh data, fresh
    data), each averaged over `repeats` fresh data sets (the floor varies with the mode
    counts). The n model samples are drawn ONCE and reused in every repeat: the
    repeats of swd_model (and swd_noise) are not independent, only their data side
    is fresh; both sides of each floor pair are fresh."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n, 2, generator=g)
    samples = euler_sample(model, x1, num_steps)
    mean = lambda f: sum(f() for _ in range(repeats)) / repeats
    data = lambda: eight_gaussians(n, g)
    return {
        "swd_model": mean(lambda: sliced_wasserstein(samples, data())),
        "swd_floor": mean(lambda: sliced_wasserstein(data(), data())),
        "swd_noise": mean(lambda: sliced_wasserstein(x1, data())),  # untrained: x0 = x1
    }


# --8<-- [end:experiment]


def test_swd_is_zero_for_identical_clouds_and_grows_with_shift():
    x = eight_gaussians(500, torch.Generator().manual_seed(0))
    assert sliced_wasserstein(x, x) == 0.0
    # Shifting a cloud by a vector c moves every 1D projection by c.theta:
    # SWD = |c| / sqrt(d).
    c = torch.tensor([0.6, 0.8])
    assert abs(sliced_wasserstein(x, x + c, n_proj=4000) - 1.0 / 2**0.5) < 0.02


def test_swd_threshold_detects_a_dropped_mode():
    # The threshold used below (1.5 x the data-vs-data floor) rejects a sampler that
    # lost one of the 8 modes.
    g = torch.Generator().manual_seed(3)
    pool = eight_gaussians(40_000, g)
    nearest = ((pool[:, None, :].double() - MEANS) ** 2).sum(-1).argmin(1)
    dropped = pool[nearest != 0][:5000]
    data = lambda: eight_gaussians(5000, g)
    swd_dropped = sum(sliced_wasserstein(dropped, data()) for _ in range(3)) / 3
    floor = sum(sliced_wasserstein(data(), data()) for _ in range(3)) / 3
    assert swd_dropped > 1.5 * floor, (swd_dropped, floor)


def test_toy_flow_trains_and_matches_data(steps=2000, spread=1.0):
    # spread: the model's samples moved away from (> 1) or towards (< 1) their nearest
    # mode centre by this factor, a counterfactual of the mode width
    model, _ = pretrained_toy_model(steps)
    q = sample_quality(model)
    # Returned frozen and in evaluation mode: ready to serve as a reference model.
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # Within 1.5x the SWD between two independent data samples of the same size (the
    # noise floor of the measure), and far below the SWD of the untrained starting point
    # (noise).
    assert q["swd_model"] < 1.5 * q["swd_floor"], q
    assert q["swd_model"] < 0.3 * q["swd_noise"], q
    # The SWD alone does not see the width of the modes: data with modes twice as wide
    # (std 0.2) or half as wide (0.05) sit at the noise floor too (0.106 and 0.100
    # against 0.103). So the width is checked itself: the RMS offset of the samples
    # sample_quality drew (seed 1, 50 steps) from their nearest centre, per dimension,
    # within a factor sqrt(2) of MODE_STD, halfway (in log scale) to a factor 2.
    x = euler_sample(
        model, torch.randn(5000, 2, generator=torch.Generator().manual_seed(1)), 50
    ).double()
    centre = MEANS[((x[:, None, :] - MEANS) ** 2).sum(-1).argmin(1)]
    width = (spread * (x - centre)).pow(2).mean().sqrt().item()
    assert MODE_STD / 2**0.5 < width < MODE_STD * 2**0.5, width


def test_swd_alone_does_not_see_the_mode_width():
    # Why test_toy_flow_trains_and_matches_data also checks the width: mixtures
    # with the right centres and weights but modes half or twice as wide as the data's
    # pass its SWD threshold (1.5 x the floor), 5000 points each as there.
    g = torch.Generator().manual_seed(1)
    n, mean5 = 5000, lambda f: sum(f() for _ in range(5)) / 5
    floor = mean5(
        lambda: sliced_wasserstein(eight_gaussians(n, g), eight_gaussians(n, g))
    )
    for std in (0.05, 0.2):
        k = torch.randint(0, 8, (n,), generator=g)
        x = MEANS[k] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)
        swd = mean5(lambda: sliced_wasserstein(x, eight_gaussians(n, g)))
        assert swd < 1.5 * floor, (std, swd, floor)


def test_eight_gaussians_is_the_equal_weight_mixture():
    # Seeded, float32 unless asked; float64 samples carry float64 precision.
    g = lambda: torch.Generator().manual_seed(7)
    x = eight_gaussians(80_000, g())
    assert x.dtype == torch.float32 and x.shape == (80_000, 2)
    assert torch.equal(x, eight_gaussians(80_000, g()))
    x64 = eight_gaussians(80_000, g(), dtype=torch.float64)
    assert x64.dtype == torch.float64
    # Every sample belongs to its nearest mode (modes 1.53 apart, std 0.1: 7.6 std
    # to the midpoint). Counts within 5 standard errors of n / 8 (se 94); each mode's
    # mean within 5 se (0.1 / sqrt(10^4) = 0.001) of MEANS[k], its std within 5 se
    # (0.1 / sqrt(2 x 10^4) = 0.0007) of MODE_STD.
    nearest = ((x64[:, None, :] - MEANS) ** 2).sum(-1).argmin(1)
    counts = torch.bincount(nearest, minlength=8)
    assert ((counts - 10_000).abs() < 5 * 94).all(), counts
    for k in range(8):
        mode = x64[nearest == k]
        assert (mode.mean(0) - MEANS[k]).abs().max() < 0.005, k
        assert ((mode.std(0) - MODE_STD).abs() < 0.0035).all(), (k, mode.std(0))
    # In float64 the noise itself is float64: around mode 0 at (2, 0) exactly,
    # sample minus mean is exact, and it is not a float32 number, as noise drawn in
    # float32 would be.
    noise = x64[nearest == 0] - MEANS[0]
    assert (noise - noise.float().double()).abs().max() > 0


def test_sliced_wasserstein_is_a_seeded_symmetric_distance():
    # Its random directions come from its own seed: the same call gives the same
    # value, another seed a (slightly) different one; |a - b| is symmetric in a, b.
    x = eight_gaussians(500, torch.Generator().manual_seed(1))
    y = eight_gaussians(500, torch.Generator().manual_seed(2))
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x, y)
    assert sliced_wasserstein(x, y) == sliced_wasserstein(y, x)
    assert sliced_wasserstein(x, y) != sliced_wasserstein(x, y, seed=1)


def test_pretrained_toy_model_is_the_shown_training_run():
    # pretrained_toy_model(steps, seed) trains exactly what the page shows:
    # train_flow_matching on eight_gaussians, batch 512, lr 3e-3, 128 hidden units.
    cpu = time.process_time()
    model, seconds = pretrained_toy_model(steps=3, seed=2)
    # It reports the CPU seconds its training took: part of what this call spent.
    assert 0 < seconds <= time.process_time() - cpu
    torch.manual_seed(123)  # the global RNG state must not matter
    again = train_flow_matching(
        eight_gaussians, steps=3, batch=512, lr=3e-3, hidden=128, seed=2
    )
    pairs = zip(model.parameters(), again.parameters())
    assert all(torch.equal(p, q) for p, q in pairs)


class _Velocity(torch.nn.Module):
    """A fixed velocity field v(x, t) = a x (a = 0: samples are the noise itself)."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x, t):
        return self.a * x


class _Stop(Exception):
    pass


def test_sample_quality_means_swds_over_fresh_data():
    # The page's settings are the defaults: 5000 samples, 50 Euler steps from t = 1.
    # A velocity field that stops at its second call sees both (dt = 1 / 50).
    import pytest

    calls = []

    def spy(x, t):
        calls.append((x.shape, float(t[0])))
        if len(calls) == 2:
            raise _Stop
        return torch.zeros_like(x)

    with pytest.raises(_Stop):
        sample_quality(spy)
    assert calls[0][0] == (5000, 2) and calls[0][1] == 1.0
    assert abs(calls[0][1] - calls[1][1] - 1 / 50) < 1e-6
    # Seeded: the same call, the same numbers (v = x, a field that moves samples).
    q = sample_quality(_Velocity(1.0), n=500, repeats=2)
    assert q == sample_quality(_Velocity(1.0), n=500, repeats=2)
    # With v = 0 the samples are the noise: swd_model and swd_noise both estimate
    # SWD(N(0, I), data), which an independent pair estimates too. SWD with fixed
    # directions is a metric, so |SWD(a, b) - SWD(a', b')| <= SWD(a, a') + SWD(b, b'):
    # two same-distribution SWDs, each of the order of the floors measured here;
    # 3 x their sum allows for their scatter.
    n = 1000
    q = sample_quality(_Velocity(0.0), n=n)
    g = torch.Generator().manual_seed(11)
    noise, data = torch.randn(n, 2, generator=g), eight_gaussians(n, g)
    direct = sliced_wasserstein(noise, data)
    floors = sliced_wasserstein(
        noise, torch.randn(n, 2, generator=g)
    ) + sliced_wasserstein(data, eight_gaussians(n, g))
    for key in ("swd_model", "swd_noise"):
        assert abs(q[key] - direct) < 3 * floors, (key, q[key], direct, floors)
    assert abs(q["swd_floor"] - floors / 2) < 3 * floors, (q, floors)
