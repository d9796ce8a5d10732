"""The public optimizers: GOFAU with a fixed base direction and update rule.

Multiplicative ``M*``: lr = eta_out, lr_in = eta_in. Hybrid ``H*``: lr = eta, lr_out = eta_out (None: lr),
lr_in = eta_in, gamma. Additive ``SGD``, ``Adam``, ``Adagrad``, ``RMSprop``: the torch.optim update,
computed by the same framework. Every preset also takes its base's own hyperparameters with
torch.optim's names and defaults, and weight_decay, maximize, foreach and fused.
"""
import inspect

from .directions import DIRECTIONS
from .optimizer import GOFAU

_RULE_ARGS = {"additive": {}, "multiplicative": {"lr_in": 1.0}, "hybrid": {"lr_out": None, "lr_in": 1.0, "gamma": 0.5}}
_COMMON = {"weight_decay": 0.0, "maximize": False, "foreach": None, "fused": False}
_LR = {"sgd": 1e-3, "adam": 1e-3, "adagrad": 1e-2, "rmsprop": 1e-2}


def _preset(name, direction, rule, math):
    accepted = {**_RULE_ARGS[rule], **DIRECTIONS[direction].defaults, **_COMMON}

    def __init__(self, params, lr=_LR[direction], **hyperparameters):
        unknown = sorted(set(hyperparameters) - set(accepted))
        if unknown:
            raise TypeError(f"{name} has no hyperparameter {', '.join(unknown)}; accepted: lr, {', '.join(accepted)}")
        GOFAU.__init__(self, params, direction, rule, lr, **hyperparameters)

    P = inspect.Parameter
    __init__.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD),
         P("lr", P.POSITIONAL_OR_KEYWORD, default=_LR[direction])]
        + [P(k, P.KEYWORD_ONLY, default=v) for k, v in accepted.items()])
    doc = f"{direction} direction with the {rule} update rule: {math}\n\nSee ``gofau.GOFAU`` for every argument."
    return type(name, (GOFAU,), {"__init__": __init__, "__doc__": doc, "__module__": __name__, "__qualname__": name})


_MUL = "theta <- theta - c lr |theta| tanh(lr_in u)."
_HYB = "theta <- theta - gamma c lr_out |theta| tanh(lr_in u) - (1 - gamma) c lr u."
_ADD = "theta <- theta - c lr u, as torch.optim."

MSGD = _preset("MSGD", "sgd", "multiplicative", _MUL)
HSGD = _preset("HSGD", "sgd", "hybrid", _HYB)
HMSGD = HSGD  # the authors' name
MAdam = _preset("MAdam", "adam", "multiplicative", _MUL)
HAdam = _preset("HAdam", "adam", "hybrid", _HYB)
MAdagrad = _preset("MAdagrad", "adagrad", "multiplicative", _MUL)
HAdagrad = _preset("HAdagrad", "adagrad", "hybrid", _HYB)
MRMSprop = _preset("MRMSprop", "rmsprop", "multiplicative", _MUL)
HRMSprop = _preset("HRMSprop", "rmsprop", "hybrid", _HYB)
SGD = _preset("SGD", "sgd", "additive", _ADD)
Adam = _preset("Adam", "adam", "additive", _ADD)
Adagrad = _preset("Adagrad", "adagrad", "additive", _ADD)
RMSprop = _preset("RMSprop", "rmsprop", "additive", _ADD)
