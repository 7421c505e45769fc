"""``--parallel fsdp2``: the model's parameters sharded with FSDP2's ``fully_shard``.

Every parameter is a DTensor ``Shard(0)`` (uneven shards included) over a 1-D mesh of all ranks;
the optimizer states, the step's gradients, the projection bases and the methods' per-parameter
state are shards too. FSDP2 all-gathers parameters in module forward hooks and reduce-scatters
gradients in backward hooks that ``.backward()`` triggers; the drivers call ``encode``/``decode``
and take ``torch.autograd.grad`` (with double backward for ``uno``), where those hooks do not
fire or would act on gradients the drivers never store. So the drivers drive FSDP2 explicitly:

* the model is unsharded (``FSDPModule.unshard()``: one all-gather of the flat parameters) for all
  computing — the gradient functions, the monitoring, rank 0's measures — and the gradients are
  taken with respect to the unsharded parameters (:attr:`Sharded.full`, ``task.params``);
* the methods' sums over the ranks (:func:`uno.unlearn.parallel.sum_grads`) reduce-scatter the
  whole local gradients into this rank's shards (:meth:`Sharded.reduce_scatter`, one collective
  for all of a call's vectors and loss values), so g_f, g_r, the direction and the basis are
  DTensor shards and the uno ops and ``ProjectedAdam`` reduce k partial sums, never a gradient;
* ``uno``'s double backward all-gathers its two coefficient vectors (:meth:`Sharded.all_gather`)
  to backpropagate them through the rank's graph, and reduce-scatters the result;
* the optimizer steps the shards (``task.step_params``), then :meth:`Sharded.refresh` reshards and
  unshards again, so the next computation sees the new parameters.

FSDP2's own backward hooks still run on the module's forward (the VAE's ``loss`` goes through
it); :class:`Sharded` turns them into no-ops (no gradient sync, no reshard after backward), and its
root keeps the parameters unsharded after forward. Checkpoints gather the full state on every rank
(:meth:`Sharded.full_state`) and rank 0 writes the 1-process layout; a resume shards it again.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn.parallel.reduce import traffic
from uno.unlearn.parallel.world import World, collective


def _reduce_scatter(out: Tensor, inp: Tensor) -> None:
    import torch.distributed as dist

    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    collective(fn, out, inp, op=dist.ReduceOp.SUM)


def _all_gather(out: Tensor, inp: Tensor) -> None:
    import torch.distributed as dist

    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    collective(fn, out, inp)


class Sharded:
    """A model sharded by ``fully_shard`` over every rank, driven explicitly (module docstring).

    Attributes:
        params: the sharded parameters (DTensors): what the optimizer steps and checkpoints hold.
        full: the unsharded parameters, in the same order: what gradients are taken of.
    """

    def __init__(self, model: nn.Module, world: World) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        device = next(model.parameters()).device.type
        self.world, self.model = world, model
        self.mesh = init_device_mesh(device, (world.size,))
        fully_shard(model, mesh=self.mesh, reshard_after_forward=False)
        # uno reduces the gradients itself (reduce_scatter); FSDP2's backward hooks must neither
        # reduce-scatter nor free the unsharded parameters the next gradient's graph holds
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        model.set_reshard_after_backward(False)  # type: ignore[operator]
        # FSDP2 warns that a view output would skip its pre-backward all-gather: uno unshards first
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module", category=UserWarning)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # rows of each shard: chunks of ceil(n / N) rows (torch.chunk's), the last ones shorter
        self.rows = [-(-int(p.shape[0]) // world.size) for p in self.params]
        for p, c in zip(self.params, self.rows):  # the layout the reductions below assume
            mine = max(0, min(int(p.shape[0]), (world.rank + 1) * c) - world.rank * c)
            if int(p.to_local().shape[0]) != mine:  # type: ignore[attr-defined]
                raise RuntimeError(f"FSDP2 sharded a {tuple(p.shape)} parameter unexpectedly")
        self._unshard()
        self.full = [p for p in model.parameters() if p.requires_grad]

    def _unshard(self) -> None:
        self.model.unshard()  # type: ignore[operator]
        for p, c in zip(self.params, self.rows):
            traffic.bytes["all_gather"] += c * self.world.size * _row_numel(p) * p.element_size()

    def refresh(self) -> None:
        """After the optimizer stepped the shards: all-gather them into the unsharded parameters."""
        self.model.reshard()  # type: ignore[operator]
        self._unshard()

    def _segments(self, i: int) -> tuple[int, int, int]:
        """``(padded rows, this rank's rows, elements per row)`` of parameter ``i``."""
        p = self.params[i]
        return self.rows[i], int(p.to_local().shape[0]), _row_numel(p)  # type: ignore[attr-defined]

    def reduce_scatter(
        self, vectors: Sequence[Sequence[Tensor]], scalars: Sequence[float] = ()
    ) -> tuple[list[list[Tensor]], list[float]]:
        """This rank's shards of the ranks' sums of ``vectors`` (whole tensors shaped like
        :attr:`full`) as DTensors placed like :attr:`params`, and the summed ``scalars``; one
        reduce-scatter (each rank's segment carries the scalars, so every rank receives their sum).
        """
        n = self.world.size
        ref = vectors[0][0] if vectors and vectors[0] else self.full[0]
        parts = []  # (n, width) blocks: rank r's rows of every piece in row r
        for v in vectors:
            for i, t in enumerate(v):
                c, _, w = self._segments(i)
                flat = t.detach().reshape(-1).to(ref.dtype)
                pad = c * n * w - flat.numel()
                if pad:
                    flat = torch.cat([flat, flat.new_zeros(pad)])
                parts.append(flat.view(n, c * w))
        extra = torch.tensor([float(s) for s in scalars], dtype=ref.dtype, device=ref.device)
        parts.append(extra.expand(n, len(scalars)))
        inp = torch.cat(parts, dim=1).reshape(-1)
        out = inp.new_empty(inp.numel() // n)
        _reduce_scatter(out, inp)
        traffic.add("reduce_scatter", inp)
        at, result = 0, []
        for v in vectors:
            shards = []
            for i in range(len(v)):
                c, mine, w = self._segments(i)
                local = out[at : at + mine * w].view(mine, *self.params[i].shape[1:])
                shards.append(self._as_dtensor(local, i))
                at += c * w
            result.append(shards)
        return result, out[at:].tolist()

    def all_gather(self, vector: Sequence[Tensor]) -> list[Tensor]:
        """The whole tensors of DTensor shards ``vector`` (placed like :attr:`params`): one
        all-gather."""
        from uno.ops import _dist

        n = self.world.size
        parts = []
        for i, t in enumerate(vector):
            c, mine, w = self._segments(i)
            flat = _dist.local(t).reshape(-1)
            if mine < c:
                flat = torch.cat([flat, flat.new_zeros((c - mine) * w)])
            parts.append(flat)
        inp = torch.cat(parts)
        out = inp.new_empty(inp.numel() * n).view(n, -1)
        _all_gather(out.view(-1), inp)
        traffic.add("all_gather", out)
        whole, at = [], 0
        for i, p in enumerate(self.full):
            c, _, w = self._segments(i)
            rows = out[:, at : at + c * w].reshape(n * c, *p.shape[1:])
            whole.append(rows[: p.shape[0]].contiguous())
            at += c * w
        return whole

    def _as_dtensor(self, local: Tensor, i: int) -> Tensor:
        from torch.distributed.tensor import DTensor

        p: Any = self.params[i]
        return DTensor.from_local(  # type: ignore[no-any-return]
            local, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
        )

    def shard_like(self, t: Tensor, i: int) -> Tensor:
        """This rank's shard of the whole tensor ``t`` (the same on every rank), as a DTensor placed
        like parameter ``i`` (no communication)."""
        c, mine, _ = self._segments(i)
        lo = min(self.world.rank * c, int(t.shape[0]))
        return self._as_dtensor(t[lo : lo + mine].clone(), i)

    def model_state(self) -> dict[str, Tensor]:
        """The whole model state under ``state_dict()``'s names: the unsharded parameters and the
        persistent buffers, with no collective. (``state_dict()`` itself would return the shards and
        leave the module sharded: FSDP2's pre-save hook reshards it.)"""
        out: dict[str, Tensor] = {}
        for prefix, m in self.model.named_modules():
            pre = f"{prefix}." if prefix else ""
            for n, p in m._parameters.items():
                if p is not None:
                    out[pre + n] = p.detach()
            for n, b in m._buffers.items():
                if b is not None and n not in m._non_persistent_buffers_set:
                    out[pre + n] = b
        return out

    @staticmethod
    def full_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """``tensors`` with every DTensor gathered whole (collective: every rank calls it with the
        same keys in the same order)."""
        from uno.ops import _dist

        out = {}
        for k, v in tensors.items():
            if _dist.is_dtensor(v):
                v = v.full_tensor()  # type: ignore[attr-defined]
                traffic.add("all_gather", v)
            out[k] = v
        return out

    def restore(
        self, model: dict[str, Tensor], tensors: dict[str, Tensor], opt: Any, where: str
    ) -> None:
        """Load a 1-process checkpoint's whole model state ``model`` and optimizer ``tensors``
        (``opt.<i>.<name>``) as this rank's shards."""
        from uno.unlearn import io

        self.load_model(model, where)
        io.load_optimizer_tensors(opt, self.params, tensors)
        self.shard_optimizer(opt)

    def load_model(self, tensors: dict[str, Tensor], where: str) -> None:
        """Load whole ``tensors`` (a 1-process checkpoint's model state) into the sharded model:
        the parameters' entries as this rank's shards, the buffers as they are; then unshard."""
        from uno.unlearn import io

        self.model.reshard()  # type: ignore[operator]
        index = {id(p): i for i, p in enumerate(self.params)}
        own = dict(self.model.named_parameters())  # the sharded parameters once resharded
        state = {
            k: self.shard_like(v, index[id(own[k])]) if k in own and id(own[k]) in index else v
            for k, v in tensors.items()
        }
        io.load_state(self.model, state, where)
        self._unshard()

    def shard_optimizer(self, opt: torch.optim.Optimizer) -> None:
        """Loaded whole optimizer states (shaped like their parameter) as this rank's shards."""
        from uno.ops import _dist

        for i, p in enumerate(self.params):
            st = opt.state.get(p, {})
            for k, v in list(st.items()):
                if isinstance(v, Tensor) and not _dist.is_dtensor(v) and v.shape == p.shape:
                    st[k] = self.shard_like(v, i)


def _row_numel(p: Tensor) -> int:
    n = 1
    for s in p.shape[1:]:
        n *= int(s)
    return n
