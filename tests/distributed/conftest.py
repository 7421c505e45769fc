"""One 2-rank gloo run of every scenario (tests/distributed/scenarios.py) shared by the tests here."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch.distributed as dist

from distributed.launch import run_ranks


@pytest.fixture(scope="session")
def ranks() -> List[Dict[str, Any]]:
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    return run_ranks("distributed.scenarios.main", world=2)
