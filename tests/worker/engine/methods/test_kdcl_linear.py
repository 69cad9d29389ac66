"""KDCL's "linear" ensemble weights (ensemble.linear_weights) against independent optimisers.

The references share no code with the solver: scipy's SLSQP (a quasi-Newton SQP) on a
float64 torch F.cross_entropy with its autograd gradient, Brent's method on the segment for
two peers, a grid, and the Frank-Wolfe gap g.w - min_i g_i of an autograd gradient, which
bounds f(w) - f* from above for this convex f, whatever found w.
"""

import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize, minimize_scalar

from tests.worker.engine.helpers import np_ce
from worker.engine.methods import ensemble


def np_mix_ce(w: np.ndarray, z: np.ndarray, y: list[int]) -> float:
    return float(np_ce(np.einsum("i,inc->nc", w, z), y).mean())


def complementary() -> tuple[torch.Tensor, torch.Tensor]:
    """Peer 0 is confidently right on samples 0-2 and wrong on 3; peer 1 the reverse."""
    y = torch.tensor([0, 1, 2, 0])
    right, wrong = F.one_hot(y, 3).float(), F.one_hot((y + 1) % 3, 3).float()
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])[:, None]
    return torch.stack(
        [3 * (mask * right + (1 - mask) * wrong), 3 * ((1 - mask) * right + mask * wrong)]
    ), y


def peers(seed: int, m: int = 3, n: int = 128, c: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Peers of different quality, as trained networks: scale_i * (q_i * onehot(y) + noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    quality = 0.5 + 3 * torch.rand(m, 1, 1, generator=g)
    scale = 0.5 + 2 * torch.rand(m, 1, 1, generator=g)
    noise = torch.randn(m, n, c, generator=g)
    return scale * (quality * F.one_hot(y, c) + noise), y


def ce(w: torch.Tensor | np.ndarray, logits: torch.Tensor, y: torch.Tensor) -> float:
    """f(w) in float64, for the weights exactly as given."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return F.cross_entropy(torch.einsum("i,inc->nc", w, logits.double()), y).item()


def slsqp(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The lowest f that SLSQP reaches from the uniform mix and from next to each peer."""
    z, m = logits.double(), len(logits)

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        wt = torch.tensor(w, requires_grad=True)
        loss = F.cross_entropy(torch.einsum("i,inc->nc", wt, z), y)
        loss.backward()
        assert wt.grad is not None
        return loss.item(), wt.grad.numpy()

    simplex = {"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(m)}
    best = min(ce(np.eye(m)[i], logits, y) for i in range(m))
    for start in [np.full(m, 1 / m), *(0.9 * np.eye(m) + 0.1 / m)]:
        found = minimize(
            fun, start, jac=True, method="SLSQP", bounds=[(0, 1)] * m, constraints=[simplex],
            options={"ftol": 1e-15, "maxiter": 1000},
        )  # fmt: skip
        w = np.clip(found.x, 0, None)
        best = min(best, ce(w / w.sum(), logits, y))
    return best


def brent(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(a, f) of the best mix a * z_0 + (1 - a) * z_1 of two peers, by Brent's method."""
    z, labels = logits.double().numpy(), y.tolist()

    def f(a: float) -> float:
        return np_mix_ce(np.array([a, 1 - a]), z, labels)

    found = minimize_scalar(f, bounds=(0, 1), method="bounded", options={"xatol": 1e-12})
    return min(
        [(float(found.x), float(found.fun)), (0.0, f(0.0)), (1.0, f(1.0))], key=lambda t: t[1]
    )


def gradient(w: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w = w.detach().double().clone().requires_grad_()
    F.cross_entropy(torch.einsum("i,inc->nc", w, logits.double()), y).backward()
    assert w.grad is not None
    return w.grad


def certified_gap(w: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> float:
    """An upper bound on f(w) - f* for w put back on the simplex in float64 (convexity)."""
    w = w.double() / w.double().sum()
    g = gradient(w, logits, y)
    return (g @ w - g.min()).item()


def assert_on_the_simplex(w: torch.Tensor, m: int) -> None:
    assert w.dtype == torch.float32 and w.shape == (m,) and torch.isfinite(w).all()
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_thirty_random_batches_match_slsqp_and_are_certified_optimal() -> None:
    gaps, certified, on_a_face = [], [], 0
    for seed in range(30):
        logits, y = peers(seed)
        w = ensemble.linear_weights(logits, y)
        assert_on_the_simplex(w, 3)
        gaps.append(ce(w, logits, y) - slsqp(logits, y))
        certified.append(certified_gap(w, logits, y))
        on_a_face += int((w == 0).any())
    assert max(gaps) < 1e-6 and abs(statistics.median(gaps)) < 1e-9, gaps
    assert max(certified) < 1e-6, certified
    assert 5 <= on_a_face <= 25  # both interior optima and optima on an edge were exercised


def test_two_peers_match_brent_on_the_segment() -> None:
    for seed in range(10):
        logits, y = peers(100 + seed, m=2, n=64, c=10)
        a, best = brent(logits, y)
        w = ensemble.linear_weights(logits, y)
        assert_on_the_simplex(w, 2)
        assert ce(w, logits, y) < best + 1e-7
        assert w[0].item() == pytest.approx(a, abs=1e-5)


def test_linear_weights_reach_the_interior_optimum_and_beat_each_peer() -> None:
    logits, y = complementary()
    w = ensemble.linear_weights(logits, y)
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0, abs=1e-6)
    z = logits.double().numpy()
    grid = np.linspace(0, 1, 2001)
    best = min(np_mix_ce(np.array([a, 1 - a]), z, y.tolist()) for a in grid)  # at a = 0.7046
    got = np_mix_ce(w.double().numpy(), z, y.tolist())
    assert got == pytest.approx(best, abs=1e-6)
    assert w[0].item() == pytest.approx(0.7046, abs=1e-3)
    assert all(got < np_mix_ce(np.eye(2)[i], z, y.tolist()) for i in range(2))


def test_linear_weights_go_to_the_peer_that_is_clearly_right() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (16,), generator=g)
    right = 6 * F.one_hot(y, 5).float()
    wrong = 6 * F.one_hot((y + 2) % 5, 5).float()
    noise = torch.randn(16, 5, generator=g)
    logits = torch.stack([noise, right, wrong])
    w = ensemble.linear_weights(logits, y)
    assert (w >= 0).all() and w.sum().item() == pytest.approx(1.0, abs=1e-6) and w[1] > 0.99
    z = logits.double().numpy()
    got = np_mix_ce(w.double().numpy(), z, y.tolist())
    assert all(got <= np_mix_ce(np.eye(3)[i], z, y.tolist()) + 1e-7 for i in range(3))


def test_an_optimum_at_a_vertex_is_that_peer_exactly() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (32,), generator=g)
    right, wrong = 6 * F.one_hot(y, 5).float(), 6 * F.one_hot((y + 2) % 5, 5).float()
    logits = torch.stack([wrong, right, wrong.roll(1, dims=1)])
    grad = gradient(torch.tensor([0.0, 1.0, 0.0]), logits, y)
    assert grad[0] > grad[1] + 1e-3 and grad[2] > grad[1] + 1e-3  # KKT: the vertex is optimal
    assert torch.equal(ensemble.linear_weights(logits, y), torch.tensor([0.0, 1.0, 0.0]))


def test_a_useless_peer_gets_no_weight() -> None:
    logits, y = peers(8)
    g = torch.Generator().manual_seed(8)
    logits = torch.cat([logits[:2], 4 * torch.randn(1, *logits.shape[1:], generator=g)])
    w = ensemble.linear_weights(logits, y)
    assert_on_the_simplex(w, 3)
    assert w[2].item() < 1e-6 and w[0] > 0.05 and w[1] > 0.05
    assert ce(w, logits, y) < slsqp(logits, y) + 1e-6
    a, best = brent(logits[:2], y)  # the optimum lies on the edge of peers 0 and 1
    assert ce(w, logits, y) < best + 1e-6 and w[0].item() == pytest.approx(a, abs=1e-5)


@pytest.mark.parametrize("jitter", [0.0, 1e-6, 1e-3])
def test_identical_and_nearly_identical_peers(jitter: float) -> None:
    logits, y = peers(11, m=2)
    g = torch.Generator().manual_seed(11)
    twin = logits[0] + jitter * torch.randn(logits[0].shape, generator=g)
    stacked = torch.stack([logits[0], twin, logits[1]])
    w = ensemble.linear_weights(stacked, y)
    assert_on_the_simplex(w, 3)
    a, best = brent(logits, y)
    assert 0.05 < a < 0.95  # the optimum mixes the two distinct peers
    assert ce(w, stacked, y) < best + 1e-6
    assert (w[0] + w[1]).item() == pytest.approx(a, abs=1e-4)
    assert certified_gap(w, stacked, y) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_eight_peers_match_slsqp(seed: int) -> None:
    logits, y = peers(200 + seed, m=8, n=256, c=50)
    w = ensemble.linear_weights(logits, y)
    assert_on_the_simplex(w, 8)
    assert ce(w, logits, y) < slsqp(logits, y) + 1e-6
    assert certified_gap(w, logits, y) < 1e-6


def test_eight_peers_a_thousand_classes_and_samples_are_certified_optimal() -> None:
    logits, y = peers(300, m=8, n=1024, c=1000)
    w = ensemble.linear_weights(logits, y)
    assert_on_the_simplex(w, 8)
    assert certified_gap(w, logits, y) < 1e-6


@pytest.mark.parametrize("scale", [1e3, 1e6])
def test_huge_logits_stay_finite_and_beat_the_best_peer(scale: float) -> None:
    logits, y = peers(5)
    logits = scale * logits
    w = ensemble.linear_weights(logits, y)
    assert_on_the_simplex(w, 3)
    got = ce(w, logits, y)
    best_peer = min(ce(np.eye(3)[i], logits, y) for i in range(3))
    assert np.isfinite(got) and got <= best_peer * (1 + 1e-6)
    assert got < slsqp(logits, y) * (1 + 1e-6)  # float32 weights: a relative tolerance


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_weights_on_the_input_device(device: str, dtype: torch.dtype) -> None:
    logits, y = peers(3)
    logits = logits.to(device, dtype).requires_grad_()
    w = ensemble.linear_weights(logits, y.to(device))
    assert w.device == logits.device and not w.requires_grad
    assert_on_the_simplex(w.cpu(), 3)
    assert certified_gap(w.cpu(), logits.detach().cpu(), y) < 1e-6


def test_two_calls_give_identical_weights() -> None:
    logits, y = peers(4, m=5)
    assert torch.equal(ensemble.linear_weights(logits, y), ensemble.linear_weights(logits, y))


def test_a_handful_of_newton_steps_suffice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Quadratic convergence: a solver that stalls can still end accurate, but slowly."""
    hessian, calls = ensemble._hessian, []

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return hessian(*args)

    monkeypatch.setattr(ensemble, "_hessian", counted)
    for seed in range(10):
        calls.clear()
        ensemble.linear_weights(*peers(seed, m=2 + seed % 7))
        assert len(calls) <= 8, (seed, len(calls))
