"""Update rules (xi): how a direction u becomes a parameter step.

With c the direction's step-size factor (see ``directions``):

- additive:       theta <- theta - c eta u                                             (eta = lr)
- multiplicative: theta <- theta - c eta_out |theta| tanh(eta_in u)                   (eta_out = lr)
- hybrid:         theta <- theta - gamma c eta_out |theta| tanh(eta_in u) - (1 - gamma) c eta u
                  (eta = lr, eta_out = lr_out, or lr when lr_out is None)
- power (M_SPOW): theta <- theta 2^(-sign(theta) c eta_out tanh(eta_in u))            (eta_out = lr)
- proportional:   theta <- theta - c eta_out |theta| (eta_in u)                        (eta_out = lr)
                  the multiplicative rule with the tanh removed (its first-order expansion): a control
                  that separates the effect of scaling steps by |theta| from that of the tanh.
- exponentiated:  theta <- theta exp(-c eta sign(theta) u)                            (eta = lr)
                  Madam's element-wise update (Bernstein et al., 2020): signs never change.
- trust:          theta <- theta - eta (||theta|| / ||c u||) c u, per tensor (c cancels); the ratio
                  is 1 when a norm is 0. The tensor-wise relative step of Fromage (Bernstein et al.,
                  2020) and LAMB (You et al., 2019).

eta_in = lr_in. LR schedulers only write ``group['lr']``; so that they scale both hybrid terms,
the hybrid's eta_out is ``lr_out * lr / lr_ref``, where ``lr_ref`` is the lr the group was built with.
Every rule reads theta before changing it and works in place on lists of one device and dtype.

The eager step (``scratch`` given, step sizes as numbers) moves the multiplicative, hybrid and
proportional rules one tensor at a time through two reusable work buffers (:func:`work`), so it
allocates nothing per step. Below float64 it evaluates tanh(x) as 2 sigmoid(2x) - 1: torch's CPU
sigmoid costs a third of its tanh, and the identity's absolute error (at most 1.8e-7, from
sigmoid's rounding near 1/2) times c eta_out |theta| stays within an ulp of theta for step sizes up
to about 1/4 (``tests/test_rules.py`` bounds it). In float64 it calls tanh itself. The compiled step
(``scratch`` None, step sizes as 0-dim tensors) keeps whole-list ``torch._foreach_*`` calls.
"""
import math

import torch


def eta_out(group):
    """The multiplicative step size: lr, or the hybrid's lr_out moved in proportion to lr."""
    if group["rule"] != "hybrid" or group["lr_out"] is None:
        return group["lr"]
    return group["lr_out"] * (group["lr"] / group["lr_ref"]) if group["lr_ref"] else group["lr_out"]


def _scaled(c, k):
    return [k * ci for ci in c] if isinstance(c, list) else k * c


def _is_tensor(scale):
    return isinstance(scale, torch.Tensor) or (isinstance(scale, list) and isinstance(scale[0], torch.Tensor))


def _add_scaled(params, xs, scale):
    """params += scale * xs, with one scale or one per tensor (numbers, or 0-dim tensors when fused)."""
    if isinstance(scale, list) or _is_tensor(scale):
        torch._foreach_add_(params, torch._foreach_mul(xs, scale))
    else:
        torch._foreach_add_(params, xs, alpha=scale)


def _add_product(params, a, b, scale):
    """params += scale * a * b; consumes a."""
    if _is_tensor(scale):
        torch._foreach_mul_(a, b)
        _add_scaled(params, a, scale)
    else:
        torch._foreach_addcmul_(params, a, b, scale)


def _tanh(u, lr_in):
    """tanh(lr_in u), one tensor at a time: inductor has no lowering for _foreach_tanh (nor
    _foreach_exp), so in the fused step the foreach form would split the kernel around eager calls."""
    return [torch.tanh(x if lr_in == 1 else x * lr_in) for x in u]


def work(scratch, like):
    """Two tensors with the shape and layout of ``like``, views of one buffer per device and dtype in
    ``scratch`` (the optimizer's dict, grown to twice the largest tensor), reused from tensor to
    tensor and step to step."""
    key, n = (like.device, like.dtype), like.numel()
    buf = scratch.get(key)
    if buf is None or buf.numel() < 2 * n:
        buf = scratch[key] = torch.empty(2 * n, device=like.device, dtype=like.dtype)
    dense = like.is_contiguous() or like.is_contiguous(memory_format=torch.channels_last)
    return [b.as_strided(like.size(), like.stride()) if dense else b.view(like.shape) for b in (buf[:n], buf[n:2 * n])]


def _relative_terms(params, u, k_mul, lr_in, squash, scratch, k_add=None):
    """theta <- theta + k_add u + k_mul |theta| T(lr_in u), one tensor at a time in ``work`` buffers:
    T = tanh with ``squash`` (2 sigmoid(2x) - 1 below float64), else T(x) = x; k_add and k_mul are
    numbers, or lists of one per tensor."""
    n = len(params)
    k_muls = k_mul if isinstance(k_mul, list) else [k_mul] * n
    k_adds = k_add if isinstance(k_add, list) else [k_add] * n
    for p, x, km, ka in zip(params, u, k_muls, k_adds):
        magnitude, t = work(scratch, p)
        torch.abs(p, out=magnitude)  # |theta_t|, read before the additive term moves theta
        if ka is not None:
            p.add_(x, alpha=ka)
        if not squash:
            p.addcmul_(magnitude, x, value=km * lr_in)
        elif p.dtype == torch.float64:
            torch.mul(x, lr_in, out=t).tanh_()
            p.addcmul_(magnitude, t, value=km)
        else:  # tanh(y) = 2 sigmoid(2y) - 1 = 2 (sigmoid(2y) - 1/2)
            torch.mul(x, 2 * lr_in, out=t).sigmoid_().sub_(0.5)
            p.addcmul_(magnitude, t, value=2 * km)


def _eager(scale, scratch):
    return scratch is not None and not _is_tensor(scale)


def additive(group, params, u, c, scratch=None):
    _add_scaled(params, u, _scaled(c, -group["lr"]))


def multiplicative(group, params, u, c, scratch=None):
    scale = _scaled(c, -eta_out(group))
    if _eager(scale, scratch):
        _relative_terms(params, u, scale, group["lr_in"], True, scratch)
    else:
        _add_product(params, torch._foreach_abs(params), _tanh(u, group["lr_in"]), scale)


def proportional(group, params, u, c, scratch=None):
    scale = _scaled(c, -group["lr"])
    if _eager(scale, scratch):
        _relative_terms(params, u, scale, group["lr_in"], False, scratch)
    else:
        scaled = u if group["lr_in"] == 1 else torch._foreach_mul(u, group["lr_in"])
        _add_product(params, torch._foreach_abs(params), scaled, scale)


def hybrid(group, params, u, c, scratch=None):
    gamma = group["gamma"]
    k_add, k_mul = _scaled(c, -(1 - gamma) * group["lr"]), _scaled(c, -gamma * eta_out(group))
    if _eager(k_mul, scratch):
        _relative_terms(params, u, k_mul, group["lr_in"], True, scratch, k_add)
        return
    magnitude = torch._foreach_abs(params)  # |theta_t|, read before the additive term moves theta
    _add_scaled(params, u, k_add)
    _add_product(params, magnitude, _tanh(u, group["lr_in"]), k_mul)


def power(group, params, u, c, scratch=None):
    exponent = _tanh(u, group["lr_in"])
    torch._foreach_mul_(exponent, torch._foreach_sign(params))
    torch._foreach_mul_(exponent, _scaled(c, -math.log(2) * group["lr"]))
    for x in exponent:  # not _foreach_exp_: see _tanh
        x.exp_()
    torch._foreach_mul_(params, exponent)


def exponentiated(group, params, u, c, scratch=None):
    exponent = torch._foreach_mul(u, torch._foreach_sign(params))
    torch._foreach_mul_(exponent, _scaled(c, -group["lr"]))
    for x in exponent:  # not _foreach_exp_: see _tanh
        x.exp_()
    torch._foreach_mul_(params, exponent)


def trust_ratios(params, xs):
    """||theta|| / ||x|| per tensor, as 0-dim tensors; 1 where either norm is 0."""
    a, b = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(xs))
    return list(torch.where((a > 0) & (b > 0), a / b, torch.ones_like(a)).unbind())


def trust(group, params, u, c, scratch=None):
    # c > 0 is one number per tensor, so (||theta|| / ||c u||) c u = (||theta|| / ||u||) u: c cancels
    _add_scaled(params, torch._foreach_mul(u, trust_ratios(params, u)), -group["lr"])


def fixes_zeros(group):
    """True when the group's rule can never move a parameter that is exactly zero."""
    return group["rule"] in ("multiplicative", "power", "proportional", "exponentiated") or (
        group["rule"] == "hybrid" and group["gamma"] == 1)


READS_LR_IN = ("multiplicative", "hybrid", "power", "proportional")
"""The rules that scale u by eta_in (the others ignore lr_in)."""

RULES = {"additive": additive, "multiplicative": multiplicative, "hybrid": hybrid, "power": power,
         "proportional": proportional, "exponentiated": exponentiated, "trust": trust}
