"""bench/combine_passes.py (combine k = 16 and orthonormalize against a copy and torch qr): a quick
run prints one line per thread count with positive times, rates and a speed-up."""

from __future__ import annotations

import pytest

from benches._scripts import load_bench_script


def _module():
    return load_bench_script("combine_passes")


def test_quick_run_prints_a_line_per_thread_count(capsys):
    assert _module().main(["--p", "5000", "--threads", "1", "2", "--rounds", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["thr=1", "thr=2"]
    for line in lines:
        copy, comb, orth = line.split(" | ")
        assert float(copy.split()[-2]) > 0
        _, _, ms, _, gbs, _, pct = comb.split()
        assert float(ms) > 0 and float(gbs) > 0 and pct.endswith("%") and int(pct[:-1]) > 0
        words = orth.replace(",", "").split()
        assert words[0] == "orthonormalize" and float(words[1]) > 0
        assert words[-1].endswith("x") and float(words[-1][:-1]) > 0


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        _module().main(["--rounds", "0"])
