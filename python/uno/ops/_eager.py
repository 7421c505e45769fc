"""When an op may skip the `torch.library` dispatcher and run its implementation directly.

A custom op call pays for the dispatcher's Python layers (autograd wrapper, ADInplaceOrView, the dynamo
guard) on every tensor of its lists: about 15 µs per piece, which for a model's gradient of 50-150
pieces is milliseconds — more than the kernels themselves below ~1e6 parameters. In plain eager code
nothing of that is needed: no tracing, no fake tensors, no autograd through the op, no tensor
subclasses, no modes. ``direct_ok`` says whether a call is in that situation; anything else (inside
``torch.compile``, ``opcheck``, ``vmap``, a TorchFunction/TorchDispatch mode, tensors that require grad
with grad mode on, subclasses) goes through the registered op. After a direct call the caller bumps the
version counters of the tensors it mutated, as the dispatcher would (autograd's in-place checks stay
intact).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor
from torch.nn import Parameter

_PLAIN = (Tensor, Parameter)


def _no_modes() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        if torch.compiler.is_compiling() or torch._C._is_torch_function_mode_enabled():
            return False
        if _get_current_dispatch_mode() is not None:
            return False
        return torch._C._functorch.peek_interpreter_stack() is None
    except AttributeError:  # an older/newer torch without these hooks: always use the dispatcher
        return False


def direct_ok(*tensor_lists: Iterable[Tensor]) -> bool:
    """True when an op on these tensors may run its implementation without the dispatcher."""
    if not _no_modes():
        return False
    grad_mode = torch.is_grad_enabled()
    for ts in tensor_lists:
        for t in ts:
            if type(t) not in _PLAIN or (grad_mode and t.requires_grad):
                return False
    return True


def bump_versions(tensors: Iterable[Tensor]) -> None:
    """Mark ``tensors`` as modified in place (what the dispatcher does for a mutating op)."""
    torch.autograd.graph.increment_version(list(tensors))
