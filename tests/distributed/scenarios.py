"""What the 2-rank tests run on every rank (tests/distributed/launch.py spawns them).

Each scenario builds the same small model on every rank (same seed), shards it with FSDP2
(``fully_shard``, uneven first dimensions) or wraps it in DDP, runs a uno op or optimizer on the
sharded tensors, and compares this rank's shard with the single-process computation on the unsharded
tensors (done on every rank, deterministic). It returns plain numbers (errors, collective byte counts,
branch decisions) that the tests assert on; an exception is recorded as its traceback so that one
failing scenario does not hide the others.
"""

from __future__ import annotations

import contextlib
import copy
import traceback
from typing import Any, Callable, Dict, Iterator, List, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

import uno

F64 = torch.float64
_COLLECTIVES = ("all_gather", "all_gather_into_tensor", "broadcast", "reduce_scatter_tensor")


@contextlib.contextmanager
def counting() -> Iterator[Dict[str, List[Any]]]:
    """Record the bytes of every ``torch.distributed.all_reduce`` (and the names of other
    collectives) called inside the block."""
    rec: Dict[str, List[Any]] = {"all_reduce": [], "other": []}
    saved = {n: getattr(dist, n) for n in ("all_reduce", *_COLLECTIVES)}

    def all_reduce(t: Tensor, *a: Any, **kw: Any) -> Any:
        rec["all_reduce"].append(t.numel() * t.element_size())
        return saved["all_reduce"](t, *a, **kw)

    def other(name: str) -> Callable[..., Any]:
        def f(*a: Any, **kw: Any) -> Any:
            rec["other"].append(name)
            return saved[name](*a, **kw)

        return f

    dist.all_reduce = all_reduce
    for n in _COLLECTIVES:
        setattr(dist, n, other(n))
    try:
        yield rec
    finally:
        for n, f in saved.items():
            setattr(dist, n, f)


def shard_of(full: Tensor, like: DTensor) -> Tensor:
    """This rank's shard of ``full`` placed like ``like`` (no communication)."""
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


def as_dt(full: Tensor, like: DTensor) -> DTensor:
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)


def rel_err(local: Sequence[Tensor], full: Sequence[Tensor], like: Sequence[DTensor]) -> float:
    """max |local − shard(full)| over this rank's elements, relative to max |full|."""
    scale = max(float(f.detach().abs().max()) for f in full if f.numel()) or 1.0
    err = 0.0
    for loc, f, d in zip(local, full, like):
        s, loc = shard_of(f.detach(), d), loc.detach()
        if s.numel():
            err = max(err, float((loc.to(F64) - s.to(F64)).abs().max()))
    return err / scale


def mlp() -> nn.Module:
    # first dims 7 and 3: uneven shards on 2 ranks (4 + 3, 2 + 1)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def convnet() -> nn.Module:
    # conv weights (5, 3, 3, 3) and (3, 5, 3, 3), a (3, 48) head: uneven shards everywhere
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(5, 3, 3),
        nn.Flatten(),
        nn.Linear(48, 3),
    )


def sharded(make: Callable[[], nn.Module], dtype: torch.dtype, mesh: Any) -> tuple:
    """(reference model, its FSDP2 copy): the same initial weights on every rank."""
    torch.manual_seed(0)
    ref = make().to(dtype)
    model = copy.deepcopy(ref)
    for m in model:
        if any(True for _ in m.parameters()):
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return ref, model


def backward(model: nn.Module, x: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()


def random_vectors(params: Sequence[Tensor], k: int, seed: int) -> List[List[Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params] for _ in range(k)]


# -- scenarios -------------------------------------------------------------------------------------
def s_ops(mesh: Any, dtype: torch.dtype = F64, k: int = 3) -> Dict[str, Any]:
    """project_ (Basis and raw vectors), orthonormalize, Basis.append_, dot/gram/cos2 on the
    FSDP2 gradients of an MLP."""
    ref, model = sharded(mlp, dtype, mesh)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    backward(ref, x)
    backward(model, x)
    ps = list(model.parameters())
    g_ref = [p.grad.clone() for p in ref.parameters()]
    g_dt = [p.grad for p in ps]
    out: Dict[str, Any] = {"grad_err": rel_err([g.to_local() for g in g_dt], g_ref, ps)}
    vecs = random_vectors(g_ref, k, seed=2)
    vecs_dt = [[as_dt(v, p) for v, p in zip(vec, ps)] for vec in vecs]

    with counting() as c:
        basis = uno.orthonormalize(vecs_dt)
    basis_ref = uno.orthonormalize(vecs)
    out["orth_bytes"], out["orth_other"] = c["all_reduce"], c["other"]
    out["orth_k"] = [basis.k, basis_ref.k]
    out["orth_err"] = max(
        rel_err([t.to_local() for t in basis.vector(j)], basis_ref.vector(j), ps)
        for j in range(basis.k)
    )

    g0 = [g.clone() for g in g_dt]
    with counting() as c:
        uno.project_(g_dt, basis)
    pr = [g.clone() for g in g_ref]
    uno.project_(pr, basis_ref)
    out["project_bytes"], out["project_other"] = c["all_reduce"], c["other"]
    out["project_err"] = rel_err([g.to_local() for g in g_dt], pr, ps)

    raw = [[g.clone() for g in g0], [g.clone() for g in g_ref]]
    with counting() as c:
        uno.project_(raw[0], vecs_dt)
    uno.project_(raw[1], vecs)
    out["raw_bytes"] = c["all_reduce"]
    out["raw_err"] = rel_err([g.to_local() for g in raw[0]], raw[1], ps)

    with counting() as c:
        d = uno.dot(g0, vecs_dt[0])
        gm = uno.gram(basis)
        gv = uno.gram(vecs_dt)
        c2 = uno.cos2(g0, vecs_dt[1])
    out["reduce_bytes"] = c["all_reduce"]
    refs = [
        uno.dot(g_ref, vecs[0]),
        uno.gram(basis_ref),
        uno.gram(vecs),
        uno.cos2(g_ref, vecs[1]),
    ]
    out["reduce_err"] = [
        float((a - b).abs().max() / b.abs().max()) for a, b in zip([d, gm, gv, c2], refs)
    ]

    # append_: two vectors, a combination of them (dropped on every rank), a third
    b_dt = uno.Basis.empty(g0, capacity=1)
    b_ref = uno.Basis.empty(g_ref, capacity=1)
    dep = [0.5 * a - 2.0 * b for a, b in zip(vecs[0], vecs[1])]
    added, added_ref, counts = [], [], []
    for v in (vecs[0], vecs[1], dep, vecs[2]):
        with counting() as c:
            added.append(b_dt.append_([as_dt(t, p) for t, p in zip(v, ps)]))
        counts.append(c["all_reduce"])
        added_ref.append(b_ref.append_(v))
    out["append"] = [added, added_ref]
    out["append_bytes"] = counts
    out["append_err"] = max(
        rel_err([t.to_local() for t in b_dt.vector(j)], b_ref.vector(j), ps) for j in range(b_dt.k)
    )
    return out


def s_replicated(mesh: Any) -> Dict[str, Any]:
    """A vector with Shard(0) and Replicate() pieces: replicated elements count once."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (7,), (3,)]
    full_g = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
    placements = [[Shard(0)], [Replicate()], [Shard(0)]]
    g = [distribute_tensor(t, mesh, pl, src_data_rank=None) for t, pl in zip(full_g, placements)]
    vecs = [[torch.randn(s, generator=gen, dtype=F64) for s in shapes] for _ in range(2)]
    vecs_dt = [[as_dt(v, d) for v, d in zip(vec, g)] for vec in vecs]
    basis, basis_ref = uno.orthonormalize(vecs_dt), uno.orthonormalize(vecs)
    out: Dict[str, Any] = {
        "gram_err": float((uno.gram(basis) - uno.gram(basis_ref)).abs().max()),
        "dot_err": abs(float(uno.dot(g, vecs_dt[0]) - uno.dot(full_g, vecs[0]))),
    }
    ref = [t.clone() for t in full_g]
    uno.project_(ref, basis_ref)
    with counting() as c:
        uno.project_(g, basis)
    out["project_err"] = rel_err([t.to_local() for t in g], ref, g)
    out["project_bytes"] = c["all_reduce"]
    return out


def s_optim(mesh: Any, make: Callable[[], nn.Module], opt: str, project: str) -> Dict[str, Any]:
    """20 projected steps on an FSDP2 model against the same steps on the unsharded model."""
    ref, model = sharded(make, F64, mesh)
    ps, ps_ref = list(model.parameters()), list(ref.parameters())
    vecs = random_vectors(ps_ref, 2, seed=4)
    basis_ref = uno.orthonormalize(vecs)
    basis = uno.orthonormalize([[as_dt(v, p) for v, p in zip(vec, ps)] for vec in vecs])
    if opt == "adam":
        o = uno.optim.ProjectedAdam(ps, lr=1e-2, project=project, basis=basis)
        o_ref = uno.optim.ProjectedAdam(ps_ref, lr=1e-2, project=project, basis=basis_ref)
    else:
        o = uno.optim.ProjectedSGD(ps, lr=0.1, momentum=0.9, project=project, basis=basis)
        o_ref = uno.optim.ProjectedSGD(
            ps_ref, lr=0.1, momentum=0.9, project=project, basis=basis_ref
        )
    init = [p.detach().clone() for p in ps_ref]
    shape = (4, 5) if make is mlp else (2, 3, 6, 6)
    step_bytes = []
    for step in range(20):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(100 + step), dtype=F64)
        backward(ref, x)
        backward(model, x)
        with counting() as c:
            o.step()
        o_ref.step()
        step_bytes.append(c["all_reduce"] + c["other"])
    moved = max(float((p.detach() - q).abs().max()) for p, q in zip(ps_ref, init))
    return {
        "err": rel_err([p.to_local() for p in ps], [p.detach() for p in ps_ref], ps),
        "moved": moved,
        "step_bytes": step_bytes,
        "state_is_dtensor": all(
            isinstance(s, DTensor) for p in ps for n, s in o.state[p].items() if n != "step"
        ),
    }


def s_optim_replicated(mesh: Any, opt: str, no_grad: int = -1) -> Dict[str, Any]:
    """Parameters with Shard(0) and Replicate() placements (gradients set by hand): 20 steps;
    parameter ``no_grad`` (if any) never has a gradient (the basis is restricted to the others)."""
    gen = torch.Generator().manual_seed(7)
    shapes, placements = [(7, 5), (7,), (3, 2)], [[Shard(0)], [Replicate()], [Replicate()]]
    full = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
    ps = [
        nn.Parameter(distribute_tensor(t.clone(), mesh, pl, src_data_rank=None))
        for t, pl in zip(full, placements)
    ]
    ps_ref = [nn.Parameter(t.clone()) for t in full]
    vecs = random_vectors(full, 2, seed=8)
    basis_ref = uno.orthonormalize(vecs)
    basis = uno.orthonormalize([[as_dt(v, p) for v, p in zip(vec, ps)] for vec in vecs])
    if opt == "adam":
        o = uno.optim.ProjectedAdam(ps, lr=1e-2, project="update", basis=basis)
        o_ref = uno.optim.ProjectedAdam(ps_ref, lr=1e-2, project="update", basis=basis_ref)
    else:
        o = uno.optim.ProjectedSGD(ps, lr=0.1, momentum=0.9, project="grad", basis=basis)
        o_ref = uno.optim.ProjectedSGD(
            ps_ref, lr=0.1, momentum=0.9, project="grad", basis=basis_ref
        )
    step_bytes = []
    for _ in range(20):
        for i, (p, q) in enumerate(zip(ps, ps_ref)):
            q.grad = torch.randn(q.shape, generator=gen, dtype=F64) if i != no_grad else None
            p.grad = as_dt(q.grad, p) if i != no_grad else None
        with counting() as c:
            o.step()
        o_ref.step()
        step_bytes.append(c["all_reduce"])
    return {
        "err": rel_err([p.to_local() for p in ps], [p.detach() for p in ps_ref], ps),
        "moved": max(float((p.detach() - t).abs().max()) for p, t in zip(ps_ref, full)),
        "step_bytes": step_bytes,
        "state_is_dtensor": True,
    }


def s_functional(mesh: Any) -> Dict[str, Any]:
    """project_adam_ and project_sgd_ (new momentum buffers) on FSDP2 parameter lists, 20 steps."""
    ref, model = sharded(mlp, F64, mesh)
    ps, ps_ref = list(model.parameters()), list(ref.parameters())
    vecs = random_vectors(ps_ref, 2, seed=9)
    basis_ref = uno.orthonormalize(vecs)
    basis = uno.orthonormalize([[as_dt(v, p) for v, p in zip(vec, ps)] for vec in vecs])
    sets = []
    for params in (ps, ps_ref):
        with torch.no_grad():
            m = [torch.zeros_like(p) for p in params]
            v = [torch.zeros_like(p) for p in params]
        steps = [torch.zeros((), dtype=torch.float32) for _ in params]
        bufs: List[Any] = [None] * len(params)
        sets.append((params, m, v, steps, bufs))
    for step in range(20):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(300 + step), dtype=F64)
        backward(ref, x)
        backward(model, x)
        with torch.no_grad():
            for (params, m, v, steps, bufs), b in zip(sets, (basis, basis_ref)):
                grads = [p.grad for p in params]
                uno.project_adam_(
                    params, grads, m, v, [], steps, lr=1e-2, basis=b, project="update"
                )
                uno.project_sgd_(params, grads, bufs, lr=1e-2, momentum=0.9, basis=b)
    return {
        "err": rel_err([p.to_local() for p in ps], [p.detach() for p in ps_ref], ps),
        "bufs_are_dtensors": all(isinstance(b, DTensor) for b in sets[0][4]),
    }


def s_bench_baseline(mesh: Any) -> Dict[str, Any]:
    """uno bench dist's naive baseline (all-gather, project, keep the shard) computes what
    uno.project_ computes on the shards."""
    from uno.bench.dist import naive_project

    gen = torch.Generator().manual_seed(10)
    shapes = [(7, 5), (3,), (1, 4), (6, 2)]  # uneven, and a piece with no rows on rank 1
    full = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
    g = [distribute_tensor(t, mesh, [Shard(0)], src_data_rank=None) for t in full]
    basis = uno.orthonormalize(
        [[as_dt(torch.randn(s, generator=gen, dtype=F64), d) for s, d in zip(shapes, g)]] * 1
        + [[as_dt(torch.randn(s, generator=gen, dtype=F64), d) for s, d in zip(shapes, g)]]
    )
    h = [t.clone() for t in g]
    uno.project_(g, basis)
    nbytes = naive_project(h, basis)
    return {
        "diff": rel_err([a.to_local() for a in h], [full_of(a) for a in g], g),
        "bytes": nbytes,
        "moved": rel_err([a.to_local() for a in g], full, g),
    }


def s_nonfinite(mesh: Any) -> Dict[str, Any]:
    """A nan in one rank's shard: the reduced norm is nan on every rank, every rank leaves its
    gradient untouched (and runs the same single collective)."""
    gen = torch.Generator().manual_seed(11)
    full = [torch.randn(7, 5, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)]
    g = [distribute_tensor(t, mesh, [Shard(0)], src_data_rank=None) for t in full]
    basis = uno.orthonormalize([[as_dt(torch.randn_like(t), d) for t, d in zip(full, g)]])
    if dist.get_rank() == 1:
        g[0].to_local()[0, 0] = float("nan")
    before = [t.to_local().clone() for t in g]
    with counting() as c:
        uno.project_(g, basis)
    return {
        "untouched": all(
            bool(torch.equal(a.to_local().nan_to_num(7.0), b.nan_to_num(7.0)))
            for a, b in zip(g, before)
        ),
        "bytes": c["all_reduce"],
    }


def full_of(t: DTensor) -> Tensor:
    return t.full_tensor()


def s_errors(mesh: Any) -> Dict[str, Any]:
    """Bad input: mixed DTensor and plain pieces, different meshes, a plain Basis, per-sample."""
    gen = torch.Generator().manual_seed(5)
    a = [torch.randn(4, 3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)]
    dts = [distribute_tensor(t, mesh, [Shard(0)], src_data_rank=None) for t in a]
    other = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("other",))
    on_other = distribute_tensor(a[1], other, [Shard(0)], src_data_rank=None)
    partial = DTensor.from_local(a[1].clone(), mesh, [Partial()], run_check=False)
    p_sh = nn.Parameter(distribute_tensor(a[0].clone(), mesh, [Shard(0)], src_data_rank=None))
    p_sh.grad = distribute_tensor(a[0].clone(), mesh, [Replicate()], src_data_rank=None)

    def misplaced_grad() -> None:
        uno.optim.ProjectedSGD([p_sh], lr=0.1).step()

    def plain_basis_for_dtensor_params() -> None:
        uno.optim.ProjectedSGD([p_sh], lr=0.1, basis=uno.orthonormalize([[a[0]]]))

    cases: Dict[str, Callable[[], Any]] = {
        "partial": lambda: uno.dot([partial], [partial]),
        "misplaced_grad": misplaced_grad,
        "optim_plain_basis": plain_basis_for_dtensor_params,
        "mixed": lambda: uno.project_([dts[0], a[1].clone()], [[dts[0].clone(), a[1].clone()]]),
        "meshes": lambda: uno.dot([dts[0], on_other], [dts[0], on_other]),
        "plain_basis": lambda: uno.project_(dts, uno.orthonormalize([a])),
        "dist_basis_plain_grad": lambda: uno.project_(
            [t.clone() for t in a], uno.orthonormalize([dts])
        ),
        "per_sample": lambda: uno.per_sample.norms(
            sharded(mlp, F64, mesh)[1],
            lambda m, x: m(x).square().sum(1),
            torch.randn(3, 5, dtype=F64),
        ),
    }
    before = [t.to_local().clone() for t in dts] + [p_sh.to_local().clone()]
    out: Dict[str, Any] = {}
    for name, fn in cases.items():
        try:
            fn()
            out[name] = "no error"
        except (TypeError, ValueError) as e:
            out[name] = f"{type(e).__name__}: {e}"
    after = [t.to_local() for t in [*dts, p_sh]]
    out["untouched"] = all(bool(torch.equal(t, b)) for t, b in zip(after, before))
    return out


def s_ddp(rank: int, world: int) -> Dict[str, Any]:
    """DDP: gradients are all-reduced by DDP; the projected step is local and stays identical."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    ref = mlp().to(F64)
    model = DDP(copy.deepcopy(ref))
    ps, ps_ref = list(model.parameters()), list(ref.parameters())
    basis = uno.orthonormalize(random_vectors(ps_ref, 2, seed=6))
    o = uno.optim.ProjectedAdam(ps, lr=1e-2, project="update", basis=basis)
    o_ref = uno.optim.ProjectedAdam(ps_ref, lr=1e-2, project="update", basis=basis.clone())
    step_bytes = []
    for step in range(20):
        xs = torch.randn(
            world, 3, 5, generator=torch.Generator().manual_seed(200 + step), dtype=F64
        )
        backward(model, xs[rank])  # this rank's part of the global batch
        backward(ref, xs.reshape(-1, 5))  # the global batch, one process
        with counting() as c:
            o.step()
        o_ref.step()
        step_bytes.append(c["all_reduce"])
    flat = torch.cat([p.detach().reshape(-1) for p in ps])
    every = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(every, flat)
    ref_flat = torch.cat([p.detach().reshape(-1) for p in ps_ref])
    return {
        "max_rank_diff": max(float((e - every[0]).abs().max()) for e in every),
        "err_vs_single": float((flat - ref_flat).abs().max() / ref_flat.abs().max()),
        "step_bytes": step_bytes,
    }


def main(rank: int, world: int) -> Dict[str, Any]:
    """Every scenario, in the same order on every rank."""
    mesh = init_device_mesh("cpu", (world,))
    scenarios: Dict[str, Callable[[], Dict[str, Any]]] = {
        "ops_f64": lambda: s_ops(mesh),
        "ops_f32": lambda: s_ops(mesh, torch.float32),
        "replicated": lambda: s_replicated(mesh),
        "adam_update_conv": lambda: s_optim(mesh, convnet, "adam", "update"),
        "adam_grad_conv": lambda: s_optim(mesh, convnet, "adam", "grad"),
        "adam_update_mlp": lambda: s_optim(mesh, mlp, "adam", "update"),
        "sgd_grad_mlp": lambda: s_optim(mesh, mlp, "sgd", "grad"),
        "adam_replicated": lambda: s_optim_replicated(mesh, "adam"),
        "sgd_replicated": lambda: s_optim_replicated(mesh, "sgd"),
        "adam_replicated_no_grad": lambda: s_optim_replicated(mesh, "adam", no_grad=1),
        "functional": lambda: s_functional(mesh),
        "bench_baseline": lambda: s_bench_baseline(mesh),
        "nonfinite": lambda: s_nonfinite(mesh),
        "errors": lambda: s_errors(mesh),
        "ddp": lambda: s_ddp(rank, world),
    }
    out: Dict[str, Any] = {}
    for name, fn in scenarios.items():
        try:
            out[name] = fn()
        except Exception:  # recorded for the test that owns the scenario
            out[name] = {"error": traceback.format_exc()}
    return out
