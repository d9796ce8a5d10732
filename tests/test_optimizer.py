"""GOFAU as a torch.optim.Optimizer: code paths agree, groups, schedulers, errors, closures, copies, hooks."""
import copy
import pickle
import re

import pytest
import torch

import gofau
from optim_cases import PRESETS, Reference, batches, clone_params, make_model, preset_kwargs, train


def run(name_or_cls, steps=8, dtype=torch.float64, **hp):
    cls = PRESETS[name_or_cls][0] if isinstance(name_or_cls, str) else name_or_cls
    model = make_model(dtype=dtype)
    opt = cls(model.parameters(), **hp)
    losses = train(model, opt, batches(steps, dtype=dtype))
    return model, opt, losses


# --- foreach, per-tensor and fused paths -------------------------------------------------------------------------

@pytest.mark.parametrize("foreach", [True, None])
@pytest.mark.parametrize("name", PRESETS)
def test_foreach_matches_per_tensor(name, foreach):
    """Over 8 steps with a frozen layer and a parameter whose grad is None every third step."""
    hp = preset_kwargs(name, maximize=foreach is None)
    loop_model, _, _ = run(name, foreach=False, **hp)
    model, opt, _ = run(name, foreach=foreach, **hp)
    for p, q in zip(model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
    # the skipped steps really were skipped: 8 steps, 3 of them without a grad for `sometimes`
    assert opt.state[model.sometimes]["step"].item() == 5 and opt.state[model.fc1.weight]["step"].item() == 8
    assert model.frozen.weight not in opt.state
    assert torch.equal(model.frozen.weight, make_model().frozen.weight)


@pytest.mark.parametrize("foreach", [True, False])
def test_power_rule_paths_and_mixed_dtypes_agree(foreach):
    """A group mixing float32 and float64 tensors is bucketed by dtype; each tensor follows the reference."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(3, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g).float()]
    params = [s.clone().requires_grad_() for s in start]
    opt = gofau.GOFAU(params, direction="adam", rule="power", lr=0.05, lr_in=0.5, foreach=foreach)
    ref, expected = Reference("adam", "power", 0.05, lr_in=0.5), [s.clone() for s in start]
    for _ in range(3):
        grads = [torch.randn(s.shape, generator=g, dtype=s.dtype) for s in start]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt.step()
        ref.step(expected, grads)
    for p, e in zip(params, expected):
        assert p.dtype == e.dtype
        torch.testing.assert_close(p.detach(), e)


@pytest.mark.parametrize("name,hp", [("HAdam", dict(lr=0.01, lr_out=0.02, amsgrad=True, weight_decay=0.01)),
                                     ("MSGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True))])
def test_fused_matches_foreach(name, hp):
    """fused=True compiles the step (slow: about 10 s per case here) and must give the same numbers,
    also while a scheduler changes lr every step (lr enters the compiled step as a value, not a constant)."""
    results = []
    for fused in (True, False):
        model = make_model()
        opt = PRESETS[name][0](model.parameters(), fused=fused, **hp)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k))
        losses = []
        for i, xy in enumerate(batches(5)):
            losses += train(model, opt, [xy], start=i)  # `sometimes` misses steps: per-tensor step counts
            sched.step()
        assert opt.state[model.sometimes]["step"].item() == 3  # steps 1 and 4 had no grad
        results.append((model, losses))
    (fused_model, fused_losses), (model, losses) = results
    assert fused_losses == pytest.approx(losses, rel=1e-10)
    for p, q in zip(fused_model.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


# --- parameter groups ----------------------------------------------------------------------------------------------

def _step_groups(opt, params, grads):
    for p, gr in zip(params, grads):
        p.grad = gr.clone()
    opt.step()


def test_groups_with_different_lr_and_rule_follow_their_own_formula():
    g = torch.Generator().manual_seed(3)
    start = [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(3)]
    a, b, c = [s.clone().requires_grad_() for s in start]
    opt = gofau.MSGD([{"params": [a]}, {"params": [b], "lr": 0.2}, {"params": [c], "rule": "additive", "lr": 0.3}],
                     lr=0.05, momentum=0.9)
    refs = [Reference("sgd", "multiplicative", 0.05, momentum=0.9), Reference("sgd", "multiplicative", 0.2, momentum=0.9),
            Reference("sgd", "additive", 0.3, momentum=0.9)]
    expected = [s.clone() for s in start]
    for _ in range(3):
        grads = [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(3)]
        _step_groups(opt, [a, b, c], grads)
        for ref, e, gr in zip(refs, expected, grads):
            ref.step([e], [gr])
    for p, e in zip([a, b, c], expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", PRESETS)
def test_group_with_tiny_lr_does_not_move(name):
    model = make_model()
    frozen_by_lr = [model.fc2.weight, model.fc2.bias]
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in frozen_by_lr)]
    hp = preset_kwargs(name)
    hp.pop("lr_out", None)  # lr_out would give the hybrid's multiplicative term its own, non-tiny step size
    opt = PRESETS[name][0]([{"params": rest}, {"params": frozen_by_lr, "lr": 1e-28}], **hp)
    before = clone_params(model)
    train(model, opt, batches(4))
    moved = [not torch.equal(p, q) for p, q in zip(model.parameters(), before)]
    names = [n for n, _ in model.named_parameters()]
    assert dict(zip(names, moved)) == {"fc1.weight": True, "fc1.bias": True, "frozen.weight": False,
                                       "frozen.bias": False, "fc2.weight": False, "fc2.bias": False,
                                       "sometimes": True}


def test_add_param_group_later_is_validated_and_filled_from_defaults():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = gofau.HAdam([a], lr=0.01, lr_out=0.02)
    with pytest.raises(ValueError, match="gamma"):
        opt.add_param_group({"params": [b], "gamma": 2.0})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [b], "lr": 0.1})
    assert opt.param_groups[1]["lr_out"] == 0.02 and opt.param_groups[1]["betas"] == (0.9, 0.999)


def test_per_group_direction_works_or_is_rejected_clearly():
    """A group may name another base: then it either follows that base or is refused with a message naming it."""
    a, b = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([0.5, 3.0]))
    try:
        opt = gofau.GOFAU([{"params": [a]}, {"params": [b], "direction": "adam"}], direction="sgd",
                          rule="multiplicative", lr=0.1)
    except (TypeError, ValueError) as e:
        assert "direction" in str(e)
        return
    expected = [b.detach().clone()]
    grad = torch.tensor([0.3, -0.7])
    a.grad, b.grad = grad.clone(), grad.clone()
    opt.step()
    Reference("adam", "multiplicative", 0.1).step(expected, [grad])
    torch.testing.assert_close(b.detach(), expected[0])


@pytest.mark.parametrize("name", PRESETS)
def test_step_without_grads_changes_nothing(name):
    model = make_model()
    opt = PRESETS[name][0](model.parameters(), **preset_kwargs(name))
    opt.step()  # no gradient yet: no state, no move
    assert not opt.state and all(torch.equal(p, q) for p, q in zip(model.parameters(), make_model().parameters()))
    train(model, opt, batches(2))
    before, state = clone_params(model), copy.deepcopy(opt.state_dict()["state"])
    opt.zero_grad()
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    after = opt.state_dict()["state"]
    assert after.keys() == state.keys()
    assert all(torch.equal(after[i][k], v) for i, s in state.items() for k, v in s.items())


# --- LR schedulers ------------------------------------------------------------------------------------------------

SCHEDULERS = {
    "StepLR": (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), lambda k: 0.5**k),
    "LambdaLR": (lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + 2 * k)), lambda k: 1 / (1 + 2 * k)),
}


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("cls,direction,rule,hp", [
    (gofau.HSGD, "sgd", "hybrid", dict(lr=0.1, lr_out=0.04, gamma=0.3, momentum=0.5)),
    (gofau.HAdam, "adam", "hybrid", dict(lr=0.01, lr_out=0.05)),
    (gofau.HAdam, "adam", "hybrid", dict(lr=0.02)),
    (gofau.MSGD, "sgd", "multiplicative", dict(lr=0.1, momentum=0.9)),
    (gofau.MAdagrad, "adagrad", "multiplicative", dict(lr=0.1, lr_decay=0.2)),
], ids=["HSGD", "HAdam-lr_out", "HAdam", "MSGD", "MAdagrad"])
def test_scheduler_scales_every_step_size(cls, direction, rule, hp, scheduler):
    """Step k uses eta = lr f(k) and eta_out = lr_out f(k): the reference is given both, scaled."""
    make_scheduler, f = SCHEDULERS[scheduler]
    g = torch.Generator().manual_seed(7)
    start = torch.randn(5, generator=g, dtype=torch.float64)
    p = start.clone().requires_grad_()
    opt = cls([p], **hp)
    sched = make_scheduler(opt)
    ref = Reference(direction, rule, **hp)
    expected = [start.clone()]
    for k in range(4):
        grad = torch.randn(5, generator=g, dtype=torch.float64)
        p.grad = grad.clone()
        opt.step()
        ref.lr = hp["lr"] * f(k)
        if hp.get("lr_out") is not None:
            ref.hp["lr_out"] = hp["lr_out"] * f(k)
        ref.step(expected, [grad])
        torch.testing.assert_close(p.detach(), expected[0], rtol=1e-13, atol=1e-15)
        sched.step()


# --- errors -------------------------------------------------------------------------------------------------------

def _p():
    return [torch.nn.Parameter(torch.ones(2))]


BAD_VALUES = [
    (gofau.MSGD, dict(lr=-0.1), "lr", r"\[0"),
    (gofau.HAdam, dict(lr_in=-1.0), "lr_in", r"\[0"),
    (gofau.HAdam, dict(lr_out=-1.0), "lr_out", r"\[0"),
    (gofau.HSGD, dict(weight_decay=-0.1), "weight_decay", r"\[0"),
    (gofau.MAdam, dict(eps=-1e-8), "eps", r"\[0"),
    (gofau.MAdagrad, dict(eps=-1.0), "eps", r"\[0"),
    (gofau.MRMSprop, dict(eps=-1.0), "eps", r"\[0"),
    (gofau.MSGD, dict(momentum=-0.9), "momentum", r"\[0"),
    (gofau.HRMSprop, dict(momentum=-0.9), "momentum", r"\[0"),
    (gofau.MSGD, dict(dampening=-0.1), "dampening", r"\[0"),
    (gofau.MAdagrad, dict(lr_decay=-0.1), "lr_decay", r"\[0"),
    (gofau.MAdagrad, dict(initial_accumulator_value=-0.1), "initial_accumulator_value", r"\[0"),
    (gofau.MRMSprop, dict(alpha=-0.1), "alpha", r"\[0"),
    (gofau.HSGD, dict(gamma=1.5), "gamma", r"\[0.*1"),
    (gofau.HSGD, dict(gamma=-0.1), "gamma", r"\[0.*1"),
    (gofau.HAdam, dict(betas=(1.0, 0.999)), "beta", r"\[0.*, 1(\.0)?\)"),
    (gofau.HAdam, dict(betas=(0.9, 1.0)), "beta", r"\[0.*, 1(\.0)?\)"),
    (gofau.HAdam, dict(betas=(-0.1, 0.9)), "beta", r"\[0.*, 1(\.0)?\)"),
    (gofau.HAdam, dict(betas=0.9), "betas", r"\[0.*, 1(\.0)?\)"),
    (gofau.MSGD, dict(nesterov=True), "nesterov", "momentum"),
    (gofau.MSGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov", "dampening"),
]


@pytest.mark.parametrize("cls,hp,name,accepted", BAD_VALUES,
                         ids=[f"{c.__name__}-{'-'.join(hp)}-{i}" for i, (c, hp, _, _) in enumerate(BAD_VALUES)])
def test_bad_hyperparameter_names_itself_and_its_range(cls, hp, name, accepted):
    with pytest.raises(ValueError, match=name) as info:
        cls(_p(), **hp)
    assert re.search(accepted, str(info.value)), str(info.value)


def test_bad_value_in_a_group_dict_is_caught():
    with pytest.raises(ValueError, match="lr"):
        gofau.MSGD([{"params": _p()}, {"params": _p(), "lr": -1.0}], lr=0.1)


@pytest.mark.parametrize("make,name", [(lambda: gofau.MSGD(_p(), lr_out=0.1), "lr_out"),
                                       (lambda: gofau.SGD(_p(), lr_in=2.0), "lr_in"),
                                       (lambda: gofau.HAdam(_p(), momentum=0.9), "momentum"),
                                       (lambda: gofau.GOFAU(_p(), direction="sgd", betas=(0.9, 0.99)), "betas"),
                                       (lambda: gofau.GOFAU(_p(), direction="adam", momentun=0.9), "momentun")],
                         ids=["MSGD-lr_out", "SGD-lr_in", "HAdam-momentum", "GOFAU-sgd-betas", "GOFAU-typo"])
def test_unknown_keyword_is_a_type_error_naming_it(make, name):
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        make()


@pytest.mark.parametrize("params", [5, None, torch.ones(2, requires_grad=True)], ids=["int", "None", "tensor"])
def test_params_must_be_an_iterable_of_tensors(params):
    with pytest.raises(TypeError, match="params"):
        gofau.HAdam(params)


def test_parameter_in_two_groups():
    p = _p()
    with pytest.raises(ValueError, match="more than one parameter group"):
        gofau.MSGD([{"params": p}, {"params": p}])


@pytest.mark.parametrize("kwargs,name", [(dict(rule="exponential"), "rule"), (dict(direction="lion"), "direction")])
def test_unknown_rule_or_direction_lists_the_accepted_names(kwargs, name):
    with pytest.raises(ValueError, match=name) as info:
        gofau.GOFAU(_p(), **kwargs)
    expected = ("additive", "multiplicative", "hybrid", "power", "proportional") if name == "rule" else ("sgd", "adam", "adagrad", "rmsprop")
    assert all(word in str(info.value) for word in expected)


def test_unknown_rule_in_a_group():
    with pytest.raises(ValueError, match="rule"):
        gofau.MSGD([{"params": _p(), "rule": "Additive"}])


def test_sparse_gradients_are_refused():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = gofau.MAdam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(emb.weight, before)


def test_refused_sparse_step_leaves_the_optimizer_untouched():
    lin, emb = torch.nn.Linear(2, 2), torch.nn.Embedding(3, 2, sparse=True)
    opt = gofau.MAdam(list(lin.parameters()) + list(emb.parameters()))
    lin(emb(torch.tensor([0]))).sum().backward()
    before = [p.detach().clone() for p in lin.parameters()]
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert all(s["step"].item() == 0 for s in opt.state.values())
    assert all(torch.equal(p, q) for p, q in zip(lin.parameters(), before))


def test_complex_parameters_are_refused():
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    opt = gofau.HSGD([p])
    p.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex"):
        opt.step()


def test_fused_with_foreach_is_refused():
    with pytest.raises(ValueError, match="foreach"):
        gofau.HAdam(_p(), fused=True, foreach=True)


# --- torch.optim behaviour -----------------------------------------------------------------------------------------

def test_closure_is_evaluated_and_its_loss_returned():
    model, data = make_model(), batches(3)
    twin = copy.deepcopy(model)
    opt, opt2 = gofau.HAdam(model.parameters(), lr=0.01), gofau.HAdam(twin.parameters(), lr=0.01)
    for x, y in data:
        def closure():
            opt.zero_grad()
            loss = (model(x) - y).pow(2).mean()
            loss.backward()
            return loss

        loss = opt.step(closure)
        opt2.zero_grad()
        expected = (twin(x) - y).pow(2).mean()
        expected.backward()
        opt2.step()
        assert torch.equal(loss, expected)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    assert opt.step() is None


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", ["MSGD", "HAdam", "HRMSprop", "MAdagrad"])
def test_copies_continue_identically(name, how):
    cls = PRESETS[name][0]
    data = batches(6)
    model = make_model()
    opt = cls(model.parameters(), **preset_kwargs(name))
    train(model, opt, data[:3])
    model2, opt2 = copy.deepcopy((model, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((model, opt)))
    assert type(opt2) is cls and any(p is model2.fc1.weight for p in opt2.param_groups[0]["params"])
    assert train(model, opt, data[3:], start=3) == train(model2, opt2, data[3:], start=3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters()))


def test_step_hooks_are_called():
    model = make_model()
    opt = gofau.HSGD(model.parameters(), lr=0.01)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o)))
    handle = opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", o)))
    train(model, opt, batches(1))
    assert calls == [("pre", opt), ("post", opt)]
    handle.remove()
    train(model, opt, batches(1))
    assert calls == [("pre", opt), ("post", opt), ("pre", opt)]


def test_repr_names_the_class_and_hyperparameters():
    text = repr(gofau.HSGD(make_model().parameters(), lr=0.03, momentum=0.9, gamma=0.25))
    assert text.startswith("HSGD") and all(s in text for s in ("lr: 0.03", "momentum: 0.9", "gamma: 0.25",
                                                                "rule: hybrid", "direction: sgd"))


def test_zero_grad_clears_grads():
    model = make_model()
    opt = gofau.MAdam(model.parameters())
    (model(batches(1)[0][0]).sum()).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- the direction hook

def _record_directions(opt):
    seen = []

    def hook(o, group, params, u):
        assert o is opt and len(params) == len(u)
        seen.append([(p, ui.detach().clone(), group["lr_in"]) for p, ui in zip(params, u)])
    return seen, opt.register_direction_hook(hook)


@pytest.mark.parametrize("name, c", [("MSGD", lambda t: 1.0), ("MAdam", lambda t: 1 / (1 - 0.9**t))])
def test_direction_hook_sees_the_u_that_the_rule_applies(name, c):
    model = make_model()
    opt = PRESETS[name][0](model.parameters(), lr=0.05, lr_in=2.0, **({"momentum": 0.9} if name == "MSGD" else {}))
    seen, _ = _record_directions(opt)
    for t, batch in enumerate(batches(3), start=1):
        before = {p: p.detach().clone() for p in model.parameters()}
        train(model, opt, [batch], skip_every=2, start=t - 1)  # step 2 leaves one tensor without a gradient
        assert len(seen) == t  # one call: one group, one device and dtype
        for p, u, lr_in in seen[-1]:
            old = before[p]
            expected = old - c(opt.state[p]["step"].item()) * 0.05 * old.abs() * torch.tanh(lr_in * u)  # by hand
            torch.testing.assert_close(p.detach(), expected)


def test_direction_hook_changes_nothing_and_can_be_removed():
    data = batches(4)
    model, twin = make_model(), make_model()
    opt, ref = gofau.HAdam(model.parameters()), gofau.HAdam(twin.parameters())
    seen, handle = _record_directions(opt)
    train(model, opt, data[:2])
    train(twin, ref, data[:2])
    assert len(seen) == 2 and all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    handle.remove()
    train(model, opt, data[2:], start=2)
    assert len(seen) == 2


def test_direction_hook_on_a_fused_group_steps_eagerly_with_the_same_numbers():
    data = batches(3)
    model, twin = make_model(), make_model()
    opt = gofau.HSGD(model.parameters(), lr=0.05, momentum=0.9, fused=True)
    ref = gofau.HSGD(twin.parameters(), lr=0.05, momentum=0.9)
    seen, _ = _record_directions(opt)
    train(model, opt, data)
    train(twin, ref, data)
    assert len(seen) == 3
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)


def test_direction_hook_must_be_callable_and_is_not_copied():
    opt = gofau.MSGD(make_model().parameters())
    with pytest.raises(TypeError, match="hook must be callable"):
        opt.register_direction_hook("print")
    _record_directions(opt)
    assert len(copy.deepcopy(opt)._direction_hooks) == 0


# ---------------------------------------------------------------- state dicts from elsewhere

def _stepped(make, steps=2):
    model = make_model()
    opt = make(model.parameters())
    train(model, opt, batches(steps))
    return model, opt


def _unchanged(opt, action, match):
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        action()
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert all(torch.equal(after["state"][k][n], v) for k, s in before["state"].items() for n, v in s.items())


def test_a_state_dict_of_another_direction_or_rule_is_refused_and_changes_nothing():
    _, hadam = _stepped(gofau.HAdam)
    _, msgd = _stepped(lambda p: gofau.MSGD(p, momentum=0.9))
    _unchanged(hadam, lambda: hadam.load_state_dict(msgd.state_dict()), "direction 'sgd', this optimizer 'adam'")
    _, madam = _stepped(gofau.MAdam)
    _unchanged(hadam, lambda: hadam.load_state_dict(madam.state_dict()), "rule 'multiplicative'.*'hybrid'")


def test_torch_optim_state_dict_is_refused_with_a_clear_message():
    model, hadam = _stepped(gofau.HAdam)
    adam = torch.optim.Adam(model.parameters())
    train(model, adam, batches(1))
    _unchanged(hadam, lambda: hadam.load_state_dict(adam.state_dict()), "not saved by a GOFAU optimizer")


def test_out_of_range_hyperparameter_in_a_state_dict_is_refused():
    _, opt = _stepped(gofau.HSGD)
    bad = copy.deepcopy(opt.state_dict())
    bad["param_groups"][0]["gamma"] = 7
    _unchanged(opt, lambda: opt.load_state_dict(bad), r"Invalid gamma: 7; expected a number in \[0.0, 1.0\]")


def test_state_of_the_wrong_kind_or_shape_is_refused():
    _, opt = _stepped(gofau.HAdam)
    bad = copy.deepcopy(opt.state_dict())
    del bad["state"][0]["exp_avg_sq"]
    _unchanged(opt, lambda: opt.load_state_dict(bad), "state of parameter 0 lacks exp_avg_sq")
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0]["exp_avg"] = torch.zeros(3)
    _unchanged(opt, lambda: opt.load_state_dict(bad), "state 'exp_avg' of parameter 0 has shape")


def test_an_older_state_dict_without_lr_ref_gets_its_lr_and_continues_exactly():
    data = batches(5)
    model, opt = _stepped(lambda p: gofau.HSGD(p, lr=0.02, lr_out=0.1, momentum=0.9))
    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        del g["lr_ref"]
    twin = copy.deepcopy(model)
    fresh = gofau.HSGD(twin.parameters(), lr=0.5, lr_out=0.1, momentum=0.9)
    fresh.load_state_dict(old)
    assert fresh.param_groups[0]["lr_ref"] == 0.02
    assert train(model, opt, data[2:], start=2) == train(twin, fresh, data[2:], start=2)


def test_infinite_hyperparameters_and_unknown_group_keys_are_refused():
    params = make_model().parameters()
    with pytest.raises(ValueError, match=r"Invalid lr: inf; expected a number in \[0.0, inf\)"):
        gofau.MSGD(params, lr=float("inf"))
    with pytest.raises(TypeError, match="param group has unknown key.* lrr"):
        gofau.MSGD([{"params": list(make_model().parameters()), "lrr": 0.1}])
