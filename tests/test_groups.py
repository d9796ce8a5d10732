"""Exactly-zero tensors under multiplicative rules: the warning, and gofau.param_groups to move them elsewhere."""
import warnings

import pytest
import torch

import gofau


class Net(torch.nn.Module):
    """Linear (zero bias) -> BatchNorm (zero shift) -> LayerNorm -> Linear, and a frozen Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(3, 4)
        torch.nn.init.zeros_(self.fc1.bias)
        self.bn = torch.nn.BatchNorm1d(4)
        self.ln = torch.nn.LayerNorm(4)
        self.fc2 = torch.nn.Linear(4, 1)
        self.frozen = torch.nn.Linear(1, 1)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.fc2(self.ln(self.bn(self.fc1(x)))))


def _train(model, opt, steps=2):
    torch.manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(8, 3)
        (model(x) - x[:, :1]).pow(2).mean().backward()
        opt.step()


def _ids(tensors):
    return [id(t) for t in tensors]


def test_zeros_selects_the_tensors_that_are_exactly_zero():
    net = Net()
    groups = gofau.param_groups(net, select="zeros", rule="additive", lr=0.01)
    zeros = [net.fc1.bias, net.bn.bias, net.ln.bias]
    assert len(groups) == 2
    assert _ids(groups[1]["params"]) == _ids(zeros)
    assert {k: v for k, v in groups[1].items() if k != "params"} == {"rule": "additive", "lr": 0.01}
    assert groups[0].keys() == {"params"}
    assert _ids(groups[0]["params"]) == _ids([net.fc1.weight, net.bn.weight, net.ln.weight, net.fc2.weight,
                                             net.fc2.bias])


def test_bias_and_norm_selects_every_bias_and_norm_parameter():
    net = Net()
    groups = gofau.param_groups(net, select="bias_and_norm", rule="hybrid", gamma=0.2)
    assert _ids(groups[0]["params"]) == _ids([net.fc1.weight, net.fc2.weight])
    assert _ids(groups[1]["params"]) == _ids([net.fc1.bias, net.bn.weight, net.bn.bias, net.ln.weight, net.ln.bias,
                                             net.fc2.bias])
    assert groups[1]["rule"] == "hybrid" and groups[1]["gamma"] == 0.2


def test_empty_groups_are_left_out():
    lin = torch.nn.Linear(2, 2)
    torch.nn.init.ones_(lin.bias)
    assert [len(g["params"]) for g in gofau.param_groups(lin, select="zeros", rule="additive")] == [2]
    assert gofau.param_groups(lin, select="zeros", rule="additive")[0].keys() == {"params"}
    only_bias = [torch.nn.Parameter(torch.zeros(3))]
    assert gofau.param_groups(only_bias, select="bias_and_norm", lr=0.5) == [{"params": only_bias, "lr": 0.5}]


@pytest.mark.parametrize("select", ["bias", "Zeros", None])
def test_bad_select_is_refused(select):
    with pytest.raises(ValueError, match="select") as info:
        gofau.param_groups(Net(), select=select)
    assert "zeros" in str(info.value) and "bias_and_norm" in str(info.value)


def test_multiplicative_rule_on_a_zero_bias_warns_once():
    net = Net()
    opt = gofau.MSGD(net.parameters(), lr=0.01)
    with pytest.warns(UserWarning, match=r"gofau\.param_groups") as record:
        _train(net, opt, steps=3)
    assert len([w for w in record if "param_groups" in str(w.message)]) == 1
    assert not net.fc1.bias.any()  # and indeed it never moved


def test_zero_warning_points_at_the_callers_step():
    net = Net()
    opt = gofau.MAdam(net.parameters(), lr=0.01)
    net(torch.randn(4, 3)).sum().backward()
    with pytest.warns(UserWarning, match=r"gofau\.param_groups") as record:
        opt.step()
    assert record[0].filename == __file__


@pytest.mark.parametrize("make", [lambda p: gofau.SGD(p, lr=0.01), lambda p: gofau.HAdam(p, lr=0.01),
                                  lambda p: gofau.GOFAU(p, rule="additive", direction="rmsprop")],
                         ids=["SGD", "HAdam", "GOFAU-additive"])
def test_rules_that_can_move_zeros_do_not_warn(make):
    net = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(net, make(net.parameters()))
    assert net.fc1.bias.any()


@pytest.mark.parametrize("make", [lambda p: gofau.HSGD(p, gamma=1.0), lambda p: gofau.GOFAU(p, rule="power")],
                         ids=["hybrid-gamma-1", "power"])
def test_other_rules_that_cannot_move_zeros_warn(make):
    net = Net()
    with pytest.warns(UserWarning, match=r"gofau\.param_groups"):
        _train(net, make(net.parameters()))


@pytest.mark.parametrize("select", ["zeros", "bias_and_norm"])
def test_with_param_groups_the_zero_bias_moves_without_warning(select):
    net = Net()
    weight = net.fc1.weight.detach().clone()
    opt = gofau.MSGD(gofau.param_groups(net, select=select, rule="additive", lr=0.05), lr=0.01, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _train(net, opt)
    assert net.fc1.bias.any() and net.bn.bias.any() and net.ln.bias.any()
    assert not torch.equal(net.fc1.weight, weight)
    assert opt.param_groups[0]["rule"] == "multiplicative" and opt.param_groups[1]["rule"] == "additive"
