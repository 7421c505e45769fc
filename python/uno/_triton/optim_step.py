"""Triton ``optim_step``: the fused projected SGD/Adam step (spec: :mod:`uno.reference.optim_step`).

One launch per piece (the CPU interpreter cannot load through pointer tables); a fixed grid of at most
``max_programs`` programs walks the element blocks ``pid, pid + G, ...``. The coefficient phases add
each program's float64 partial sums to its own row of a ``[max_programs, K]`` scratch (launches run
in stream order), summed by the adapter: deterministic, no atomics. ``found_inf`` and ``grad_scale``
and Adam's step count are read on the device (no host synchronisation); with ``found_inf != 0`` every
load and store is masked off.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from uno import _abi as abi
from uno import _triton as cfg
from uno._triton._tiles import load_tile, tile_layout


@triton.jit
def _optim_step_kernel(
    p_ptr,  # (n_elements,) parameter piece, updated by the write phase
    g_ptr,  # (n_elements,) gradient (written only with WRITE_GRAD)
    s1_ptr,  # (n_elements,) momentum buffer / exp_avg (states: p's dtype or float32)
    s2_ptr,  # (n_elements,) exp_avg_sq
    s3_ptr,  # (n_elements,) max_exp_avg_sq
    step_ptr,  # () float32 Adam step count (already incremented)
    row_ptr,  # (K, ld) basis rows of the piece
    coef_ptr,  # (K,) float64 coefficients to subtract (write phase)
    gs_ptr,  # () float32 grad scale
    fi_ptr,  # () float32 found_inf
    part_ptr,  # (n_programs, K) float64 partial sums (coefficient phases)
    n_elements,
    ld,
    lr,
    h1,  # SGD momentum / Adam beta1
    h2,  # SGD 1 - dampening / Adam beta2
    h3,  # Adam eps
    wd,  # weight decay
    log_b1,  # Adam log(beta1) (bias corrections on the device)
    log_b2,
    K: tl.constexpr,
    K_PAD: tl.constexpr,
    CDT: tl.constexpr,  # compute dtype: float64 for float64 params, else float32
    ADAM: tl.constexpr,
    PHASE: tl.constexpr,
    PROJ_GRAD: tl.constexpr,
    PROJ_UPDATE: tl.constexpr,
    USE_ROWS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_FI: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    HAS_MOM: tl.constexpr,
    FIRST: tl.constexpr,
    NESTEROV: tl.constexpr,
    AMS: tl.constexpr,
    DECOUPLED: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    kk, kmask, row_off, cols = tile_layout(ld, K, K_PAD, BLOCK_SIZE)
    ok = cols >= 0
    if HAS_FI:
        ok = tl.load(fi_ptr + cols * 0) == 0  # every lane reads the one flag

    y = tl.zeros([K_PAD], dtype=tl.float64)
    if USE_ROWS and PHASE == 0:
        y = tl.load(coef_ptr + kk, mask=kmask, other=0.0).to(tl.float64)
    # A non-finite coefficient (y - y is nan for nan and inf) is not projected out: the write phase
    # then stores the stock step (the reference's rule), decided here on the device.
    coef_ok = tl.sum(((y - y) != 0.0).to(tl.int32), axis=0) == 0
    scale = 1.0
    if HAS_SCALE:
        scale = tl.load(gs_ptr).to(CDT)
    step_size = 0.0
    bc2_sqrt = 1.0
    if ADAM:
        st = tl.load(step_ptr).to(tl.float64)
        step_size = (lr / (1.0 - tl.exp(st * log_b1))).to(CDT)
        bc2_sqrt = tl.sqrt(1.0 - tl.exp(st * log_b2)).to(CDT)
    acc = tl.zeros([K_PAD, BLOCK_SIZE], dtype=tl.float64)
    n_blocks = tl.cdiv(n_elements, BLOCK_SIZE)
    for b in range(pid, n_blocks, nprog):
        offs = b * BLOCK_SIZE + cols
        m = (offs < n_elements) & ok
        tile = tl.zeros([K_PAD, BLOCK_SIZE], dtype=tl.float64)
        if USE_ROWS:
            tile = load_tile(row_ptr, row_off, offs, kmask, m)
        graw = tl.load(g_ptr + offs, mask=m, other=0.0)
        if PHASE == 1:
            acc += tile * graw.to(tl.float64)[None, :]
        else:
            if PROJ_GRAD:
                gp = graw.to(tl.float64) - tl.sum(tile * y[:, None], axis=0)
                g = gp.to(g_ptr.dtype.element_ty).to(CDT)  # rounded once to the grad's dtype
                g = tl.where(coef_ok, g, graw.to(CDT))
            else:
                g = graw.to(CDT)
            if HAS_SCALE:
                g = g / scale
            if WRITE_GRAD and PHASE == 0:
                tl.store(g_ptr + offs, g.to(g_ptr.dtype.element_ty), mask=m)
            p = tl.load(p_ptr + offs, mask=m, other=0.0).to(CDT)
            d = g
            if MAXIMIZE:
                d = -g
            if not ADAM:
                d = d + wd * p
                if HAS_MOM:
                    if FIRST:
                        buf = d
                    else:
                        buf = tl.load(s1_ptr + offs, mask=m, other=0.0).to(CDT) * h1 + h2 * d
                    if PHASE == 0:
                        tl.store(s1_ptr + offs, buf.to(s1_ptr.dtype.element_ty), mask=m)
                    if NESTEROV:
                        d = d + h1 * buf
                    else:
                        d = buf
                u = -lr * d
                pnew = p + u
            else:
                pd = p
                ud = p * 0.0
                if DECOUPLED:
                    pd = p * (1.0 - lr * wd)
                    ud = -(lr * wd) * p
                else:
                    d = d + wd * p
                mo = tl.load(s1_ptr + offs, mask=m, other=0.0).to(CDT)
                mo = mo + (1.0 - h1) * (d - mo)
                v = tl.load(s2_ptr + offs, mask=m, other=0.0).to(CDT) * h2 + (1.0 - h2) * d * d
                vh = v
                if AMS:
                    vh = tl.maximum(tl.load(s3_ptr + offs, mask=m, other=0.0).to(CDT), v)
                if PHASE == 0:
                    tl.store(s1_ptr + offs, mo.to(s1_ptr.dtype.element_ty), mask=m)
                    tl.store(s2_ptr + offs, v.to(s2_ptr.dtype.element_ty), mask=m)
                    if AMS:
                        tl.store(s3_ptr + offs, vh.to(s3_ptr.dtype.element_ty), mask=m)
                denom = tl.sqrt(vh) / bc2_sqrt + h3
                upd = -step_size * (mo / denom)
                u = ud + upd
                pnew = pd + upd
            if PHASE == 2:
                acc += tile * u.to(tl.float64)[None, :]
            else:
                if PROJ_UPDATE:
                    pw = p.to(tl.float64) + u.to(tl.float64) - tl.sum(tile * y[:, None], axis=0)
                    pw = tl.where(
                        coef_ok, pw.to(p_ptr.dtype.element_ty), pnew.to(p_ptr.dtype.element_ty)
                    )
                    tl.store(p_ptr + offs, pw, mask=m)
                else:
                    tl.store(p_ptr + offs, pnew.to(p_ptr.dtype.element_ty), mask=m)
    if PHASE != 0:
        pc = part_ptr + pid * K + kk
        tl.store(pc, tl.load(pc, mask=kmask, other=0.0) + tl.sum(acc, axis=1), mask=kmask)


def _check(params: Sequence[Tensor], s1: Sequence[Tensor], rows: Sequence[Tensor]) -> None:
    pd = params[0].dtype
    cfg.check_dtypes(pd, rows[0].dtype if len(rows) else pd)
    if len(s1):
        cfg.check_dtypes(pd, s1[0].dtype)


def optim_step(a: abi.StepArgs) -> Tensor:
    """The Triton kernels, one launch per piece (same arguments and result as the spec)."""
    abi.check_no_pending(a.flags, "triton")
    params, grads, state1, state2, state3 = a.params, a.grads, a.state1, a.state2, a.state3
    steps, rows, coef, phase, flags = a.steps, a.rows, a.coef, a.phase, a.flags
    _check(params, state1, rows)
    device = params[0].device
    k = int(rows[0].shape[0]) if len(rows) else 0
    adam = a.kind == abi.KIND_ADAM
    n_programs = cfg.max_programs(device)
    part = torch.zeros(n_programs, max(k, 1), dtype=torch.float64, device=device)
    if phase == abi.PHASE_GRAD_COEF and k == 0:
        return part[0, :0]
    use_rows = k > 0 and (phase != abi.PHASE_WRITE or coef is not None)
    proj_update = bool(flags & abi.FLAG_PROJECT_UPDATE)
    c64 = (
        coef.to(device=device, dtype=torch.float64).contiguous()
        if coef is not None and use_rows
        else part
    )
    gs = None if a.grad_scale is None else a.grad_scale.to(device=device, dtype=torch.float32)
    fi = None if a.found_inf is None else a.found_inf.to(device=device, dtype=torch.float32)
    h = [float(x) for x in a.hyper]
    if adam:
        lr, h1, h2, h3, wd = h[:5]
        log_b1 = math.log(h1) if h1 > 0 else -math.inf
        log_b2 = math.log(h2) if h2 > 0 else -math.inf
    else:
        lr, h1, damp, wd = h[:4]
        h2, h3, log_b1, log_b2 = 1.0 - damp, 0.0, 0.0, 0.0
    kp = cfg.k_pad(max(k, 1))
    block = cfg.block_size(kp)
    cdt = tl.float64 if params[0].dtype == torch.float64 else tl.float32
    has_mom = (not adam) and len(state1) > 0
    with cfg.device_guard(device):
        for t, (p, g) in enumerate(zip(params, grads)):
            n = p.numel()
            if n == 0:
                continue
            r = rows[t] if use_rows else p
            grid = (min(triton.cdiv(n, block), n_programs),)
            _optim_step_kernel[grid](
                p,
                g,
                state1[t] if len(state1) else p,
                state2[t] if len(state2) else p,
                state3[t] if len(state3) else p,
                steps[t] if len(steps) else part,
                r,
                c64,
                gs if gs is not None else part,
                fi if fi is not None else part,
                part,
                n,
                r.stride(0) if use_rows else 0,
                lr,
                h1,
                h2,
                h3,
                wd,
                log_b1,
                log_b2,
                K=max(k, 1),
                K_PAD=kp,
                CDT=cdt,
                ADAM=adam,
                PHASE=phase,
                PROJ_GRAD=use_rows and phase == abi.PHASE_WRITE and not proj_update,
                PROJ_UPDATE=use_rows and phase == abi.PHASE_WRITE and proj_update,
                USE_ROWS=use_rows,
                HAS_SCALE=gs is not None,
                HAS_FI=fi is not None,
                WRITE_GRAD=bool(flags & abi.FLAG_WRITE_GRAD),
                HAS_MOM=has_mom,
                FIRST=bool(flags & abi.FLAG_FIRST),
                NESTEROV=bool(flags & abi.FLAG_NESTEROV),
                AMS=adam and bool(flags & abi.FLAG_AMSGRAD),
                DECOUPLED=adam and bool(flags & abi.FLAG_DECOUPLED),
                MAXIMIZE=bool(flags & abi.FLAG_MAXIMIZE),
                BLOCK_SIZE=block,
                num_warps=cfg.num_warps(kp, block),
            )
    if phase == abi.PHASE_WRITE:
        return part[0, :0]
    return part[:, :k].sum(0)


__all__ = ["_optim_step_kernel", "optim_step"]
