"""Update rules (xi): single steps in scalar arithmetic, and properties of the multiplicative family."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gofau

THETA, GRAD, LR = [2.0, -0.5, 0.25], [0.3, 1.5, -4.0], 0.1


def one_step(rule, theta=THETA, grad=GRAD, direction="sgd", lr=LR, **hp):
    p = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(grad, dtype=torch.float64)
    gofau.GOFAU([p], direction=direction, rule=rule, lr=lr, **hp).step()
    return p.detach().tolist()


def expect(values):
    return pytest.approx(values, rel=1e-13, abs=1e-15)


def test_additive_by_hand():
    assert one_step("additive") == expect([t - LR * g for t, g in zip(THETA, GRAD)])


def test_multiplicative_by_hand():
    lr_in = 0.5
    assert one_step("multiplicative", lr_in=lr_in) == expect(
        [t - LR * abs(t) * math.tanh(lr_in * g) for t, g in zip(THETA, GRAD)])


@pytest.mark.parametrize("lr_out", [None, 0.3])
def test_hybrid_by_hand(lr_out):
    gamma, lr_in = 0.25, 2.0
    eta_out = LR if lr_out is None else lr_out
    assert one_step("hybrid", lr_in=lr_in, lr_out=lr_out, gamma=gamma) == expect(
        [t - gamma * eta_out * abs(t) * math.tanh(lr_in * g) - (1 - gamma) * LR * g for t, g in zip(THETA, GRAD)])


def test_power_by_hand():
    lr_in = 0.5
    assert one_step("power", lr_in=lr_in) == expect(
        [t * 2 ** (-math.copysign(1, t) * LR * math.tanh(lr_in * g)) for t, g in zip(THETA, GRAD)])


def test_proportional_by_hand():
    lr_in = 0.5
    assert one_step("proportional", lr_in=lr_in) == expect(
        [t - LR * abs(t) * lr_in * g for t, g in zip(THETA, GRAD)])
    # with Adam at step 1: u = m / (sqrt(v_hat) + eps) = (0.1 g) / (|g| + eps), c = 1 / (1 - 0.9)
    assert one_step("proportional", direction="adam", lr_in=lr_in) == expect(
        [t - 10 * LR * abs(t) * lr_in * (0.1 * g) / (abs(g) + 1e-8) for t, g in zip(THETA, GRAD)])


def test_proportional_is_the_first_order_multiplicative_rule():
    tiny = [1e-6 * g for g in GRAD]
    mult, prop = one_step("multiplicative", grad=tiny), one_step("proportional", grad=tiny)
    # tanh(x) = x - x^3/3 + ...: at |x| <= 4e-6 the cubic term moves theta by < 1e-18, below theta's last bit
    assert prop == mult


def test_weight_decay_enters_the_gradient_before_the_rule():
    wd = 0.3
    assert one_step("multiplicative", weight_decay=wd) == expect(
        [t - LR * abs(t) * math.tanh(g + wd * t) for t, g in zip(THETA, GRAD)])


def test_maximize_ascends():
    wd = 0.3
    assert one_step("hybrid", maximize=True, weight_decay=wd) == expect(
        [t - 0.5 * LR * abs(t) * math.tanh(-g + wd * t) - 0.5 * LR * (-g + wd * t) for t, g in zip(THETA, GRAD)])


def test_adam_factor_multiplies_eta_out_outside_the_tanh():
    """MAdam at t=1: u = g(1-b1) / (|g| + eps), c = 1/(1-b1) multiplies eta_out, not u inside the tanh."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    u = [(1 - b1) * g / (abs(g) + eps) for g in GRAD]
    assert one_step("multiplicative", direction="adam") == expect(
        [t - LR / (1 - b1) * abs(t) * math.tanh(ui) for t, ui in zip(THETA, u)])


# Properties. Subnormal and huge values are left out: there theta - eta |theta| tanh rounds to zero or overflows.
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False)
nonzero = finite.filter(lambda x: abs(x) > 1e-100)
ROUNDING = 4 * torch.finfo(torch.float64).eps  # n - t carries the rounding of n, relative to |t|
quiet_zero_warning = pytest.mark.filterwarnings("ignore:A parameter of shape")


def _vectors(elements):
    return st.lists(elements, min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), eta_out=st.floats(0.0, 0.99), lr_in=st.floats(0.0, 10.0),
       rule=st.sampled_from(["multiplicative", "power"]))
def test_multiplicative_step_keeps_signs_and_is_bounded_sgd(data, eta_out, lr_in, rule):
    theta = data.draw(_vectors(nonzero))
    grad = data.draw(st.lists(finite, min_size=len(theta), max_size=len(theta)))
    new = one_step(rule, theta, grad, lr=eta_out, lr_in=lr_in)
    for t, n in zip(theta, new):
        assert math.copysign(1, n) == math.copysign(1, t) and n != 0
        bound = eta_out * abs(t) if rule == "multiplicative" else (2**eta_out - 1) * abs(t)
        assert abs(n - t) <= bound * (1 + 1e-12) + ROUNDING * abs(t)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), beta1=st.floats(0.0, 0.95), frac=st.floats(0.0, 0.99), lr_in=st.floats(0.0, 10.0))
def test_multiplicative_step_keeps_signs_and_is_bounded_adam(data, beta1, frac, lr_in):
    """At t=1 Adam's factor is c = 1/(1-beta1): the step is at most c eta_out |theta|; eta_out c < 1 keeps signs."""
    c = 1 / (1 - beta1)
    eta_out = frac / c
    theta = data.draw(_vectors(nonzero))
    grad = data.draw(st.lists(finite, min_size=len(theta), max_size=len(theta)))
    new = one_step("multiplicative", theta, grad, direction="adam", lr=eta_out, lr_in=lr_in, betas=(beta1, 0.999))
    for t, n in zip(theta, new):
        assert math.copysign(1, n) == math.copysign(1, t) and n != 0
        assert abs(n - t) <= c * eta_out * abs(t) * (1 + 1e-12) + ROUNDING * abs(t)


@quiet_zero_warning
@settings(max_examples=40, deadline=None)
@given(grad=_vectors(finite), lr=st.floats(0.0, 5.0),
       rule=st.sampled_from(["multiplicative", "power", "hybrid", "proportional"]),
       direction=st.sampled_from(["sgd", "adam", "adagrad", "rmsprop"]))
def test_zeros_stay_zero(grad, lr, rule, direction):
    hp = dict(gamma=1.0) if rule == "hybrid" else {}
    assert one_step(rule, [0.0] * len(grad), grad, direction=direction, lr=lr, **hp) == [0.0] * len(grad)


@quiet_zero_warning
@settings(max_examples=40, deadline=None)
@given(data=st.data(), lr=st.floats(0.0, 2.0), lr_in=st.floats(0.0, 5.0),
       direction=st.sampled_from(["sgd", "adam", "adagrad", "rmsprop"]))
def test_hybrid_endpoints(data, lr, lr_in, direction):
    """gamma=1 is the multiplicative rule (with eta_out = lr_out), gamma=0 the additive one, exactly."""
    theta = data.draw(_vectors(finite))
    grad = data.draw(st.lists(finite, min_size=len(theta), max_size=len(theta)))
    lr_out = data.draw(st.floats(0.0, 0.99))
    assert one_step("hybrid", theta, grad, direction=direction, lr=lr, lr_in=lr_in, lr_out=lr_out, gamma=1.0) == \
        one_step("multiplicative", theta, grad, direction=direction, lr=lr_out, lr_in=lr_in)
    assert one_step("hybrid", theta, grad, direction=direction, lr=lr, lr_in=lr_in, lr_out=lr_out, gamma=0.0) == \
        one_step("additive", theta, grad, direction=direction, lr=lr)


# ---------------------------------------------------------------- the eager step's float32 tanh and work memory

@pytest.mark.parametrize("k_mul, bound_ulps", [(0.04, 1.0), (0.25, 1.0), (1.0, 3.0)])
@pytest.mark.parametrize("rule", ["multiplicative", "hybrid"])
@pytest.mark.parametrize("lr_in", [1.0, 10.0])
def test_float32_eager_steps_stay_within_one_ulp_of_the_exact_tanh(rule, k_mul, bound_ulps, lr_in):
    """One float32 eager step (tanh as 2 sigmoid(2x) - 1) against the same step with torch.tanh: within
    one ulp of theta for a multiplicative step size k_mul = c gamma eta_out up to 1/4, three at 1. The
    ulp is that of the largest of |theta| before and after the step and of the step itself."""
    from gofau.rules import _relative_terms
    g = torch.Generator().manual_seed(0)
    p = torch.randn(200_000, generator=g) * 0.05
    u = torch.cat([torch.randn(100_000, generator=g) * 3, torch.randn(100_000, generator=g) * 1e-3])
    k_add = -1e-3 if rule == "hybrid" else None
    moved = p if k_add is None else p.add(u, alpha=k_add)  # the hybrid's additive term, as the step adds it
    exact = torch.addcmul(moved, p.abs(), torch.tanh(u * lr_in), value=-k_mul)
    got = p.clone()
    _relative_terms([got], [u], -k_mul, lr_in, True, {}, k_add)
    scale = torch.stack([p.abs(), exact.abs(), (exact - p).abs()]).amax(0)
    ulp = torch.from_numpy(np.spacing(scale.numpy()))
    assert (got != exact).any()  # the two formulations do differ
    assert ((got - exact).abs() <= bound_ulps * ulp).all()


def test_the_eager_work_memory_is_reused_never_saved_and_keeps_channels_last():
    """The rules' two work buffers grow to the largest tensor once and are then reused; they are not
    optimizer state (state_dict, copies); a channels_last parameter steps as its contiguous twin."""
    import copy
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    twins = [w.clone().requires_grad_(), w.clone().to(memory_format=torch.channels_last).requires_grad_()]
    bias = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    opts = [gofau.HSGD([p, bias.detach().clone().requires_grad_()], lr=0.1, momentum=0.9) for p in twins]
    for _ in range(3):
        grad = torch.randn(w.shape, generator=g, dtype=torch.float64)
        for opt in opts:
            p, b = opt.param_groups[0]["params"]
            p.grad, b.grad = grad.clone(), grad[0, :, 0, 0].clone()
            opt.step()
    torch.testing.assert_close(twins[0].detach(), twins[1].detach(), rtol=0, atol=0)
    (buf,) = opts[0]._scratch.values()
    assert buf.numel() == 2 * w.numel() and "_scratch" not in str(opts[0].state_dict())
    clone = copy.deepcopy(opts[0])
    assert clone._scratch == {} and len(clone.state) == 2
