"""GOFAU: one torch.optim.Optimizer for any direction (phi x psi) and update rule (xi)."""
import copy
import os
import sys
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Iterable

import torch
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from .directions import DIRECTIONS, check
from .fused import step as _fused_update
from .rules import RULES, fixes_zeros

_INTERNAL = (os.path.dirname(__file__), os.path.dirname(torch.__file__))
COMMON = ("lr", "lr_in", "lr_out", "gamma", "weight_decay", "maximize", "foreach", "fused")
_GROUP_KEYS = {"params", "lr_ref", "param_names", "initial_lr"}  # besides the defaults: ours, torch.optim's, schedulers'


def _update(group, params, grads, states, steps, observe=None, scratch=None):
    """One step for tensors of one device and dtype: g -> u = phi psi -> rule (in place).
    ``observe(group, params, u)``, when given, sees u before the rule moves the parameters;
    ``scratch`` is the optimizer's work memory for the rules (``gofau.rules.work``), None when compiled."""
    if group["maximize"]:
        grads = torch._foreach_neg(grads)
    if group["weight_decay"]:
        grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    u, c = DIRECTIONS[group["direction"]](group, grads, states, steps)
    if observe is not None:
        observe(group, params, u)
    RULES[group["rule"]](group, params, u, c, scratch)


def _caller_stacklevel():
    """The warnings stacklevel of the first frame outside gofau and torch: the caller of step()."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def _as_tensors(group, steps, device):
    """The group and step counts with lr, lr_out and t as float64 0-dim tensors on the parameters'
    device, so that torch.compile neither specialises nor recompiles on values that change."""
    def scalar(x):
        return torch.tensor(x, dtype=torch.float64, device=device)
    hyper = {k: v for k, v in group.items() if k != "params"}
    hyper.update({k: scalar(group[k]) for k in ("lr", "lr_out") if group[k] is not None})
    return hyper, [scalar(t) for t in steps] if isinstance(steps, list) else scalar(steps)


def add_checked_group(opt, param_group, allowed, check):
    """``Optimizer.add_param_group``, refusing keys outside the defaults and ``allowed`` first, and
    removing the group again when ``check(group)`` refuses its hyperparameters."""
    if isinstance(param_group, dict):
        unknown = sorted(set(param_group) - set(opt.defaults) - allowed)
        if unknown:
            raise TypeError(f"param group has unknown key(s) {', '.join(map(str, unknown))}; accepted: "
                            f"params, {', '.join(opt.defaults)}")
    Optimizer.add_param_group(opt, param_group)
    try:
        check(opt.param_groups[-1])
    except (TypeError, ValueError):
        opt.param_groups.pop()
        raise


def buckets(opt):
    """``(group, params)`` for each param group and each (device, dtype) of its parameters that have
    gradients; raises first, before any state changes, for a sparse gradient or a complex parameter."""
    todo = [(group, [p for p in group["params"] if p.grad is not None]) for group in opt.param_groups]
    for _, params in todo:
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(opt).__name__} does not support sparse gradients")
            if torch.is_complex(p):
                raise TypeError(f"{type(opt).__name__} does not support complex parameters; "
                                "optimize torch.view_as_real(p) instead")
    found = []
    for group, params in todo:
        by_kind = defaultdict(list)
        for p in params:
            by_kind[p.device, p.dtype].append(p)
        found += [(group, bucket) for bucket in by_kind.values()]
    return found


class GOFAU(Optimizer):
    """Generic Optimization Framework for Alternative Updates (Kirtas et al., 2024).

    A step computes g = grad + weight_decay * theta (grad negated first when maximize), the base optimizer's
    direction u = phi(g) * psi(g) with its step-size factor c (``gofau.directions``), and applies the
    group's update rule (``gofau.rules``), e.g. multiplicative: theta <- theta - c lr |theta| tanh(lr_in u).

    Args:
        params: iterable of tensors, or of dicts defining parameter groups.
        direction: base optimizer: "sgd", "adam", "adagrad" or "rmsprop".
        rule: "additive", "multiplicative", "hybrid", "power", "proportional" (the multiplicative rule
            without the tanh, a control), "exponentiated" (Madam's) or "trust" (LAMB's tensor-wise
            ratio); a group may set its own.
        lr: eta for the additive, hybrid, exponentiated and trust rules; eta_out for the multiplicative,
            power and proportional rules.
        lr_in: eta_in, the scale of u inside the tanh.
        lr_out: the hybrid's eta_out (None: lr); it follows lr in proportion under LR schedulers.
        gamma: the hybrid's weight of the multiplicative term, in [0, 1] (0: additive, 1: multiplicative).
        weight_decay: L2 penalty added to the gradient before phi and psi.
        maximize: ascend the objective instead of descending it.
        foreach: one ``torch._foreach_*`` call per device and dtype (None or True) or a loop over tensors (False).
        fused: one compiled pass over the tensors (``gofau.fused``; its first step compiles, once).
        **hyperparameters: the base's own, with torch.optim's names and defaults:
            sgd: momentum=0, dampening=0, nesterov=False; adam: betas=(0.9, 0.999), eps=1e-8, amsgrad=False;
            adagrad: lr_decay=0, eps=1e-10, initial_accumulator_value=0; rmsprop: alpha=0.99, eps=1e-8,
            momentum=0, centered=False.

    Parameters that are exactly zero never move under the multiplicative, power, proportional and
    exponentiated rules (their step is proportional to |theta|): put them under another rule with ``gofau.param_groups``.
    ``register_direction_hook`` observes each step's direction u (for diagnostics such as tanh saturation).
    The eager step keeps two work buffers as large as the largest parameter tensor (``gofau.rules.work``);
    they are not state and are never saved.
    """

    def __init__(self, params, direction="sgd", rule="additive", lr=1e-3, *, lr_in=1.0, lr_out=None, gamma=0.5,
                 weight_decay=0.0, maximize=False, foreach=None, fused=False, **hyperparameters):
        if direction not in DIRECTIONS:
            raise ValueError(f"Invalid direction: {direction!r}; expected one of {', '.join(DIRECTIONS)}")
        base = DIRECTIONS[direction].defaults
        unknown = sorted(set(hyperparameters) - set(base))
        if unknown:
            raise TypeError(f"{direction} has no hyperparameter {', '.join(unknown)}; "
                            f"accepted: {', '.join(COMMON + tuple(base))}")
        if isinstance(params, torch.Tensor) or not isinstance(params, Iterable):
            raise TypeError(f"params must be an iterable of tensors or of param-group dicts, got {type(params).__name__}")
        if fused and foreach:
            raise ValueError("Invalid foreach: True together with fused=True; choose one")
        defaults = dict(direction=direction, rule=rule, lr=lr, lr_in=lr_in, lr_out=lr_out, gamma=gamma,
                        weight_decay=weight_decay, maximize=maximize, foreach=foreach, fused=fused,
                        **{**base, **hyperparameters})
        super().__init__(params, defaults)
        self._direction_hooks = OrderedDict()
        self._scratch = {}  # the eager rules' work memory (gofau.rules.work): not state, never saved

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_direction_hooks", OrderedDict())
        self.__dict__.setdefault("_scratch", {})

    def register_direction_hook(self, hook) -> RemovableHandle:
        """Calls ``hook(optimizer, group, params, u)`` at every step, once per param group and per
        (device, dtype) bucket of its tensors with gradients (once per tensor with ``foreach=False``),
        after the direction u = phi psi is computed and before the update rule moves ``params``:
        ``u[i]`` is the direction of ``params[i]``, the group's lr_in not yet applied. Treat the tensors
        as read-only (clone what you keep). While a hook is registered, ``fused=True`` groups step
        eagerly (same math, not compiled). Returns a handle whose ``remove()`` unregisters the hook;
        hooks are not part of ``state_dict`` or of copies.
        """
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        handle = RemovableHandle(self._direction_hooks)
        self._direction_hooks[handle.id] = hook
        return handle

    def _observe(self, group, params, u):
        for hook in list(self._direction_hooks.values()):
            hook(self, group, params, u)

    def add_param_group(self, param_group):
        """Adds a group (filled from the defaults), checking its keys and hyperparameters."""
        def check(group):
            if group["direction"] != self.defaults["direction"]:
                raise ValueError(f"Invalid direction: {group['direction']!r} in a param group; every group uses the "
                                 f"optimizer's direction {self.defaults['direction']!r} (use another optimizer)")
            self._check(group)

        add_checked_group(self, param_group, _GROUP_KEYS, check)
        self.param_groups[-1].setdefault("lr_ref", self.param_groups[-1]["lr"])

    def load_state_dict(self, state_dict):
        """Loads a state saved by ``state_dict()`` of a GOFAU optimizer of the same direction and rules,
        checking it first: a foreign or mismatched state dict, or an out-of-range hyperparameter, raises
        ValueError and leaves this optimizer unchanged. A group saved before ``lr_ref`` existed gets its
        ``initial_lr`` (set by LR schedulers) or its ``lr``."""
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups', as state_dict() returns")
        groups = copy.deepcopy(state_dict["param_groups"])
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param group(s), this optimizer {len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if not {"direction", "rule"} <= set(saved):
                raise ValueError(f"param group {i} of state_dict has no 'direction' and 'rule': it was not saved by "
                                 f"a GOFAU optimizer (torch.optim's state dicts load into torch.optim)")
            for name in ("direction", "rule"):
                if saved[name] != own[name]:
                    raise ValueError(f"param group {i} of state_dict has {name} {saved[name]!r}, this optimizer "
                                     f"{own[name]!r}: load it into an optimizer built with {name}={saved[name]!r}")
            missing = sorted(set(own) - set(saved) - {"params", "lr_ref", "initial_lr"})
            if missing:
                raise ValueError(f"param group {i} of state_dict lacks {', '.join(missing)}")
            saved.setdefault("lr_ref", saved.get("initial_lr", saved["lr"]))
            self._check(saved)
        params = [p for g in self.param_groups for p in g["params"]]
        for key, entry in state_dict["state"].items():
            if not entry:
                continue
            p = params[key] if isinstance(key, int) and 0 <= key < len(params) else None
            if p is None:
                raise ValueError(f"state_dict has state for parameter {key!r}, this optimizer has {len(params)}")
            group = next((g for g in groups if key in g["params"]), None)
            if group is None:
                raise ValueError(f"state_dict has state for parameter {key!r}, which none of its param groups lists")
            need = {"step", *DIRECTIONS[group["direction"]].init(torch.empty(0, device="meta"), group)}
            if not need <= set(entry):
                raise ValueError(f"state of parameter {key} lacks {', '.join(sorted(need - set(entry)))} "
                                 f"(a {group['direction']} optimizer keeps {', '.join(sorted(need))})")
            for name, value in entry.items():
                if name != "step" and torch.is_tensor(value) and value.shape != p.shape:
                    raise ValueError(f"state {name!r} of parameter {key} has shape {tuple(value.shape)}, "
                                     f"the parameter {tuple(p.shape)}")
        super().load_state_dict({**state_dict, "param_groups": groups})

    @staticmethod
    def _check(group):
        if group["rule"] not in RULES:
            raise ValueError(f"Invalid rule: {group['rule']!r}; expected one of {', '.join(RULES)}")
        for name in ("lr", "lr_in", "weight_decay") + (() if group["lr_out"] is None else ("lr_out",)):
            check(group, name, 0.0)
        check(group, "gamma", 0.0, 1.0)
        DIRECTIONS[group["direction"]].validate(group)

    def _state(self, group, p):
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state.update(DIRECTIONS[group["direction"]].init(p, group))
            if fixes_zeros(group) and not getattr(self, "_warned_zero", False) and not p.any():
                self._warned_zero = True
                warnings.warn(f"A parameter of shape {tuple(p.shape)} is exactly zero under the {group['rule']} rule: "
                              "its steps are proportional to |theta|, so it will never move. Put such tensors "
                              "under another rule with gofau.param_groups(model, select='zeros', rule='additive').",
                              stacklevel=_caller_stacklevel())
        state["step"] += 1
        return state

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, params in buckets(self):
            self._step_tensors(group, params)
        return loss

    def _step_tensors(self, group, params):
        states = [self._state(group, p) for p in params]
        grads = [p.grad for p in params]
        counts = [s["step"].item() for s in states]
        steps = counts[0] if len(set(counts)) == 1 else counts  # one shared count: scalar step sizes
        observe = self._observe if self._direction_hooks else None
        if group["fused"] and observe is None:
            hyper, steps = _as_tensors(group, steps, params[0].device)
            _fused_update(hyper, params, grads, states, steps)
        elif group["foreach"] is False:
            for p, g, s, t in zip(params, grads, states, counts):
                _update(group, [p], [g], [s], t, observe, self._scratch)
        else:
            _update(group, params, grads, states, steps, observe, self._scratch)
