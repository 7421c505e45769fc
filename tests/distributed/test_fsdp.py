"""uno's ops and projected optimizers on FSDP2 (DTensor) shards, 2 gloo ranks, against one process.

The scenarios run in spawned processes (tests/distributed/scenarios.py); each rank compares its own
shard with the single-process computation on the unsharded tensors and counts the bytes that
``torch.distributed.all_reduce`` carried. Byte counts per call, k basis vectors, float64 partial sums:
``inner`` 8·(k+1), with the Gram 8·(k+1+k(k+1)/2), the Gram alone 8·k(k+1)/2, ``project`` 8·(k+1),
one projected optimizer step 8·k.
"""

from __future__ import annotations

from typing import Any, Dict, List

import pytest

from distributed.launch import scenario

F64_TOL = 1e-12


def tri(k: int) -> int:
    return k * (k + 1) // 2


@pytest.mark.parametrize("name,k", [("ops_f64", 3), ("ops_f32", 3)])
def test_orthonormalize_and_project(ranks: List[Dict[str, Any]], name: str, k: int) -> None:
    tol = F64_TOL if name == "ops_f64" else 1e-6  # float32: the reduction order's rounding
    for res in scenario(ranks, name):
        assert res["grad_err"] == 0.0  # FSDP2's gradients are the single-process ones
        assert res["orth_k"] == [k, k]
        assert res["orth_err"] <= tol
        # CholeskyQR2: the Gram of the vectors and the Gram of Q1; the second transform was not
        # needed (within pass_tol), so no third reduction
        assert res["orth_bytes"] == [8 * tri(k)] * 2
        assert res["project_err"] <= tol
        assert res["project_bytes"] == [8 * (k + 1)] * 2  # coefficients, then the fused re-measure
        assert res["orth_other"] == [] and res["project_other"] == []  # nothing is gathered
        assert res["raw_err"] <= tol
        assert res["raw_bytes"] == [8 * (k + 1 + tri(k)), 8 * (k + 1)]


@pytest.mark.parametrize("name", ["ops_f64", "ops_f32"])
def test_dot_gram_cos2(ranks: List[Dict[str, Any]], name: str) -> None:
    k = 3
    for res in scenario(ranks, name):
        assert max(res["reduce_err"]) <= (F64_TOL if name == "ops_f64" else 1e-9)
        # dot: [<b, a>, |a|²]; gram(Basis) and gram(vectors): the Gram alone; cos2: 3 numbers
        assert res["reduce_bytes"] == [16, 8 * tri(k), 8 * tri(k), 24]


def test_append_takes_the_same_branches(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "ops_f64"):
        dist_added, ref_added = res["append"]
        assert dist_added == ref_added == [True, True, False, True]  # the combination is dropped
        assert res["append_err"] <= F64_TOL
        # per pass 8·(k+1); the vector inside the span needs the second Gram-Schmidt pass
        assert res["append_bytes"] == [[16], [16, 16], [24, 24, 24], [24, 24]]


def test_replicated_pieces_count_once(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "replicated"):
        assert res["gram_err"] <= 1e-12 and res["dot_err"] <= 1e-12
        assert res["project_err"] <= F64_TOL
        assert res["project_bytes"] == [24, 24]


@pytest.mark.parametrize(
    "name",
    [
        "adam_update_conv",
        "adam_grad_conv",
        "adam_update_mlp",
        "sgd_grad_mlp",
        "adam_replicated",  # Shard(0) and Replicate() parameters: replicated ones count once
        "sgd_replicated",
        "adam_replicated_no_grad",  # a parameter without .grad: the restricted basis, distributed
    ],
)
def test_projected_optimizer_20_steps(ranks: List[Dict[str, Any]], name: str) -> None:
    for res in scenario(ranks, name):
        assert res["moved"] > 1e-2  # the parameters did move
        assert res["err"] <= F64_TOL
        first = [[]] if name != "adam_replicated_no_grad" else [[8 * 3, 8 * 3]]
        # the basis restricted to the parameters with a gradient is made once (cached): the two
        # Grams of CholeskyQR2 (k = 2: 3 numbers each)
        assert [b[:-1] for b in res["step_bytes"][:1]] == first
        # then every step: one all_reduce of the k = 2 coefficients
        assert [b[-1:] for b in res["step_bytes"]] == [[16]] * 20
        assert res["step_bytes"][1:] == [[16]] * 19
        assert res["state_is_dtensor"]  # states are DTensors like torch.optim's under FSDP2


def test_functional_forms(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "functional"):
        assert res["err"] <= F64_TOL
        assert res["bufs_are_dtensors"]  # new momentum buffers are made like the parameters


def test_bad_input_is_a_clear_error(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "errors"):
        assert res["mixed"].startswith("TypeError: grad mixes DTensor and plain tensor pieces")
        assert res["meshes"].startswith("ValueError: a has pieces on different device meshes")
        assert res["plain_basis"].startswith("TypeError: basis was built over plain tensors")
        assert res["dist_basis_plain_grad"].startswith("TypeError: basis was built over DTensors")
        assert res["per_sample"].startswith("TypeError: uno.per_sample does not support DTensor")
        assert res["partial"].startswith("ValueError: a[0] has placement P(sum)")
        assert "uno takes Shard and Replicate pieces only" in res["partial"]
        assert res["misplaced_grad"].startswith("ValueError: grad 0 is placed (Replicate(),)")
        assert res["optim_plain_basis"].startswith(
            "TypeError: the parameters are DTensors but the basis was built over plain tensors"
        )
        assert res["untouched"]


def test_bench_naive_baseline_computes_the_same(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "bench_baseline"):
        assert res["moved"] > 1e-3  # the projection changed the gradient
        assert res["diff"] <= 1e-14
        # 2 ranks × the largest packed shard: (1 + k) · (4·5 + 2 + 1·4 + 3·2) float64 elements
        assert res["bytes"] == 2 * 3 * 32 * 8


def test_a_nan_on_one_rank_leaves_every_shard_untouched(ranks: List[Dict[str, Any]]) -> None:
    for res in scenario(ranks, "nonfinite"):
        assert res["untouched"]
        assert res["bytes"] == [16]  # pass A only (k = 1): the decision is taken on the sum
