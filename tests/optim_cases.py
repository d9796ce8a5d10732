"""Shared cases for the optimizer tests: a reference GOFAU written from the method as the authors released it, the presets, models.

The reference works tensor by tensor with plain elementwise torch ops and its own defaults table, so it
shares no code with gofau: agreement with it checks gofau against the formulas, not against itself.
"""
import math

import torch

import gofau

# torch.optim's defaults for each base, written out here rather than read from gofau.
BASE_DEFAULTS = {
    "sgd": dict(momentum=0.0, dampening=0.0, nesterov=False),
    "adam": dict(betas=(0.9, 0.999), eps=1e-8, amsgrad=False),
    "adagrad": dict(lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0),
    "rmsprop": dict(alpha=0.99, eps=1e-8, momentum=0.0, centered=False),
}
COMMON_DEFAULTS = dict(lr_in=1.0, lr_out=None, gamma=0.5, weight_decay=0.0, maximize=False)

# name -> (class, direction, rule)
PRESETS = {
    "MSGD": (gofau.MSGD, "sgd", "multiplicative"),
    "HSGD": (gofau.HSGD, "sgd", "hybrid"),
    "MAdam": (gofau.MAdam, "adam", "multiplicative"),
    "HAdam": (gofau.HAdam, "adam", "hybrid"),
    "MAdagrad": (gofau.MAdagrad, "adagrad", "multiplicative"),
    "HAdagrad": (gofau.HAdagrad, "adagrad", "hybrid"),
    "MRMSprop": (gofau.MRMSprop, "rmsprop", "multiplicative"),
    "HRMSprop": (gofau.HRMSprop, "rmsprop", "hybrid"),
    "SGD": (gofau.SGD, "sgd", "additive"),
    "Adam": (gofau.Adam, "adam", "additive"),
    "Adagrad": (gofau.Adagrad, "adagrad", "additive"),
    "RMSprop": (gofau.RMSprop, "rmsprop", "additive"),
}

# Hyperparameters that give every base some state to carry (momentum buffers, moments, sums).
STATEFUL = {
    "sgd": dict(momentum=0.9, dampening=0.1, weight_decay=0.01),
    "adam": dict(betas=(0.8, 0.95), amsgrad=True, weight_decay=0.01),
    "adagrad": dict(lr_decay=0.1, initial_accumulator_value=0.2),
    "rmsprop": dict(momentum=0.5, centered=True, alpha=0.9),
}
RULE_ARGS = {"additive": {}, "multiplicative": dict(lr_in=0.7), "power": dict(lr_in=0.7), "proportional": dict(lr_in=0.7),
             "hybrid": dict(lr_in=0.7, lr_out=0.03, gamma=0.4)}


def preset_kwargs(name, **extra):
    """lr, the rule's own arguments and STATEFUL settings for the preset ``name``."""
    _, direction, rule = PRESETS[name]
    return {"lr": 0.02, **RULE_ARGS[rule], **STATEFUL[direction], **extra}


class Reference:
    """GOFAU from the formulas, one tensor at a time: g -> (u, c) -> rule."""

    def __init__(self, direction, rule, lr, **hp):
        self.direction, self.rule, self.lr = direction, rule, lr
        self.hp = {**COMMON_DEFAULTS, **BASE_DEFAULTS[direction], **hp}
        self.state = {}

    def step(self, params, grads):
        """Updates the tensors ``params`` (in place) from ``grads``; a None grad skips its tensor."""
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            st = self.state.setdefault(i, {"t": 0})
            st["t"] += 1
            g = -g if self.hp["maximize"] else g
            g = g + self.hp["weight_decay"] * p
            u, c = getattr(self, "_" + self.direction)(g, st, st["t"])
            p.copy_(self.apply_rule(p, u, c))

    def apply_rule(self, theta, u, c):
        hp, lr = self.hp, self.lr
        tanh = torch.tanh(hp["lr_in"] * u)
        if self.rule == "additive":
            return theta - c * lr * u
        if self.rule == "multiplicative":
            return theta - c * lr * theta.abs() * tanh
        if self.rule == "power":
            return theta * 2.0 ** (-torch.sign(theta) * c * lr * tanh)
        if self.rule == "proportional":
            return theta - c * lr * theta.abs() * (hp["lr_in"] * u)
        eta_out = lr if hp["lr_out"] is None else hp["lr_out"]
        gamma = hp["gamma"]
        return theta - gamma * c * eta_out * theta.abs() * tanh - (1 - gamma) * c * lr * u

    def _sgd(self, g, st, t):
        hp = self.hp
        mu = hp["momentum"]
        if mu == 0:
            return g, 1.0
        st["b"] = g.clone() if t == 1 else mu * st["b"] + (1 - hp["dampening"]) * g
        return (g + mu * st["b"] if hp["nesterov"] else st["b"]), 1.0

    def _adam(self, g, st, t):
        hp = self.hp
        b1, b2 = hp["betas"]
        st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
        st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
        v = st["v"]
        if hp["amsgrad"]:
            st["vmax"] = v = torch.maximum(st.get("vmax", torch.zeros_like(g)), v)
        u = st["m"] / (torch.sqrt(v) / math.sqrt(1 - b2**t) + hp["eps"])
        return u, 1 / (1 - b1**t)

    def _adagrad(self, g, st, t):
        hp = self.hp
        st["s"] = st.get("s", hp["initial_accumulator_value"]) + g * g
        return g / (torch.sqrt(st["s"]) + hp["eps"]), 1 / (1 + (t - 1) * hp["lr_decay"])

    def _rmsprop(self, g, st, t):
        hp = self.hp
        a = hp["alpha"]
        st["v"] = a * st.get("v", 0.0) + (1 - a) * g * g
        if hp["centered"]:
            st["ga"] = a * st.get("ga", 0.0) + (1 - a) * g
            denom = torch.sqrt(st["v"] - st["ga"] ** 2) + hp["eps"]
        else:
            denom = torch.sqrt(st["v"]) + hp["eps"]
        if hp["momentum"] > 0:
            st["b"] = hp["momentum"] * st.get("b", 0.0) + g / denom
            return st["b"], 1.0
        return g / denom, 1.0


class MLP(torch.nn.Module):
    """A tiny MLP with a frozen layer and a parameter that gets a gradient only on some steps."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6, dtype=dtype)
        self.frozen = torch.nn.Linear(6, 6, dtype=dtype)
        self.frozen.requires_grad_(False)
        self.fc2 = torch.nn.Linear(6, 2, dtype=dtype)
        self.sometimes = torch.nn.Parameter(torch.linspace(0.5, 1.5, 2, dtype=dtype))

    def forward(self, x, use_sometimes=True):
        y = self.fc2(torch.tanh(self.frozen(torch.tanh(self.fc1(x)))))
        return y * self.sometimes if use_sometimes else y


def make_model(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return MLP(dtype)


def batches(n, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g, dtype=dtype), torch.randn(8, 2, generator=g, dtype=dtype))
            for _ in range(n)]


def train(model, opt, data, skip_every=3, start=0):
    """One step per batch; every ``skip_every``-th step leaves ``model.sometimes`` without a gradient.

    ``start`` is the index of the first batch, so that training in pieces skips the same steps."""
    losses = []
    for i, (x, y) in enumerate(data, start):
        opt.zero_grad()
        loss = (model(x, use_sometimes=(i % skip_every != 1)) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def clone_params(model):
    return [p.detach().clone() for p in model.parameters()]
