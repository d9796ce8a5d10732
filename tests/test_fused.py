"""The fused step (gofau.fused): the single-pass kernels against the formulas, its tanh, its fallbacks.

Each case compiles its kernels (a few seconds each on the CPU)."""
import numpy as np
import pytest
import torch

import gofau
from gofau import fused
from optim_cases import Reference

CASES = [  # (direction, rule, hyperparameters): every branch of the kernels
    ("sgd", "additive", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", "multiplicative", dict(lr=0.5, lr_in=10.0, momentum=0.9, dampening=0.1, maximize=True)),
    ("sgd", "hybrid", dict(lr=0.1, lr_out=0.7, gamma=0.3, lr_in=3.0, momentum=0.8, nesterov=True)),
    ("sgd", "proportional", dict(lr=0.2, lr_in=2.0)),  # no momentum
    ("adam", "additive", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.01)),
    ("adam", "multiplicative", dict(lr=0.04, lr_in=10.0, amsgrad=True)),
    ("adam", "hybrid", dict(lr=0.004, lr_out=0.04, lr_in=5.0, maximize=True, eps=1e-6)),
    ("adam", "proportional", dict(lr=0.01, lr_in=10.0, weight_decay=0.001)),
]
IDS = [f"{d}-{r}" for d, r, _ in CASES]


def _start(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(17,), (4, 3, 3, 3), (5, 9)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes], g


def _steps(direction, rule, hp, dtype, n, scheduled=False):
    """(params after n fused steps, the reference's in float64, the starting params)."""
    start, g = _start(dtype)
    params = [s.clone().requires_grad_() for s in start]
    opt = gofau.GOFAU(params, direction=direction, rule=rule, fused=True, **hp)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k)) if scheduled else None
    hp = dict(hp)
    lr, lr_out = hp.pop("lr"), hp.pop("lr_out", None)
    ref = Reference(direction, rule, lr, **hp)
    expected = [s.double() for s in start]
    for k in range(n):
        grads = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in start]
        for p, gr in zip(params, grads):
            p.grad = gr.to(dtype)
        opt.step()
        scale = 1 / (1 + k) if scheduled else 1.0  # the hybrid's eta_out follows lr in proportion
        ref.lr, ref.hp["lr_out"] = lr * scale, None if lr_out is None else lr_out * scale
        ref.step(expected, grads)
        if sched:
            sched.step()
    return [p.detach() for p in params], expected, start


@pytest.mark.parametrize("direction, rule, hp", CASES, ids=IDS)
def test_the_kernels_follow_the_formulas_in_float64_under_a_scheduler(direction, rule, hp):
    """In float64 the kernel's tanh is torch.tanh: it agrees with the formulas at the eager path's
    tolerance, while a scheduler changes lr (and the hybrid's eta_out with it) at every step."""
    fused._compiled.clear()
    got, expected, _ = _steps(direction, rule, hp, torch.float64, 5, scheduled=True)
    for p, e in zip(got, expected):
        torch.testing.assert_close(p, e, rtol=1e-12, atol=1e-14)
    assert direction in fused._compiled and "update" not in fused._compiled  # the kernel ran, not the fallback


@pytest.mark.parametrize("k_mul, bound_ulps", [(0.04, 1.0), (0.25, 2.0), (1.0, 6.0)])
@pytest.mark.parametrize("rule", ["multiplicative", "hybrid"])
def test_float32_steps_stay_within_one_ulp_of_the_exact_tanh_for_small_step_sizes(rule, k_mul, bound_ulps):
    """One float32 step of the Adam kernel from one state, with the rational tanh and with torch.tanh:
    they differ by k_mul |theta| |T - tanh| plus the roundings after it: within one ulp of theta for a
    multiplicative step size k_mul (c gamma eta_out) of 0.04, two at 0.25 and six at 1 (tanh's error of up
    to 3.5e-7 times k_mul |theta|). The ulp is that of the largest of |theta| before and after the
    step and of the step itself: a float32 result carries no finer digits than its largest term."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(100_000, generator=g) * 0.05
    m, v, grad = (torch.randn(100_000, generator=g) * s for s in (1e-3, 1e-6, 1e-3))
    v = v.abs()
    out = {}
    for name, fn in (("exact", torch.tanh), ("fused", fused.tanh)):
        q, mq, vq = p.clone(), m.clone(), v.clone()
        fused._adam([q], [grad], [mq], [vq], [], torch.tensor(1e-3, dtype=torch.float64) if rule == "hybrid" else None,
                    torch.tensor(k_mul, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), rule=rule,
                    lr_in=1.0, weight_decay=0.0, maximize=False, beta1=0.9, beta2=0.999, eps=1e-8, tanh=fn)
        out[name] = q
    scale = torch.stack([p.abs(), out["exact"].abs(), (out["exact"] - p).abs()]).amax(0)
    ulp = torch.from_numpy(np.spacing(scale.numpy()))  # of the largest of theta, old and new, and the step
    assert (out["exact"] != out["fused"]).any()  # the two formulations do differ
    assert ((out["fused"] - out["exact"]).abs() <= bound_ulps * ulp).all()


def test_the_rational_tanh_within_6_ulp_and_exact_limits():
    x = torch.cat([torch.logspace(-30, 1.5, 200_001), torch.tensor([0.0, float("inf")])]).float()
    x = torch.cat([x, -x])
    exact = torch.tanh(x.double())
    got = fused.tanh(x)
    ulps = (got.double() - exact).abs() / torch.from_numpy(np.spacing(exact.float().abs().numpy())).double()
    assert ulps.max() <= 6
    assert got[x == float("inf")].eq(1).all() and got[x == -float("inf")].eq(-1).all()
    assert torch.equal(fused.tanh(x.double()), torch.tanh(x.double()))  # float64: torch's own
    assert fused.tanh(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_other_directions_rules_and_step_counts_fall_back_to_the_compiled_eager_step():
    fused._compiled.clear()
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = gofau.GOFAU([p], direction="rmsprop", rule="power", lr=0.01, fused=True)
    p.grad = torch.randn(5, dtype=torch.float64)
    opt.step()
    assert set(fused._compiled) == {"update"}


def test_sgd_steps_its_first_step_eagerly_so_the_buffer_starts_as_the_gradient():
    fused._compiled.clear()
    got, expected, _ = _steps("sgd", "hybrid", dict(lr=0.1, momentum=0.9, dampening=0.5), torch.float64, 1)
    assert fused._compiled == {}  # no kernel yet: the buffer is b_1 = g_1, not (1 - dampening) g_1
    for p, e in zip(got, expected):
        torch.testing.assert_close(p, e, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CUDA path is checked where one is")
@pytest.mark.parametrize("direction, rule, hp", CASES, ids=IDS)
def test_the_kernels_on_cuda_match_the_cpu(direction, rule, hp):
    """On CUDA the same loop compiles to Triton kernels; in float64 both devices follow the formulas."""
    start, g = _start(torch.float64)
    grads = [torch.randn(s.shape, generator=g, dtype=torch.float64) for s in start]
    out = []
    for device in ("cpu", "cuda"):
        params = [s.clone().to(device).requires_grad_() for s in start]
        opt = gofau.GOFAU(params, direction=direction, rule=rule, fused=True, **hp)
        for _ in range(3):
            for p, gr in zip(params, grads):
                p.grad = gr.to(device)
            opt.step()
        out.append([p.detach().cpu() for p in params])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
