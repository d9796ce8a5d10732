"""Every base direction (phi, psi, step-size factor c) under every rule, against the formulas over 3 steps."""
import math

import pytest
import torch

import gofau
from optim_cases import Reference

BASES = [
    ("sgd", {}),
    ("sgd", dict(momentum=0.9)),
    ("sgd", dict(momentum=0.9, dampening=0.3)),
    ("sgd", dict(momentum=0.8, nesterov=True)),
    ("sgd", dict(weight_decay=0.1)),
    ("sgd", dict(momentum=0.5, maximize=True, weight_decay=0.05)),
    ("adam", {}),
    ("adam", dict(amsgrad=True)),
    ("adam", dict(betas=(0.5, 0.8), eps=1e-3, weight_decay=0.05)),
    ("adam", dict(maximize=True, amsgrad=True)),
    ("adagrad", {}),
    ("adagrad", dict(lr_decay=0.5, initial_accumulator_value=0.3)),
    ("adagrad", dict(weight_decay=0.1, eps=1e-3, maximize=True)),
    ("rmsprop", {}),
    ("rmsprop", dict(centered=True)),
    ("rmsprop", dict(momentum=0.7)),
    ("rmsprop", dict(centered=True, momentum=0.5, alpha=0.9, weight_decay=0.1, eps=1e-4)),
]
RULES = [
    ("additive", {}),
    ("multiplicative", dict(lr_in=0.8)),
    ("hybrid", dict(lr_in=0.8, lr_out=0.07, gamma=0.3)),
    ("hybrid", dict(gamma=0.6)),  # lr_out None: eta_out = lr
    ("power", dict(lr_in=2.0)),
    ("proportional", dict(lr_in=0.8)),
]


def _ids(cases):
    return [f"{name}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'default'}" for name, hp in cases]


def _grads(seed, shapes, steps):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("rule,rule_hp", RULES, ids=_ids(RULES))
@pytest.mark.parametrize("direction,base_hp", BASES, ids=_ids(BASES))
def test_steps_match_formulas(direction, base_hp, rule, rule_hp):
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)]
    params = [p.clone().requires_grad_() for p in start]
    expected = [p.clone() for p in start]
    hp = {**base_hp, **rule_hp}
    opt = gofau.GOFAU(params, direction=direction, rule=rule, lr=0.05, **hp)
    ref = Reference(direction, rule, 0.05, **hp)
    for grads in _grads(1, [p.shape for p in start], 3):
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        ref.step(expected, grads)
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    # the steps really happened: every parameter moved from its start
    assert all(not torch.equal(p.detach(), s) for p, s in zip(params, start))


def test_reference_sgd_momentum_by_hand():
    """The reference itself, for SGD with momentum and dampening, in scalar arithmetic."""
    ref = Reference("sgd", "additive", 0.1, momentum=0.9, dampening=0.5)
    theta = [torch.tensor([1.0], dtype=torch.float64)]
    ref.step(theta, [torch.tensor([2.0], dtype=torch.float64)])  # b = 2
    ref.step(theta, [torch.tensor([4.0], dtype=torch.float64)])  # b = 0.9 * 2 + 0.5 * 4 = 3.8
    assert theta[0].item() == pytest.approx(1.0 - 0.1 * 2.0 - 0.1 * 3.8, abs=1e-15)


def test_reference_adam_by_hand():
    """Adam at t=1: m = (1-b1) g, v = (1-b2) g^2, u = m / (|g| + eps), c = 1/(1-b1): a step of lr sign(g)."""
    ref = Reference("adam", "additive", 0.1, eps=0.0)
    theta = [torch.tensor([1.0, -1.0], dtype=torch.float64)]
    ref.step(theta, [torch.tensor([3.0, -0.5], dtype=torch.float64)])
    torch.testing.assert_close(theta[0], torch.tensor([0.9, -0.9], dtype=torch.float64), rtol=0, atol=1e-15)


def test_adagrad_lr_decay_scales_every_step_size():
    """Adagrad with lr_decay: step t divides eta and eta_out by 1 + (t-1) lr_decay (plain float math)."""
    theta0, lr, decay = 2.0, 0.1, 0.5
    p = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
    opt = gofau.MAdagrad([p], lr=lr, lr_decay=decay, eps=0.0)
    theta, s = theta0, 0.0
    for t, g in enumerate([1.0, 3.0], start=1):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        s += g * g
        theta -= lr / (1 + (t - 1) * decay) * abs(theta) * math.tanh(g / math.sqrt(s))
        assert p.item() == pytest.approx(theta, abs=1e-14)
