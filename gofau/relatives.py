"""Relatives of GOFAU, each a direction fed to an update rule of the framework where the math allows.

Per tensor theta with gradient g, at step t (defaults as their authors'):

- Madam (Bernstein et al., 2020): u = clamp(g / sqrt(v_t / (1 - 0.999^t)), -g_bound, g_bound),
  v_t = 0.999 v + 0.001 g^2 (0/0 read as 0): :class:`NormalisedGradient`; then the ``exponentiated``
  rule theta <- theta exp(-lr sign(theta) u), and theta clamped to [-m, m], m = p_scale rms(theta_0).
- Fromage (Bernstein et al., 2020): u = g; the ``trust`` rule theta <- theta - lr (||theta|| / ||g||) g;
  then theta <- theta / sqrt(1 + lr^2), and with p_bound, theta rescaled to norm p_bound ||theta_0||
  when it is longer.
- LARS (You et al., 2017): the trust ratio comes before momentum, so it scales the gradient:
  d = (g + wd theta) trust_coeff ||theta|| / (||g|| + wd ||theta|| + eps); u from SGD's momentum on d
  (b_1 = d, b_t = mu b + d; Nesterov d + mu b); the ``additive`` rule theta <- theta - lr u.
- LAMB (You et al., 2019): r = c u + wd theta with Adam's (u, c), that is
  m_hat / (sqrt(v_hat) + eps) + wd theta (decoupled decay); the ``trust`` rule on r.

A trust ratio is 1 when either norm is 0. Every optimizer steps the tensors of one device and
dtype together (``torch._foreach_*``) and keeps torch.optim's state_dict, param groups and
schedulers.
"""
import math

import torch
from torch.optim import Optimizer

from .directions import DIRECTIONS, _each, check
from .optimizer import add_checked_group, buckets
from .rules import RULES

_GROUP_KEYS = {"params", "initial_lr", "param_names"}  # besides the defaults: torch.optim's and schedulers'


class NormalisedGradient:
    """Madam's direction: u = clamp(g / sqrt(v_t / (1 - beta^t)), -g_bound, g_bound), 0/0 read as 0;
    v_t = beta v + (1 - beta) g^2, beta = 0.999; c = 1."""

    beta = 0.999

    def init(self, p, group):
        return {"exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

    def __call__(self, group, grads, states, steps):
        v = [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(v, self.beta)
        torch._foreach_addcmul_(v, grads, grads, 1 - self.beta)
        rms = torch._foreach_div(v, _each(steps, lambda t: 1 - self.beta**t))
        torch._foreach_sqrt_(rms)
        # 0/0 read as 0: raising rms to the dtype's smallest positive number (subnormal) changes only
        # rms = 0, where g = 0 too (0 / tiny = 0) or g^2 underflowed (g / tiny and g / 0 clamp alike)
        torch._foreach_clamp_min_(rms, torch.finfo(grads[0].dtype).smallest_normal * torch.finfo(grads[0].dtype).eps)
        u = torch._foreach_div(grads, rms)
        torch._foreach_clamp_min_(u, -group["g_bound"])
        torch._foreach_clamp_max_(u, group["g_bound"])
        return u, 1.0


def _positive(group, name, alternative=""):
    value = group[name]
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"Invalid {name}: {value!r}; expected {alternative}a number in (0, inf)")


class _Relative(Optimizer):
    """The shared step: bad input refused first, tensors bucketed by (device, dtype), a step count
    per tensor, ``_init(p, group)`` for new state and ``_update(group, params, grads, states, steps)``."""

    def __init__(self, params, defaults):
        if isinstance(params, torch.Tensor) or not hasattr(params, "__iter__"):
            raise TypeError(f"params must be an iterable of tensors or of param-group dicts, got {type(params).__name__}")
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """Adds a group (filled from the defaults), checking its keys and hyperparameters."""
        add_checked_group(self, param_group, _GROUP_KEYS, self._check)

    def load_state_dict(self, state_dict):
        """As torch.optim, after checking that every saved group has this optimizer's hyperparameters
        (a state dict of another optimizer is refused) within their ranges."""
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups', as state_dict() returns")
        for i, group in enumerate(state_dict["param_groups"]):
            keys = set(group) - _GROUP_KEYS
            if keys != set(self.defaults):
                raise ValueError(f"param group {i} of state_dict has hyperparameters {sorted(keys)}, "
                                 f"{type(self).__name__} {sorted(self.defaults)}: it was saved by another optimizer")
            self._check(group)
        super().load_state_dict(state_dict)

    def _init(self, p, group):
        return {}

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group, params in buckets(self):
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state.update(step=torch.tensor(0.0), **self._init(p, group))
            counts = [s["step"] for s in states]
            torch._foreach_add_(counts, 1.0)
            counts = torch.stack(counts).tolist()
            steps = counts[0] if len(set(counts)) == 1 else counts
            self._update(group, params, [p.grad for p in params], states, steps)
        return loss


class Madam(_Relative):
    """Madam (Bernstein et al., 2020): theta <- clamp(theta exp(-lr sign(theta) u), -m, m), with u the
    clipped, RMS-normalised gradient (:class:`NormalisedGradient`) and m = p_scale sqrt(mean(theta_0^2)).
    Signs never change, and a parameter that is exactly zero never moves."""

    def __init__(self, params, lr=0.01, p_scale=3.0, g_bound=10.0):
        super().__init__(params, dict(lr=lr, p_scale=p_scale, g_bound=g_bound))

    def _check(self, group):
        check(group, "lr", 0.0)
        for name in ("p_scale", "g_bound"):
            _positive(group, name)

    def _init(self, p, group):
        return {"max": group["p_scale"] * p.detach().pow(2).mean().sqrt(),
                **NormalisedGradient().init(p, group)}

    def _update(self, group, params, grads, states, steps):
        u, c = NormalisedGradient()(group, grads, states, steps)
        RULES["exponentiated"](group, params, u, c)
        bounds = [s["max"] for s in states]
        torch._foreach_minimum_(params, bounds)
        torch._foreach_maximum_(params, torch._foreach_neg(bounds))


class Fromage(_Relative):
    """Fromage (Bernstein et al., 2020): theta <- (theta - lr (||theta|| / ||g||) g) / sqrt(1 + lr^2),
    the ``trust`` rule on the gradient; with p_bound, theta is rescaled to norm p_bound ||theta_0||
    whenever it is longer."""

    def __init__(self, params, lr=0.01, p_bound=None):
        super().__init__(params, dict(lr=lr, p_bound=p_bound))

    def _check(self, group):
        check(group, "lr", 0.0)
        if group["p_bound"] is not None:
            _positive(group, "p_bound", "None or ")

    def _init(self, p, group):
        return {} if group["p_bound"] is None else {"max": group["p_bound"] * p.detach().norm()}

    def _update(self, group, params, grads, states, steps):
        RULES["trust"](group, params, grads, 1.0)
        torch._foreach_div_(params, math.sqrt(1 + group["lr"] ** 2))
        if group["p_bound"] is not None:
            for p, s, norm in zip(params, states, torch._foreach_norm(params)):
                p.mul_(torch.where(norm > s["max"], s["max"] / norm, torch.ones_like(norm)))


class LARS(_Relative):
    """LARS (You et al., 2017): d = (g + wd theta) trust, trust = trust_coeff ||theta|| / (||g|| +
    wd ||theta|| + eps) (1 when a norm is 0); SGD's momentum on d (b_1 = d, b_t = momentum b + d);
    theta <- theta - lr b, or with nesterov theta <- theta - lr (d + momentum b)."""

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0.0, trust_coeff=0.001, eps=1e-8, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coeff=trust_coeff,
                                      eps=eps, nesterov=nesterov))

    def _check(self, group):
        for name in ("lr", "momentum", "weight_decay", "trust_coeff", "eps"):
            check(group, name, 0.0)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError("Invalid nesterov: True requires momentum > 0")

    def _update(self, group, params, grads, states, steps):
        wd = group["weight_decay"]
        a, b = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(grads))
        ratios = list(torch.where((a > 0) & (b > 0), group["trust_coeff"] * a / (b + wd * a + group["eps"]),
                                  torch.ones_like(a)).unbind())
        d = torch._foreach_add(grads, params, alpha=wd) if wd else list(grads)
        d = torch._foreach_mul(d, ratios)
        sgd = {**group, "dampening": 0.0}
        u, c = DIRECTIONS["sgd"](sgd, d, states, steps)
        RULES["additive"](group, params, u, c)


class LAMB(_Relative):
    """LAMB (You et al., 2019): r = m_hat / (sqrt(v_hat) + eps) + weight_decay theta, Adam's bias-corrected
    moments with decoupled decay; theta <- theta - lr (||theta|| / ||r||) r (the ``trust`` rule).
    No global gradient clipping."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _check(self, group):
        check(group, "lr", 0.0)
        check(group, "weight_decay", 0.0)
        DIRECTIONS["adam"].validate(group)

    def _init(self, p, group):
        return DIRECTIONS["adam"].init(p, {"amsgrad": False})

    def _update(self, group, params, grads, states, steps):
        u, c = DIRECTIONS["adam"]({**group, "amsgrad": False}, grads, states, steps)
        r = torch._foreach_mul(u, c)
        if group["weight_decay"]:
            torch._foreach_add_(r, params, alpha=group["weight_decay"])
        RULES["trust"](group, params, r, 1.0)


RELATIVES = {"madam": Madam, "fromage": Fromage, "lars": LARS, "lamb": LAMB}
"""The relatives by name, with the rule each updates by (as the trainer records it)."""
RELATIVE_RULES = {"madam": "exponentiated", "fromage": "trust", "lars": "additive", "lamb": "trust"}
