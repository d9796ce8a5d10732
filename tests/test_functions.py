import math

import pytest
import torch

from gofau.lab import functions as F

ALL = list(F.FUNCTIONS.values())
IDS = [f.name for f in ALL]


def grad_at(f, point):
    x = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    f(x).backward()
    return x.grad


# Values worked out by hand at simple points.
HAND = [
    (F.SPHERE, (1.0, -2.0), 5.0),
    (F.ILL_CONDITIONED, (0.0, 0.0), 1.0),  # (4 + 0) / 4
    (F.ILL_CONDITIONED, (1.0, 0.0), 25.25),  # (1 + 100) / 4
    (F.SHIFTED, (0.0, 0.0), 3.0),
    (F.ROSENBROCK, (0.0, 0.0), 1.0),
    (F.ROSENBROCK, (-1.0, 1.0), 4.0),
    (F.BEALE, (0.0, 0.0), 1.5**2 + 2.25**2 + 2.625**2),
    (F.HIMMELBLAU, (0.0, 0.0), 170.0),
    (F.RASTRIGIN, (0.5, 0.5), 40.5),
    (F.STYBLINSKI_TANG, (1.0, 0.0), -5.0),
]


@pytest.mark.parametrize("f, point, value", HAND, ids=[h[0].name for h in HAND])
def test_hand_values(f, point, value):
    assert f(torch.tensor(point, dtype=torch.float64)).item() == pytest.approx(value, rel=1e-14)


@pytest.mark.parametrize("f", ALL, ids=IDS)
def test_minima_have_the_stated_value_and_zero_gradient(f):
    for m in f.minima:
        assert f(torch.tensor(m, dtype=torch.float64)).item() == pytest.approx(f.f_min, abs=1e-12)
        assert grad_at(f, m).abs().max().item() < 1e-10


@pytest.mark.parametrize("f", ALL, ids=IDS)
def test_no_grid_point_in_plot_box_is_below_the_minimum(f):
    (x0, x1), (y0, y1) = f.plot_box
    xs, ys = torch.meshgrid(
        torch.linspace(x0, x1, 301, dtype=torch.float64),
        torch.linspace(y0, y1, 301, dtype=torch.float64),
        indexing="ij",
    )
    assert f(torch.stack([xs, ys], -1)).min().item() >= f.f_min - 1e-12


def test_known_closed_forms():
    # Styblinski-Tang: 4t^3 - 32t + 5 = 0 and f_min = t^4 - 16t^2 + 5t (two coordinates, halved).
    t = F.STYBLINSKI_TANG.minima[0][0]
    assert 4 * t**3 - 32 * t + 5 == pytest.approx(0, abs=1e-12)
    assert F.STYBLINSKI_TANG.f_min == pytest.approx(-78.33233140754283, rel=1e-14)
    # Beale's minimum makes every residual zero; Himmelblau has one minimum per quadrant.
    assert {(math.copysign(1, x), math.copysign(1, y)) for x, y in F.HIMMELBLAU.minima} == {
        (1, 1), (-1, 1), (-1, -1), (1, -1)
    }


@pytest.mark.parametrize("f", F.CONVEX, ids=[f.name for f in F.CONVEX])
def test_convex_functions_have_psd_hessians(f):
    for p in f.sample_starts(5, seed=0):
        h = torch.autograd.functional.hessian(f, p)
        assert torch.linalg.eigvalsh(h).min().item() >= 0


def test_ill_conditioned_quadratic_has_condition_number_100():
    h = torch.autograd.functional.hessian(F.ILL_CONDITIONED, torch.zeros(2, dtype=torch.float64))
    ev = torch.linalg.eigvalsh(h)
    assert ev.max() / ev.min() == pytest.approx(100)


def test_shifted_function_needs_a_sign_change():
    (mx, _), = F.SHIFTED.minima
    assert mx < 0 and F.SHIFTED.start_box[0][0] > 0


@pytest.mark.parametrize("f", ALL, ids=IDS)
def test_batched_evaluation_matches_rows_and_gradients_are_per_row(f):
    x = f.sample_starts(7, seed=1).reshape(7, 1, 2).expand(7, 3, 2).clone().requires_grad_(True)
    values = f(x)
    assert values.shape == (7, 3)
    values.sum().backward()
    for i in range(7):
        assert values[i, 0].item() == f(x[i, 0].detach()).item()
        assert torch.equal(x.grad[i, 0], grad_at(f, x[i, 0].tolist()))


@pytest.mark.parametrize("f", ALL, ids=IDS)
def test_starts_are_seeded_and_inside_the_start_box(f):
    a, b = f.sample_starts(50, seed=3), f.sample_starts(50, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, f.sample_starts(50, seed=4))
    for k, (lo, hi) in enumerate(f.start_box):
        assert lo <= a[:, k].min() and a[:, k].max() <= hi


def test_bad_input_is_rejected_with_the_argument_name():
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        F.SPHERE(torch.zeros(3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        F.SPHERE([0.0, 0.0])
    with pytest.raises(ValueError, match="n must be a positive int"):
        F.SPHERE.sample_starts(0, seed=0)
