"""DDP: gradients arrive all-reduced and replicated, so uno's local step is the global one."""

from __future__ import annotations

from typing import Any, Dict, List

from distributed.launch import scenario


def test_ddp_ranks_stay_identical(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "ddp"):
        assert res["max_rank_diff"] == 0.0  # bit-identical parameters on both ranks after 20 steps
        # the same as one process on the global batch, up to DDP's reduction order
        assert res["err_vs_single"] <= 1e-12
        assert res["step_bytes"] == [[]] * 20  # uno adds no collective under DDP
