"""bench/passes.py (the inner / project passes alone): a quick run prints one line per (k, threads)."""

from __future__ import annotations

import pytest

from benches._scripts import load_bench_script


def _module():
    return load_bench_script("passes")


def test_quick_run_prints_a_line_per_k_and_thread_count(capsys):
    assert (
        _module().main(["--p", "5000", "--ks", "5", "16", "--threads", "1", "--rounds", "2"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["k=5", "k=16"]
    for line in lines:  # the copy, then each pass: a positive time, GB/s and % of the copy
        copy, *passes = line.split(" | ")
        assert float(copy.split()[-2]) > 0
        assert [p.split()[0] for p in passes] == ["inner", "project"]
        for p in passes:
            _, ms, _, gbs, _, pct = p.split()
            assert float(ms) > 0 and float(gbs) > 0 and pct.endswith("%") and int(pct[:-1]) > 0


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        _module().main(["--p", "0"])
