"""Momentum (phi) and adaptive rate (psi): the direction u = m_t * l_t of each base optimizer.

Each direction works on lists of tensors that share a device and dtype (``torch._foreach_*``
ops) and returns ``(u, c)``: the directions and, per tensor, a factor ``c`` that multiplies every
step size of the update rule (Adam's first-moment correction 1/(1 - beta1^t), Adagrad's decay
1/(1 + (t - 1) lr_decay), 1 otherwise). This follows the authors' released code, where those
factors sit outside the tanh. The gradients ``g`` arrive with weight decay (L2) and ``maximize``
already applied. Directions never modify ``g`` in place. ``steps`` is the step count t shared by
all tensors (a number, or a 0-dim tensor in the fused path) or a list with one count per tensor.
"""
import math
import numbers

import torch


def check(group, name, low, high=None, *, open_high=False):
    """Raises ValueError unless group[name] is a finite real number in [low, high] (or [low, high))."""
    value = group[name]
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and low <= value and (
        high is None or (value < high if open_high else value <= high))
    if not ok:
        bound = "inf)" if high is None else f"{high}{')' if open_high else ']'}"
        raise ValueError(f"Invalid {name}: {value!r}; expected a number in [{low}, {bound}")


def _each(steps, fn):
    return [fn(t) for t in steps] if isinstance(steps, list) else fn(steps)


class SGD:
    """phi: heavy-ball momentum as torch.optim.SGD, psi = 1.

    b_1 = g_1, b_t = mu b_{t-1} + (1 - dampening) g_t; u = g_t + mu b_t (Nesterov), b_t, or g_t (mu = 0).
    """

    defaults = dict(momentum=0.0, dampening=0.0, nesterov=False)

    def validate(self, group):
        check(group, "momentum", 0.0)
        check(group, "dampening", 0.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Invalid nesterov: True requires momentum > 0 and dampening = 0")

    def init(self, p, group):
        return {}

    def __call__(self, group, grads, states, steps):
        mu = group["momentum"]
        if mu == 0:
            return grads, 1.0
        bufs = [s.get("momentum_buffer") for s in states]
        old = [i for i, b in enumerate(bufs) if b is not None]
        if old:
            torch._foreach_mul_([bufs[i] for i in old], mu)
            torch._foreach_add_([bufs[i] for i in old], [grads[i] for i in old], alpha=1 - group["dampening"])
        for i, b in enumerate(bufs):
            if b is None:  # first step: the buffer starts as the gradient
                bufs[i] = states[i]["momentum_buffer"] = grads[i].detach().clone()
        return (torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs), 1.0


class Adagrad:
    """psi = 1 / (sqrt(sum_k g_k^2) + eps), phi = g; step sizes divided by 1 + (t - 1) lr_decay."""

    defaults = dict(lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0)

    def validate(self, group):
        for name in self.defaults:
            check(group, name, 0.0)

    def init(self, p, group):
        return {"sum": torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)}

    def __call__(self, group, grads, states, steps):
        sums = [s["sum"] for s in states]
        torch._foreach_addcmul_(sums, grads, grads, 1.0)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, group["eps"])
        return torch._foreach_div(grads, std), _each(steps, lambda t: 1 / (1 + (t - 1) * group["lr_decay"]))


class RMSprop:
    """psi = 1 / (sqrt(v) + eps), v = alpha v + (1 - alpha) g^2 (centred: v - E[g]^2).

    Without momentum u = g psi; with momentum u = b, b = mu b + g psi (as torch.optim.RMSprop).
    """

    defaults = dict(alpha=0.99, eps=1e-8, momentum=0.0, centered=False)

    def validate(self, group):
        for name in ("alpha", "eps", "momentum"):
            check(group, name, 0.0)

    def init(self, p, group):
        state = {"square_avg": torch.zeros_like(p, memory_format=torch.preserve_format)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def __call__(self, group, grads, states, steps):
        alpha = group["alpha"]
        square_avgs = [s["square_avg"] for s in states]
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, 1 - alpha)
        if group["centered"]:
            grad_avgs = [s["grad_avg"] for s in states]
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, -1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, group["eps"])
        if group["momentum"] > 0:
            bufs = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_addcdiv_(bufs, grads, avg)
            return bufs, 1.0
        return torch._foreach_div(grads, avg), 1.0


class Adam:
    """phi = m_t (uncorrected), psi = 1 / (sqrt(v_t) / sqrt(1 - beta2^t) + eps); c = 1 / (1 - beta1^t).

    m_t = beta1 m + (1 - beta1) g, v_t = beta2 v + (1 - beta2) g^2 (AMSGrad: running max of v_t).
    """

    defaults = dict(betas=(0.9, 0.999), eps=1e-8, amsgrad=False)

    def validate(self, group):
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2) in [0, 1)")
        for i, beta in enumerate(betas):
            check({f"beta{i + 1}": beta}, f"beta{i + 1}", 0.0, 1.0, open_high=True)
        check(group, "eps", 0.0)

    def init(self, p, group):
        state = {k: torch.zeros_like(p, memory_format=torch.preserve_format) for k in ("exp_avg", "exp_avg_sq")}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def __call__(self, group, grads, states, steps):
        beta1, beta2 = group["betas"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        if group["amsgrad"]:
            exp_avg_sqs = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(exp_avg_sqs, [s["exp_avg_sq"] for s in states])
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, _each(steps, lambda t: (1 - beta2**t) ** 0.5))
        torch._foreach_add_(denom, group["eps"])
        return torch._foreach_div(exp_avgs, denom), _each(steps, lambda t: 1 / (1 - beta1**t))


DIRECTIONS = {"sgd": SGD(), "adagrad": Adagrad(), "rmsprop": RMSprop(), "adam": Adam()}
