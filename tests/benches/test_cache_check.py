"""bench/cache_check.py (the roofline's project_ row, warm and with the gradient evicted): a quick run
prints one line per size with positive times, rates and the warm-over-evicted speed-up."""

from __future__ import annotations

import pytest

from benches._scripts import load_bench_script

pytest.importorskip("uno._backends.cpu")


def _module():
    return load_bench_script("cache_check")


def test_quick_run_prints_a_line_per_size(capsys):
    assert _module().main(["--p", "5000", "20000", "--flush-mb", "1", "--rounds", "2"]) == 0
    lines = [x for x in capsys.readouterr().out.strip().splitlines() if not x.startswith("#")]
    assert lines[0].split()[:2] == ["P", "ms"] and len(lines) == 3
    for line in lines[1:]:
        p, ms, gbs, copy, pct, name, cold, ratio = line.replace(",", "").split()
        assert int(p) > 0 and float(ms) > 0 and float(gbs) > 0 and float(copy) > 0 and int(pct) > 0
        assert (name, cold) == ("uno", "cold") and ratio.endswith("x") and float(ratio[:-1]) > 0


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--p", "0"], ["--flush-mb", "0"]])
def test_bad_arguments_are_refused(argv):
    with pytest.raises(SystemExit):
        _module().main(argv)
