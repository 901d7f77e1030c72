"""ssnfx under torch.distributed: 2 CPU processes (gloo, loopback), launched by one helper.

* The search: ranks on split batches find the plan one process finds on the whole batches, and
  every rank gets the same plan.
* Training (the toolbox): DistributedDataParallel, and FSDP2 (``fully_shard``) with the store
  sharded, train a shared model to the store values of one process on the concatenated batches.
"""
from __future__ import annotations

import functools
import json
import socket
import traceback
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import ssnfx

from models import AttnNet, ThreeBranches, conflict_data

STEPS = 12
WORLD = 2


# ---- the launcher ------------------------------------------------------------------------------


def _worker(rank: int, world: int, port: int, out: str, task: Callable[..., None],
            args: tuple[Any, ...]) -> None:
    # A rank that fails mid-collective must not leave the other waiting forever.
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))
    try:
        torch.set_num_threads(1)
        task(rank, world, out, *args)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(task: Callable[..., None], out: Path, *args: Any) -> None:
    """Run ``task(rank, world, out, *args)`` in WORLD processes joined by a gloo group."""
    mp.spawn(_worker, args=(WORLD, _free_port(), str(out), task, args), nprocs=WORLD, join=True)


# ---- the search --------------------------------------------------------------------------------


def _plan(data, seed=0):
    torch.manual_seed(seed)
    plan = ssnfx.search(ssnfx.trace(ThreeBranches()), 0.5, data, F.mse_loss,
                        ssnfx.ShareConfig(method="swn"),
                        ssnfx.SearchConfig(steps=STEPS, progress=False))
    return plan


def _search_task(rank: int, world: int, out: str) -> None:
    half = [(x.chunk(world)[rank], y.chunk(world)[rank]) for x, y in conflict_data()]
    plan = _plan(half)
    with open(f"{out}/rank{rank}.json", "w") as f:
        f.write(plan.to_json())


def test_two_ranks_find_the_single_process_plan(tmp_path):
    launch(_search_task, tmp_path)
    plans = [ssnfx.SharingPlan.from_json((tmp_path / f"rank{r}.json").read_text())
             for r in range(2)]
    single = _plan(conflict_data())

    def decision(p):
        return json.dumps([p.measured["groups"], p.measured["superweight_clusters"],
                           [g.to_dict() for g in p.groups]])

    assert decision(plans[0]) == decision(plans[1])  # every rank, the same plan
    assert decision(plans[0]) == decision(single)    # and the one of a single process
    torch.testing.assert_close(torch.tensor(plans[0].measured["gradient_similarity"]),
                               torch.tensor(single.measured["gradient_similarity"]),
                               atol=2e-3, rtol=0)


# ---- training: DDP and FSDP --------------------------------------------------------------------
#
# AttnNet has no BatchNorm (whose batch statistics would differ per rank) and a leaf
# (MultiheadAttention, called through functional_call). The loss is a mean, so the gradient DDP
# averages over ranks is the gradient of the whole batch.

TRAIN_STEPS = 4


def _shared_attn(generation: str = "batched") -> torch.nn.Module:
    torch.manual_seed(0)  # the same private parameters on every rank and in the reference
    return ssnfx.share(AttnNet(), 0.5, ssnfx.ShareConfig(generation=generation))


def _train_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 5, 8, generator=gen), torch.randn(8, 3, generator=gen))
            for _ in range(TRAIN_STEPS)]


def _train(model: torch.nn.Module, params: Any, rank: int = 0, world: int = 1) -> None:
    """SGD with momentum, each rank on its share of every batch."""
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for x, y in _train_batches():
        loss = F.mse_loss(model(x.chunk(world)[rank]), y.chunk(world)[rank])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _ddp(rank: int, world: int, generation: str = "batched") -> dict[str, torch.Tensor]:
    shared = _shared_attn(generation)
    ddp = torch.nn.parallel.DistributedDataParallel(shared)  # as is: the store is a parameter
    _train(ddp, ddp.parameters(), rank, world)
    return {k: v.detach().clone() for k, v in shared.state_dict().items()}


def _fsdp(rank: int, world: int) -> dict[str, torch.Tensor]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    shared = _shared_attn()
    mesh = init_device_mesh("cpu", (world,))
    # The graph calls each group generator (not the ParameterStore itself), so each is a unit:
    # its store is gathered for its call and sharded again after; the root takes the rest.
    for generator in shared.ssnfx.children():
        fully_shard(generator, mesh=mesh)
    fully_shard(shared, mesh=mesh)
    store = shared.ssnfx.g0.store
    assert isinstance(store, DTensor)
    local = store.to_local().numel()
    with warnings.catch_warnings():
        # FSDP2 warns that the generators return views (unbind of one weight batch), in case
        # they are changed in place: the graph never writes to a generated weight.
        warnings.filterwarnings("ignore", message=".*returned a view tensor")
        _train(shared, shared.parameters(), rank, world)
    state = {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
             for n, p in shared.named_parameters()}
    state["local_store_numel"] = torch.tensor(local)
    return state


def _training_task(rank: int, world: int, out: str) -> None:
    jit = functools.partial(_ddp, generation="jit")
    for name, run in (("ddp", _ddp), ("fsdp", _fsdp), ("ddp_jit", jit)):
        try:
            state = run(rank, world)
        except Exception:  # reported by the test that needs it; the other still runs
            Path(f"{out}/{name}{rank}.err").write_text(traceback.format_exc())
            continue
        torch.save(state, f"{out}/{name}{rank}.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One launch of 2 ranks trains with DDP, then with FSDP (one process start for both)."""
    out = tmp_path_factory.mktemp("training")
    launch(_training_task, out)
    return out


def _ranks(out: Path, name: str) -> list[dict[str, torch.Tensor]]:
    for rank in range(WORLD):
        err = out / f"{name}{rank}.err"
        if err.exists():
            pytest.fail(f"{name} failed on rank {rank}:\n{err.read_text()}")
    return [torch.load(out / f"{name}{rank}.pt", weights_only=True) for rank in range(WORLD)]


def _single_process() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(initial, trained) state of one process on the whole batches."""
    shared = _shared_attn()
    start = {k: v.clone() for k, v in shared.state_dict().items()}
    _train(shared, shared.parameters())
    return start, shared.state_dict()


@pytest.mark.parametrize("name", ["ddp", "ddp_jit"])
def test_ddp_trains_like_one_process(trained, name):
    """DDP(shared) as is: after 4 SGD steps both ranks hold identical parameters, equal to those
    of one (batched) process on the concatenated batches within float32 rounding (atol 1e-6,
    rtol 1e-5; the all-reduce sums in another order); the store moved by far more than that.
    Just in time too: the token hands the store one gradient per step, after the backward of its
    last layer, which is when DDP's hook all-reduces it."""
    ranks = _ranks(trained, name)
    start, single = _single_process()
    assert ranks[0].keys() == single.keys()
    for k in single:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-5, atol=1e-6, msg=k)
    assert (single["ssnfx.g0.store"] - start["ssnfx.g0.store"]).abs().max() > 1e-2


def test_fsdp_shards_the_store_and_trains_like_one_process(trained):
    """fully_shard on each group generator, then the root (FSDP2, CPU + gloo): each rank holds
    half of the store, and after 4 steps the gathered parameters equal one process's on the
    concatenated batches (atol 1e-6, rtol 1e-5: the reduce-scatter averages in another order)."""
    ranks = _ranks(trained, "fsdp")
    _, single = _single_process()
    params = dict(_shared_attn().named_parameters())
    numel = params["ssnfx.g0.store"].numel()
    # Sharded along dim 0 as torch.chunk splits it: each rank holds its half.
    assert [int(r.pop("local_store_numel")) for r in ranks] == \
        [len(c) for c in torch.arange(numel).chunk(WORLD)]
    for k in params:
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-5, atol=1e-6, msg=k)
