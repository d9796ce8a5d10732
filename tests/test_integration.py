"""gofau with the rest of PyTorch: GradScaler skips inf steps, torch.compile'd models, DDP on gloo (CPU)."""
import copy
import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gofau


def tiny(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def data(seed, n=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, x[:, :1] * 0.5 - x[:, 1:2] ** 2


def loss_of(model, xy):
    x, y = xy
    return (model(x) - y).pow(2).mean()


# --- GradScaler ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [gofau.HAdam, gofau.MSGD])
def test_grad_scaler_skips_inf_steps_and_unscales_the_rest(cls):
    model, twin = tiny(), tiny()
    opt, twin_opt = cls(model.parameters(), lr=0.01), cls(twin.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    xy = data(0)

    scaler.scale(loss_of(model, xy)).backward()
    model[0].weight.grad[0, 0] = float("inf")  # an overflow, as fp16 would produce
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert not opt.state  # the skipped step left no trace in the optimizer either
    assert scaler.get_scale() == 2.0**9

    opt.zero_grad()
    scaler.scale(loss_of(model, xy)).backward()
    scaler.step(opt)
    scaler.update()
    loss_of(twin, xy).backward()
    twin_opt.step()
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    for p, q in zip(model.parameters(), twin.parameters()):  # a power-of-2 scale unscales exactly
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# --- torch.compile ------------------------------------------------------------------------------------------------

def test_compiled_model_trains_like_the_eager_one():
    eager = tiny()
    compiled = torch.compile(copy.deepcopy(eager))
    opt, eager_opt = gofau.HAdam(compiled.parameters(), lr=0.02), gofau.HAdam(eager.parameters(), lr=0.02)
    xy = data(1)
    losses = []
    for _ in range(6):
        for m, o in ((compiled, opt), (eager, eager_opt)):
            o.zero_grad()
            loss = loss_of(m, xy)
            loss.backward()
            o.step()
        losses.append(loss_of(compiled, xy).item())
    assert losses[-1] < losses[0]
    for p, q in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# --- DistributedDataParallel on gloo ------------------------------------------------------------------------------

STEPS = 4


def _ddp_worker(rank, world_size, port, out_dir):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        model = torch.nn.parallel.DistributedDataParallel(tiny(seed=rank))  # rank 0's weights are broadcast
        opt = gofau.HAdam(model.parameters(), lr=0.02, lr_out=0.05, weight_decay=0.01)
        xy = data(100 + rank)  # each rank sees different data
        for _ in range(STEPS):
            opt.zero_grad()
            loss_of(model, xy).backward()
            opt.step()
        torch.save([p.detach() for p in model.module.parameters()], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_ranks_end_identical_and_follow_the_averaged_gradient(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert all(torch.equal(p, q) for p, q in zip(*ranks))

    # One process, rank 0's start, the mean of both ranks' losses: DDP averages exactly these gradients.
    model = tiny(seed=0)
    opt = gofau.HAdam(model.parameters(), lr=0.02, lr_out=0.05, weight_decay=0.01)
    for _ in range(STEPS):
        opt.zero_grad()
        ((loss_of(model, data(100)) + loss_of(model, data(101))) / 2).backward()
        opt.step()
    for p, q in zip(model.parameters(), ranks[0]):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ranks[0][0], tiny(seed=0)[0].weight)
