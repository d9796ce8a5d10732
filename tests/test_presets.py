"""The public presets: additive ones equal torch.optim, checkpoints resume bit-identically, hybrids converge."""
import inspect
import io

import pytest
import torch

import gofau
from optim_cases import PRESETS, batches, make_model, preset_kwargs, train

TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.02)),
    ("Adam", dict(lr=0.02, betas=(0.5, 0.9), eps=1e-4, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.3, initial_accumulator_value=0.5, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1, eps=1e-3, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, alpha=0.9)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, eps=1e-3, maximize=True)),
]


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize("name,hp", TORCH_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(TORCH_CASES)])
def test_additive_presets_equal_torch_optim(name, hp, foreach):
    data = batches(10)
    ours, theirs = make_model(), make_model()
    losses = train(ours, getattr(gofau, name)(ours.parameters(), foreach=foreach, **hp), data)
    expected = train(theirs, getattr(torch.optim, name)(theirs.parameters(), foreach=foreach, **hp), data)
    assert losses == pytest.approx(expected, rel=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert not torch.equal(ours.fc1.weight, make_model().fc1.weight)


@pytest.mark.parametrize("name", PRESETS)
def test_state_dict_round_trip_resumes_bit_identically(name):
    """Train 4 steps, checkpoint through torch.save, resume in a fresh model + optimizer: same later steps."""
    cls = PRESETS[name][0]
    data = batches(8)
    model = make_model()
    opt = cls(model.parameters(), **preset_kwargs(name))
    train(model, opt, data[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    later = train(model, opt, data[4:], start=4)

    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = make_model(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = cls(resumed.parameters(), lr=0.5)  # the checkpoint brings back the hyperparameters too
    opt2.load_state_dict(checkpoint["opt"])
    assert train(resumed, opt2, data[4:], start=4) == later
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", ["HSGD", "HAdam"])
def test_checkpoint_mid_schedule_resumes_bit_identically(name):
    """The hybrid's eta_out follows lr relative to the lr it was built with: that survives the checkpoint."""
    cls = PRESETS[name][0]
    data = batches(8)

    def build(model, lr):
        opt = cls(model.parameters(), **preset_kwargs(name, lr=lr))
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    def train_scheduled(model, opt, sched, part, start):
        for i, xy in enumerate(part, start):
            train(model, opt, [xy], start=i)
            sched.step()

    model = make_model()
    opt, sched = build(model, 0.02)
    train_scheduled(model, opt, sched, data[:4], 0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    train_scheduled(model, opt, sched, data[4:], 4)

    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = make_model(seed=5)
    resumed.load_state_dict(checkpoint["model"])
    opt2, sched2 = build(resumed, 0.3)
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    train_scheduled(resumed, opt2, sched2, data[4:], 4)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), resumed.parameters()))


def test_state_dict_holds_plain_tensors_keyed_by_index():
    model = make_model()
    opt = gofau.HAdam(model.parameters(), lr=0.01)
    train(model, opt, batches(2))
    sd = opt.state_dict()
    n = len(sd["param_groups"][0]["params"])
    assert set(sd["state"]) <= set(range(n)) and len(sd["state"]) == n - 2  # the frozen layer has no state
    assert all(isinstance(v, torch.Tensor) for s in sd["state"].values() for v in s.values())


@pytest.mark.parametrize("name", PRESETS)
def test_presets_are_optimizers_with_their_direction_and_rule(name):
    cls, direction, rule = PRESETS[name]
    opt = cls([torch.nn.Parameter(torch.ones(2))])
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, gofau.GOFAU)
    assert (opt.defaults["direction"], opt.defaults["rule"]) == (direction, rule)
    assert type(opt).__name__ == name and repr(opt).startswith(name)


def test_hmsgd_is_hsgd():
    assert gofau.HMSGD is gofau.HSGD


@pytest.mark.parametrize("name", PRESETS)
def test_preset_defaults_follow_torch_optim(name):
    """Each preset's signature carries its base's torch.optim defaults (lr aside: M*/H* rules set their own)."""
    cls, direction, rule = PRESETS[name]
    base = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad,
            "rmsprop": torch.optim.RMSprop}[direction]
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(base).parameters
    shared = set(ours) & set(theirs) - {"params", "lr", "foreach", "fused"}
    assert shared, "no shared hyperparameters found"
    assert {k: ours[k].default for k in shared} == {k: theirs[k].default for k in shared}
    if rule == "additive":
        assert ours["lr"].default == theirs["lr"].default


# Convergence from a fixed start with positive coordinates.
def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


CENTRE = torch.tensor([1.0, 2.0], dtype=torch.float64)


def quadratic(x):
    return ((x - CENTRE) ** 2 * torch.tensor([1.0, 5.0], dtype=torch.float64)).sum()


def minimise(f, opt_cls, steps, start, **hp):
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([x], **hp)
    for _ in range(steps):
        opt.zero_grad()
        f(x).backward()
        opt.step()
    return x.detach()


@pytest.mark.parametrize("opt_cls,hp,steps,f,minimum,tol", [
    (gofau.HSGD, dict(lr=1e-3, momentum=0.9), 2500, rosenbrock, [1.0, 1.0], 1e-3),
    (gofau.HAdam, dict(lr=0.02), 4000, rosenbrock, [1.0, 1.0], 1e-3),
    (gofau.HSGD, dict(lr=0.05), 300, quadratic, CENTRE.tolist(), 1e-6),
    (gofau.HAdam, dict(lr=0.05), 300, quadratic, CENTRE.tolist(), 1e-4),
    (gofau.MSGD, dict(lr=0.05), 300, quadratic, CENTRE.tolist(), 1e-6),
    (gofau.MSGD, dict(lr=0.1, momentum=0.5), 300, quadratic, CENTRE.tolist(), 1e-6),
    (gofau.MAdam, dict(lr=0.02), 300, quadratic, CENTRE.tolist(), 1e-4),
], ids=["HSGD-rosenbrock", "HAdam-rosenbrock", "HSGD-quadratic", "HAdam-quadratic", "MSGD-quadratic",
        "MSGD-momentum-quadratic", "MAdam-quadratic"])
def test_convergence(opt_cls, hp, steps, f, minimum, tol):
    start = [0.3, 0.6] if f is rosenbrock else [3.0, 0.5]
    x = minimise(f, opt_cls, steps, start, **hp)
    torch.testing.assert_close(x, torch.tensor(minimum, dtype=torch.float64), rtol=0, atol=tol)


def test_multiplicative_cannot_cross_zero_to_a_negative_minimum():
    """The multiplicative rule keeps signs: aiming at -1 from +1 it can only shrink towards 0."""
    x = minimise(lambda x: ((x + 1) ** 2).sum(), gofau.MSGD, 300, [1.0], lr=0.1)
    assert 0 < x.item() < 1e-3
