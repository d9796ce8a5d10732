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


@pytest.mark.parametrize("f", list(F.FUNCTIONS.values()), ids=lambda f: f.name)
def test_every_instance_keeps_the_minimum_value_at_its_moved_minimisers(f):
    fam = F.instances(f, 8, seed=3)
    assert torch.equal(fam.centres[0], f.minima_tensor()[0]) and fam.angles[0] == 0  # instance 0: the original
    assert (fam.centres[1:].abs() <= 2).all() and len(set(fam.angles[1:].tolist())) == 7
    for k in range(8):
        m = fam.minima(k).clone().requires_grad_()
        value = fam(m, torch.full((len(m),), k, dtype=torch.int64))
        (grad,) = torch.autograd.grad(value.sum(), m)
        assert torch.allclose(value, torch.full_like(value, f.f_min), atol=1e-9)
        assert grad.abs().max() < 1e-6
        box = torch.tensor(f.plot_box, dtype=torch.float64)  # nothing lower nearby: a grid around the minimiser
        g = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 41, dtype=torch.float64)] * 2, indexing="ij"), -1)
        around = fam.minima(k)[0] + g.reshape(-1, 2) * (box[:, 1] - box[:, 0]) / 4
        assert fam(around, torch.full((len(around),), k, dtype=torch.int64)).min() >= f.f_min - 1e-9


def test_an_instance_is_the_function_moved_and_rotated():
    fam = F.instances(F.ILL_CONDITIONED, 4, seed=1)
    k, x = 3, torch.tensor([[0.3, -1.7], [2.0, 0.5]], dtype=torch.float64)
    c, a = fam.centres[k], fam.angles[k]
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    expected = F.ILL_CONDITIONED(torch.tensor([1.0, 1.0], dtype=torch.float64) + (x - c) @ rot)
    assert torch.allclose(fam(x, torch.full((2,), k, dtype=torch.int64)), expected, rtol=1e-14)
    starts = fam.starts(torch.tensor([0, 0, 3]), seed=5)
    plain = F.ILL_CONDITIONED.sample_starts(3, 5)
    assert torch.allclose(starts[:2], plain[:2], rtol=1e-15, atol=1e-15)  # the original: the function's own starts
    assert torch.allclose(starts[2], c + rot @ (plain[2] - torch.tensor([1.0, 1.0], dtype=torch.float64)))


def test_bad_instance_arguments_are_rejected():
    with pytest.raises(ValueError, match="n must be a positive int"):
        F.instances(F.SPHERE, 0, seed=0)
    with pytest.raises(ValueError, match="shift must be a finite number > 0"):
        F.instances(F.SPHERE, 3, seed=0, shift=-1.0)
    fam = F.instances(F.SPHERE, 3, seed=0)
    with pytest.raises(ValueError, match=r"index must be a 1D int64 tensor of instance numbers in \[0, 3\)"):
        fam(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([3]))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2, 2\)"):
        fam(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0, 1]))
