# Type stub for the compiled core (csrc/). Kernel functions `<primitive>_<backend>` are registered by
# the files in csrc/cpu and csrc/cuda (UNO_REGISTER; see docs/kernels.md for their arguments); the
# backend modules python/uno/_backends/{cpu,cuda}.py call them.
from typing import Any

__version__: str
with_cuda: bool
cuda_archs: str
registered: list[str]
# The CPU kernels' ISA level, chosen at import (csrc/cpu/isa_table.cpp): the level that runs ("" when
# UNO_CPU_ISA could not be honoured), the built levels, those this CPU supports, whether UNO_CPU_ISA
# chose it, and why UNO_CPU_ISA could not be honoured ("" when it was, or was not set).
cpu_isa: str
cpu_isa_built: list[str]
cpu_isa_supported: list[str]
cpu_isa_forced: bool
cpu_isa_error: str

def cpu_thread_pool() -> str: ...

class _Abi:
    """_C.abi: the values of csrc/include/uno/abi.h (python/uno/_abi.py repeats them)."""

    DTYPE_CODES: dict[str, int]
    PAIRS: list[tuple[int, int]]
    def __getattr__(self, name: str) -> int: ...  # KIND_*, PHASE_*, FLAG_*

abi: _Abi

def hardware_concurrency() -> int: ...
def __getattr__(name: str) -> Any: ...
