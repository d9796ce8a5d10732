"""Parameter groups for the tensors that multiplicative rules cannot move."""
import torch

SELECTIONS = ("zeros", "bias_and_norm")


def param_groups(model, select="zeros", **overrides):
    """Splits trainable parameters into ``[{'params': rest}, {'params': selected, **overrides}]``.

    select="zeros": tensors that are exactly zero now (zero-initialised biases, BatchNorm shifts):
    under the multiplicative rule theta - eta_out |theta| tanh(eta_in u) they never move.
    select="bias_and_norm": every tensor with at most one dimension (biases, norm weights and shifts).
    ``overrides`` are the selected group's settings, e.g. ``rule="additive", lr=0.01``.
    Empty groups are left out.

    >>> opt = gofau.MSGD(gofau.param_groups(model, rule="hybrid"), lr=0.01, momentum=0.9)
    """
    if select not in SELECTIONS:
        raise ValueError(f"Invalid select: {select!r}; expected one of {', '.join(SELECTIONS)}")
    params = model.parameters() if isinstance(model, torch.nn.Module) else model
    rest, chosen = [], []
    for p in params:
        if p.requires_grad:
            pick = not p.detach().any() if select == "zeros" else p.dim() <= 1
            (chosen if pick else rest).append(p)
    return [g for g in ({"params": rest}, {"params": chosen, **overrides}) if g["params"]]
