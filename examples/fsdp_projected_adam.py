"""Projected Adam on an FSDP2 model: 2 CPU ranks, uneven shards, the basis kept sharded.

    torchrun --nproc-per-node 2 examples/fsdp_projected_adam.py

Every rank holds its shards of the parameters, the gradients, Adam's states and the basis. The
projection needs only k numbers from every rank per pass (one ``all_reduce``); no gradient is gathered.
The example builds a basis from the gradients of a few "retain" batches, takes 10 steps that ascend a
"forget" loss with ``project="update"``, and checks that the parameters moved orthogonally to the
basis (the retain gradients' directions), to rounding.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import uno


def loss_on(model: nn.Module, seed: int) -> torch.Tensor:
    """A regression loss on a batch drawn from ``seed`` (each rank passes its own: data parallel)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 10, generator=g), torch.randn(16, 5, generator=g)
    return (model(x) - y).square().mean()


def main() -> None:
    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(10, 33), nn.Tanh(), nn.Linear(33, 5))  # 33 rows: uneven shards
    fully_shard(model[0], mesh=mesh)
    fully_shard(model[2], mesh=mesh)
    fully_shard(model, mesh=mesh)
    params = list(model.parameters())  # DTensors, Shard(0)

    retain = []  # k = 4 vectors, each a list of DTensor gradients (this rank's shards)
    for i in range(4):
        model.zero_grad()
        loss_on(model, seed=1000 * i + rank).backward()
        retain.append([p.grad.clone() for p in params])
    basis = uno.orthonormalize(retain)  # a distributed uno.Basis (basis.dist describes the shards)

    before = [p.detach().clone() for p in params]
    opt = uno.optim.ProjectedAdam(params, lr=1e-2, basis=basis, project="update")
    for step in range(10):
        model.zero_grad()
        (-loss_on(model, seed=50_000 + 100 * step + rank)).backward()  # ascend the forget loss
        opt.step()

    delta = [p.detach() - b for p, b in zip(params, before)]
    size = float(uno.dot(delta, delta)) ** 0.5
    along = max(abs(float(uno.dot(delta, basis.vector(j)))) for j in range(basis.k))
    if rank == 0:
        print(f"basis rank {basis.k}; |step| = {size:.3e}; largest |<step, q_j>| = {along:.1e}")
    assert along <= 1e-5 * size, "the step left the orthogonal complement of the basis"
    # Release the optimizer and the basis (which refer to the mesh) before the process group goes.
    # This does not end the rare abort at exit described in docs/distributed.md ("Known issue"):
    # torch keeps the gloo group's threads running past destroy_process_group once DTensor
    # operators ran, with or without uno objects alive.
    del opt, basis
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
