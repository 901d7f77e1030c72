"""The search under DistributedDataParallel: 2 CPU processes (gloo, loopback) on split batches
find the plan one process finds on the whole batches, and every rank gets the same plan."""
import json
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import ssnfx

from models import ThreeBranches, conflict_data

STEPS = 12


def _plan(data, seed=0):
    torch.manual_seed(seed)
    plan = ssnfx.search(ssnfx.trace(ThreeBranches()), 0.5, data, F.mse_loss,
                        ssnfx.ShareConfig(method="swn"),
                        ssnfx.SearchConfig(steps=STEPS, progress=False))
    return plan


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)
        half = [(x.chunk(world)[rank], y.chunk(world)[rank]) for x, y in conflict_data()]
        plan = _plan(half)
        with open(f"{out}/rank{rank}.json", "w") as f:
            f.write(plan.to_json())
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_find_the_single_process_plan(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
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
