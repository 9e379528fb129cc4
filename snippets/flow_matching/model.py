"""A small velocity network v_theta(x, t) and its flow matching training loop
(CPU, seconds)."""

# --8<-- [start:mlp]
import torch
from torch import nn


class VelocityMLP(nn.Module):
    """v_theta(x, t): (batch, dim), (batch,) -> (batch, dim). t enters through sin/cos
    features."""

    def __init__(self, dim: int = 2, hidden: int = 128, n_freq: int = 4):
        super().__init__()
        self.register_buffer("freqs", torch.pi * 2.0 ** torch.arange(n_freq))
        self.net = nn.Sequential(
            nn.Linear(dim + 2 * n_freq, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        ang = t[:, None] * self.freqs
        return self.net(torch.cat([x, ang.sin(), ang.cos()], dim=-1))


# --8<-- [end:mlp]


# --8<-- [start:train]
import torch

from snippets.flow_matching.model import VelocityMLP
from snippets.flow_matching.path import flow_matching_loss


def train_flow_matching(
    sample_data, *, dim=2, steps=2000, batch=256, lr=2e-3, hidden=128, seed=0
) -> VelocityMLP:
    """Fit v_theta by regressing on x1 - x0 (snippets/flow_matching/path.py:fm_loss).

    sample_data(n, generator) -> (n, dim) fresh data each step. Adam with cosine decay.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = VelocityMLP(dim, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = flow_matching_loss(model, sample_data(batch, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


# --8<-- [end:train]


def test_training_reduces_the_loss():
    data = lambda n, g: torch.randn(n, 2, generator=g) * 0.3 + torch.tensor([1.0, -1.0])
    g = torch.Generator().manual_seed(5)
    untrained = VelocityMLP()
    model = train_flow_matching(data, steps=300)
    with torch.no_grad():
        x0 = data(4096, g)
        before = flow_matching_loss(untrained, x0, torch.Generator().manual_seed(6))
        after = flow_matching_loss(model, x0, torch.Generator().manual_seed(6))
    assert after < 0.7 * before, f"loss {before:.3f} -> {after:.3f}"


def test_velocity_mlp_time_features_and_seeded_training():
    # t enters as sin/cos of 2 pi 2^k t, k = 0..3 (8 features next to x); a scalar t
    # is the same t for every row. Training is seeded (same seed, same weights) and
    # returns the model in evaluation mode.
    torch.manual_seed(0)
    m = VelocityMLP(hidden=16)
    torch.testing.assert_close(
        m.freqs, torch.pi * torch.tensor([1.0, 2.0, 4.0, 8.0]), atol=0, rtol=0
    )
    assert m.net[0].in_features == 2 + 8 and m.net[-1].out_features == 2
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    out = m(x, torch.tensor(0.3))
    assert out.shape == (5, 2)
    assert torch.equal(out, m(x, torch.full((5,), 0.3)))
    ang = 0.3 * m.freqs
    feats = torch.cat([x, ang.sin().expand(5, 4), ang.cos().expand(5, 4)], dim=-1)
    torch.testing.assert_close(out, m.net(feats), atol=1e-6, rtol=0)
    data = lambda n, g: torch.randn(n, 2, generator=g)
    a = train_flow_matching(data, steps=3, hidden=16, seed=1)
    b = train_flow_matching(data, steps=3, hidden=16, seed=1)
    c = train_flow_matching(data, steps=3, hidden=16, seed=2)
    assert not a.training
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_velocity_mlp_is_three_silu_hidden_layers_and_keeps_float64():
    # The network the page shows: Linear -> SiLU, three times, then a linear read-out.
    m = VelocityMLP(dim=3, hidden=8, n_freq=2)
    kinds = [type(layer) for layer in m.net]
    assert kinds == [nn.Linear, nn.SiLU] * 3 + [nn.Linear]
    assert [(lay.in_features, lay.out_features) for lay in m.net[::2]] == [
        (3 + 4, 8),
        (8, 8),
        (8, 8),
        (8, 3),
    ]
    # In float64 the time features are float64 too: a Python float t = 0.3 is not
    # rounded to float32 first (that would cost ~1e-8; float64 rounding is 1e-15).
    m = m.double()
    x = torch.randn(
        4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    ang = torch.tensor(0.3, dtype=torch.float64) * m.freqs
    feats = torch.cat([x, ang.sin().expand(4, 2), ang.cos().expand(4, 2)], dim=-1)
    torch.testing.assert_close(m(x, 0.3), m.net(feats), atol=1e-14, rtol=0)


def test_train_flow_matching_feeds_fresh_batches_and_steps_by_lr():
    # sample_data(n, generator) is called once per step with the batch size and a
    # torch.Generator. One Adam step from zero moments moves each parameter by
    # lr |g| / (|g| + eps) <= lr, = lr up to eps / |g| for the largest gradients
    # (Kingma & Ba, Sec. 2.1), and cosine decay starts at lr: the largest change is
    # lr within 1e-6, none exceeds it beyond float32 rounding of the weights (|w| < 1:
    # 2^-24).
    calls = []

    def data(n, g):
        calls.append((n, type(g)))
        return torch.randn(n, 2, generator=g)

    for lr in (5e-3, 5e-4):
        calls.clear()
        torch.manual_seed(4)
        start = [p.detach().clone() for p in VelocityMLP(2, 16).parameters()]
        model = train_flow_matching(data, steps=3, batch=32, lr=lr, hidden=16, seed=4)
        assert calls == [(32, torch.Generator)] * 3
        one = train_flow_matching(data, steps=1, batch=32, lr=lr, hidden=16, seed=4)
        change = torch.cat([(p - s).flatten() for p, s in zip(one.parameters(), start)])
        assert change.abs().max().item() <= lr + 2**-24, lr
        assert abs(change.abs().max().item() / lr - 1) < 1e-6 + 2**-24 / lr, lr
        assert not model.training
