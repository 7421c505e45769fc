# Type stub for the compiled core (csrc/). Kernel functions are registered by the files in csrc/cpu and
# csrc/cuda (see docs/kernels.md for their arguments); they are looked up dynamically by the adapters.
from typing import Any

__version__: str
with_cuda: bool
cuda_archs: str
registered: list[str]

def hardware_concurrency() -> int: ...
def __getattr__(name: str) -> Any: ...
