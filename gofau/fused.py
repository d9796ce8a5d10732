"""The fused step (``fused=True``): one compiled pass over the tensors for SGD and Adam.

For the sgd and adam directions under the additive, multiplicative, hybrid and proportional rules,
with one step count shared by the bucket's tensors, :func:`step` runs a loop over the tensors
compiled by ``torch.compile``: inductor emits one vectorised kernel per tensor that reads theta,
g and the state once and writes them once, as ``torch.optim``'s fused optimizers do. Every
scalar that depends on the step (c, the step sizes, Adam's bias correction) is computed before
the kernel, so the kernel holds no per-element division by a scalar. Other directions and rules,
per-tensor step counts, and SGD's first step (its momentum buffer starts as the gradient) run the
eager step (compiled whole, :func:`step_compiled`). The records of the lab never use this path.

The step is, with k_add and k_mul the additive and multiplicative step sizes times c:
theta <- theta - k_add u - k_mul |theta| T(lr_in u), with T = tanh (T(x) = x for the proportional
rule). In float64, T is ``torch.tanh``. In float32 and narrower types, T is a rational function
(:func:`tanh`): torch's CPU tanh is slow inside a compiled kernel (with it, the whole step took 2.4
to 2.9 times as long here), and a rational function is a handful of fused multiply-adds and one
division.
"""
import torch

# tanh(x) ~ x P(x^2) / Q(x^2) on [-CLAMP, CLAMP], and +-1 beyond (tanh(7.9) rounds to 1 - 3e-7 in
# float32): the coefficients of Eigen's float tanh (generic_fast_tanh_float). Measured over
# 2 million float32 arguments against float64 tanh: at most 6 ulp of tanh, 3.5e-7 in absolute terms.
CLAMP = 7.90531110763549805
NUMERATOR = (4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
             -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16)
DENOMINATOR = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
RULES = ("additive", "multiplicative", "hybrid", "proportional")


def tanh(x):
    """tanh(x): ``torch.tanh`` in float64; else the rational approximation, evaluated in float32."""
    if x.dtype == torch.float64:
        return torch.tanh(x)
    y = x.float().clamp(-CLAMP, CLAMP)
    y2 = y * y
    p = NUMERATOR[-1]
    for a in reversed(NUMERATOR[:-1]):
        p = p * y2 + a
    q = DENOMINATOR[-1]
    for b in reversed(DENOMINATOR[:-1]):
        q = q * y2 + b
    return (y * p / q).to(x.dtype)


def _move(rule: str, p, u, k_add, k_mul, lr_in: float, tanh=tanh):
    """theta <- theta - k_add u - k_mul |theta| T(lr_in u), the terms the rule has."""
    if rule == "additive":
        p.sub_(k_add * u)
    elif rule == "proportional":
        p.sub_(k_mul * p.abs() * (u * lr_in))
    elif rule == "multiplicative":
        p.sub_(k_mul * p.abs() * tanh(u * lr_in))
    else:
        p.sub_(k_add * u + k_mul * p.abs() * tanh(u * lr_in))


def _gradient(p, g, weight_decay: float, maximize: bool):
    g = -g if maximize else g
    return g + weight_decay * p if weight_decay else g


def _sgd(params, grads, bufs, k_add, k_mul, rule: str, lr_in: float, weight_decay: float, maximize: bool,
         momentum: float, dampening: float, nesterov: bool, tanh=tanh):
    for i, (p, g) in enumerate(zip(params, grads)):
        g = _gradient(p, g, weight_decay, maximize)
        if momentum:
            b = bufs[i]
            b.mul_(momentum).add_(g, alpha=1 - dampening)
            u = g + momentum * b if nesterov else b
        else:
            u = g
        _move(rule, p, u, k_add, k_mul, lr_in, tanh)


def _adam(params, grads, exp_avgs, exp_avg_sqs, max_sqs, k_add, k_mul, inv_correction2, rule: str, lr_in: float,
          weight_decay: float, maximize: bool, beta1: float, beta2: float, eps: float, tanh=tanh):
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        g = _gradient(p, g, weight_decay, maximize)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if max_sqs:  # AMSGrad: the running maximum of v stands in for v
            max_sqs[i].copy_(torch.maximum(max_sqs[i], v))
            v = max_sqs[i]
        _move(rule, p, m / (v.sqrt() * inv_correction2 + eps), k_add, k_mul, lr_in, tanh)


_compiled = {}


def _kernel(name, fn):
    if name not in _compiled:
        _compiled[name] = torch.compile(fn)
    return _compiled[name]


def step_compiled(hyper, params, grads, states, steps):
    """The eager step (``gofau.optimizer._update``) compiled whole: any direction and rule."""
    from gofau.optimizer import _update
    _kernel("update", _update)(hyper, params, grads, states, steps)


def step(hyper, params, grads, states, steps):
    """One fused step for tensors of one device and dtype; ``hyper`` is the group with lr and
    lr_out as 0-dim float64 tensors and ``steps`` the shared step count t as one (a list when
    the tensors' counts differ), as ``gofau.optimizer._as_tensors`` makes them."""
    from gofau.optimizer import _update
    from gofau.rules import eta_out

    direction, rule = hyper["direction"], hyper["rule"]
    if direction not in ("sgd", "adam") or rule not in RULES or isinstance(steps, list):
        return step_compiled(hyper, params, grads, states, steps)
    gamma = hyper["gamma"] if rule == "hybrid" else float(rule == "multiplicative")
    lr_mul = hyper["lr"] if rule == "proportional" else eta_out(hyper)
    if direction == "sgd":
        c = 1.0
        if hyper["momentum"] and any("momentum_buffer" not in s for s in states):
            return _update(hyper, params, grads, states, steps)  # the first step: b_1 = g_1, eagerly
    else:
        c = 1 / (1 - hyper["betas"][0] ** steps)
    k_add = c * (1 - gamma) * hyper["lr"] if rule in ("additive", "hybrid") else None
    k_mul = c * gamma * lr_mul if rule == "hybrid" else (c * lr_mul if rule != "additive" else None)
    common = dict(rule=rule, lr_in=float(hyper["lr_in"]), weight_decay=float(hyper["weight_decay"]),
                  maximize=bool(hyper["maximize"]))
    if direction == "sgd":
        bufs = [s.get("momentum_buffer") for s in states]
        _kernel("sgd", _sgd)(params, grads, bufs, k_add, k_mul, momentum=float(hyper["momentum"]),
                             dampening=float(hyper["dampening"]), nesterov=bool(hyper["nesterov"]), **common)
    else:
        beta1, beta2 = hyper["betas"]
        max_sqs = [s["max_exp_avg_sq"] for s in states] if hyper["amsgrad"] else []
        _kernel("adam", _adam)(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                               max_sqs, k_add, k_mul, 1 / (1 - beta2 ** steps) ** 0.5, beta1=float(beta1),
                               beta2=float(beta2), eps=float(hyper["eps"]), **common)
