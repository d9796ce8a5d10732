"""Madam, Fromage, LARS and LAMB against their formulas, step by step in float64, written out per
tensor as their papers state them; and the guarantees of torch.optim (state_dict, schedulers, groups)."""
import copy
import math

import pytest
import torch

import gofau

THETAS = [[0.5, -1.2, 0.03, 2.0], [[0.3, -0.7], [1.1, -0.05]], [0.0, 0.0]]  # a zero tensor: trust ratio 1
GRADS = [  # per step, per tensor; a zero gradient in step 1 of tensor 0 (Madam's 0/0)
    [[0.0, 0.4, -2.0, 0.1], [[0.2, -0.1], [0.05, 0.3]], [0.1, -0.2]],
    [[0.3, -0.5, 1.0, -0.2], [[-0.4, 0.6], [0.2, -0.1]], [0.05, 0.02]],
    [[-0.1, 0.2, 0.5, 0.7], [[0.1, 0.1], [-0.3, 0.2]], [-0.3, 0.1]],
]


def run(make, steps=3):
    params = [torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in THETAS]
    opt = make(params)
    for grads in GRADS[:steps]:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return [p.detach() for p in params]


def by_hand(update, state_of):
    """Applies ``update(theta, g, state, t)`` to each tensor, as the formulas state it."""
    thetas = [torch.tensor(t, dtype=torch.float64) for t in THETAS]
    states = [state_of(t) for t in thetas]
    for t, grads in enumerate(GRADS, 1):
        thetas = [update(th, torch.tensor(g, dtype=torch.float64), s, t) for th, g, s in zip(thetas, grads, states)]
    return thetas


def close(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("g_bound", [10.0, 0.8])  # 0.8: the clamp of g_n engages
def test_madam_by_hand(g_bound):
    lr, p_scale = 0.3, 1.0  # the bound m = 1.19 engages: theta_0 holds a 2.0

    def update(theta, g, s, t):
        s["v"] = 0.999 * s["v"] + 0.001 * g**2
        gn = g / torch.sqrt(s["v"] / (1 - 0.999**t))
        gn = torch.nan_to_num(gn, nan=0.0).clamp(-g_bound, g_bound)
        theta = theta * torch.exp(-lr * gn * torch.sign(theta))
        return theta.clamp(-s["max"], s["max"])

    expected = by_hand(update, lambda t: dict(v=torch.zeros_like(t), max=p_scale * math.sqrt((t**2).mean())))
    make = lambda p: gofau.Madam(p, lr=lr, p_scale=p_scale, g_bound=g_bound)  # noqa: E731
    got = run(make)
    close(got, expected)
    bound = p_scale * torch.tensor(THETAS[0], dtype=torch.float64).pow(2).mean().sqrt()
    assert run(make, steps=1)[0][3] == bound  # 2 exp(-0.3) = 1.48 was clamped to m
    assert all((torch.sign(a) == torch.sign(torch.tensor(t, dtype=torch.float64))).all() for a, t in zip(got, THETAS))


def test_madam_gradient_whose_square_underflows_takes_the_bounded_step():
    # float32: 0.001 g^2 underflows to 0, so g / sqrt(v_hat) = g / 0 = +inf, clamped to g_bound
    p = torch.tensor([0.5, -2.0, 0.0], requires_grad=True)
    opt = gofau.Madam([p], lr=0.1, g_bound=10.0)
    p.grad = torch.tensor([1e-30, 0.0, 0.0])
    opt.step()
    assert opt.state[p]["exp_avg_sq"].eq(0).all()
    torch.testing.assert_close(p.detach(), torch.tensor([0.5 * math.exp(-1.0), -2.0, 0.0]), rtol=0, atol=0)


@pytest.mark.parametrize("p_bound", [None, 1.001])
def test_fromage_by_hand(p_bound):
    lr = 0.2

    def update(theta, g, s, t):
        if theta.norm() > 0 and g.norm() > 0:
            theta = theta - lr * g * theta.norm() / g.norm()
        else:
            theta = theta - lr * g
        theta = theta / math.sqrt(1 + lr**2)
        if p_bound is not None and theta.norm() > s["max"]:
            theta = theta * s["max"] / theta.norm()
        return theta

    expected = by_hand(update, lambda t: dict(max=None if p_bound is None else p_bound * t.norm()))
    close(run(lambda p: gofau.Fromage(p, lr=lr, p_bound=p_bound)), expected)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_by_hand(nesterov):
    lr, mu, wd, tc, eps = 0.5, 0.9, 0.01, 0.02, 1e-8

    def update(theta, g, s, t):
        if theta.norm() > 0 and g.norm() > 0:
            trust = tc * theta.norm() / (g.norm() + wd * theta.norm() + eps)
        else:
            trust = 1.0
        d = (g + wd * theta) * trust
        s["b"] = d.clone() if t == 1 else mu * s["b"] + d
        return theta - lr * ((d + mu * s["b"]) if nesterov else s["b"])

    expected = by_hand(update, lambda t: {})
    close(run(lambda p: gofau.LARS(p, lr=lr, momentum=mu, weight_decay=wd, trust_coeff=tc, eps=eps,
                                   nesterov=nesterov)), expected)


def test_lamb_by_hand():
    lr, (b1, b2), eps, wd = 0.05, (0.9, 0.99), 1e-6, 0.1

    def update(theta, g, s, t):
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g**2
        r = (s["m"] / (1 - b1**t)) / (torch.sqrt(s["v"] / (1 - b2**t)) + eps) + wd * theta
        trust = theta.norm() / r.norm() if theta.norm() > 0 and r.norm() > 0 else 1.0
        return theta - lr * trust * r

    expected = by_hand(update, lambda t: dict(m=torch.zeros_like(t), v=torch.zeros_like(t)))
    close(run(lambda p: gofau.LAMB(p, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)), expected)


def test_the_defaults_are_the_authors():
    p = [torch.zeros(1, requires_grad=True)]
    assert {k: v for k, v in gofau.Madam(p).defaults.items()} == dict(lr=0.01, p_scale=3.0, g_bound=10.0)
    assert gofau.Fromage(p).defaults == dict(lr=0.01, p_bound=None)
    assert gofau.LARS(p).defaults == dict(lr=1.0, momentum=0.9, weight_decay=0.0, trust_coeff=0.001, eps=1e-8,
                                          nesterov=False)
    assert gofau.LAMB(p).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)


MAKERS = {
    "Madam": lambda p: gofau.Madam(p, lr=0.1),
    "Fromage": lambda p: gofau.Fromage(p, lr=0.1, p_bound=2.0),
    "LARS": lambda p: gofau.LARS(p, lr=0.5, weight_decay=1e-3, nesterov=True),
    "LAMB": lambda p: gofau.LAMB(p, lr=0.01),
}


@pytest.mark.parametrize("name", MAKERS)
def test_a_state_dict_round_trip_continues_the_same_run(name):
    make = MAKERS[name]
    params = [torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in THETAS]
    opt = make(params)
    for grads in GRADS[:2]:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    twins = [p.detach().clone().requires_grad_() for p in params]
    twin = make(twins)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    for ps, o in ((params, opt), (twins, twin)):
        for p, g in zip(ps, GRADS[2]):
            p.grad = torch.tensor(g, dtype=torch.float64)
        o.step()
    close(twins, params)
    assert not torch.equal(params[0].detach(), torch.tensor(THETAS[0], dtype=torch.float64))


@pytest.mark.parametrize("name", MAKERS)
def test_schedulers_groups_and_mixed_dtypes(name):
    make = MAKERS[name]
    frozen = torch.tensor(THETAS[0], dtype=torch.float32, requires_grad=True)
    moving = torch.tensor(THETAS[1], dtype=torch.float64, requires_grad=True)
    opt = make([{"params": [frozen]}, {"params": [moving]}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [lambda s: 0.0, lambda s: 1.0])  # group 0 at lr 0
    for grads in GRADS:
        frozen.grad = torch.tensor(grads[0], dtype=torch.float32)
        moving.grad = torch.tensor(grads[1], dtype=torch.float64)
        opt.step()
        sched.step()
    # lr 0: no step (Fromage's shrink 1 / sqrt(1 + 0) is 1, Madam's bound 3 rms(theta_0) is not reached)
    assert torch.equal(frozen.detach(), torch.tensor(THETAS[0], dtype=torch.float32))
    assert not torch.equal(moving.detach(), torch.tensor(THETAS[1], dtype=torch.float64))


@pytest.mark.parametrize("make,msg", [
    (lambda p: gofau.Madam(p, lr=-1), "Invalid lr: -1"),
    (lambda p: gofau.Madam(p, p_scale=0), r"Invalid p_scale: 0; expected a number in \(0, inf\)"),
    (lambda p: gofau.Madam(p, g_bound=float("nan")), "Invalid g_bound: nan"),
    (lambda p: gofau.Fromage(p, p_bound=0), "Invalid p_bound: 0"),
    (lambda p: gofau.LARS(p, momentum=-0.1), "Invalid momentum: -0.1"),
    (lambda p: gofau.LARS(p, momentum=0, nesterov=True), "Invalid nesterov"),
    (lambda p: gofau.LARS(p, trust_coeff=-1), "Invalid trust_coeff"),
    (lambda p: gofau.LAMB(p, betas=(0.9, 1.0)), r"Invalid beta2: 1.0; expected a number in \[0.0, 1.0\)"),
    (lambda p: gofau.LAMB(p, weight_decay=-0.1), "Invalid weight_decay"),
    (lambda p: gofau.LAMB([{"params": p, "momentum": 0.9}]), "unknown key"),
    (lambda p: gofau.LARS(p[0]), "params must be an iterable"),
])
def test_bad_hyperparameters_are_refused_naming_them(make, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        make([torch.zeros(2, requires_grad=True)])


def test_a_bad_saved_state_is_refused_and_leaves_the_optimizer_as_it_was():
    opt = gofau.LAMB([torch.zeros(2, requires_grad=True)])
    saved = opt.state_dict()
    saved["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 1e-3


def test_the_framework_rules_are_the_relatives_updates():
    """GOFAU with the exponentiated rule and Fromage's trust rule, by hand, on one step."""
    theta, g, lr = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64), torch.tensor([0.3, 0.1, -0.4],
                                                                                       dtype=torch.float64), 0.2
    for rule, expected in (("exponentiated", theta * torch.exp(-lr * torch.sign(theta) * g)),
                           ("trust", theta - lr * theta.norm() / g.norm() * g)):
        p = theta.clone().requires_grad_()
        p.grad = g.clone()
        gofau.GOFAU([p], "sgd", rule, lr=lr).step()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-14, atol=0)
    # the trust rule's ratio is scale-free: Adam's factor c cancels
    p = theta.clone().requires_grad_()
    p.grad = g.clone()
    gofau.GOFAU([p], "adam", "trust", lr=lr).step()
    u = 0.1 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(p.detach(), theta - lr * theta.norm() / u.norm() * u, rtol=1e-14, atol=0)


def test_a_state_dict_of_another_optimizer_is_refused():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="it was saved by another optimizer"):
        gofau.Madam(p).load_state_dict(gofau.LAMB(p).state_dict())


@pytest.mark.parametrize("name", MAKERS)
def test_one_group_with_two_dtypes_steps_each_as_alone(name):
    make = MAKERS[name]
    a32 = torch.tensor(THETAS[0], dtype=torch.float32, requires_grad=True)
    b64 = torch.tensor(THETAS[1], dtype=torch.float64, requires_grad=True)
    mixed = make([a32, b64])
    alone = [torch.tensor(THETAS[0], dtype=torch.float32, requires_grad=True),
             torch.tensor(THETAS[1], dtype=torch.float64, requires_grad=True)]
    solo = [make([alone[0]]), make([alone[1]])]
    for grads in GRADS:
        for p, q, g in zip((a32, b64), alone, grads[:2]):
            p.grad = torch.tensor(g, dtype=p.dtype)
            q.grad = torch.tensor(g, dtype=q.dtype)
        mixed.step()
        for o in solo:
            o.step()
    assert torch.equal(a32.detach(), alone[0].detach()) and torch.equal(b64.detach(), alone[1].detach())
