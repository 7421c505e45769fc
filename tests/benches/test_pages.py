"""``uno bench pages``: the 4 KiB / huge-page comparison (no timing asserted).

The quick run must measure both variants of every kernel in child processes and write their rows;
the 4 KiB child must really be kept off huge pages, and the reading of the system setting must
follow the kernel's file format.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from uno.bench import pages

pytest.importorskip("uno._backends.cpu")


def test_thp_mode_reads_the_bracketed_word(tmp_path, monkeypatch):
    f = tmp_path / "enabled"
    for text, mode in [("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
                       ("always madvise [never]", "never"), ("garbage", "absent")]:  # fmt: skip
        f.write_text(text)
        monkeypatch.setattr(pages, "THP_SYS", f)
        assert pages.thp_mode() == mode
    monkeypatch.setattr(pages, "THP_SYS", tmp_path / "missing")
    assert pages.thp_mode() == "absent"


def test_without_huge_pages_nothing_is_measured(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pages, "thp_mode", lambda: "never")
    out = tmp_path / "pages.csv"
    assert pages.main(["--quick", "--csv", str(out)]) == 0
    assert "not available" in capsys.readouterr().out
    assert not out.exists()


def _huge_kib_of_child(disable: bool) -> int:
    """AnonHugePages of a child that allocates a 64 MiB tensor with torch's huge-page switch on."""
    code = (
        "from uno.bench import pages; import torch\n"
        f"assert pages.disable_thp() if {disable} else True\n"
        "x = torch.ones(16 << 20)\n"
        "print(pages.anon_huge_kib())\n"
    )
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE="1", PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1])


@pytest.mark.skipif(pages.thp_mode() not in ("always", "madvise"), reason="no huge pages here")
def test_small_pages_child_gets_no_huge_pages():
    if _huge_kib_of_child(disable=False) == 0:  # the control: the switch must work here first
        pytest.skip("the kernel granted no huge pages to torch's THP_MEM_ALLOC_ENABLE here")
    assert _huge_kib_of_child(disable=True) == 0


@pytest.mark.skipif(pages.thp_mode() not in ("always", "madvise"), reason="no huge pages here")
def test_quick_run_measures_both_variants_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "pages.csv"
    assert pages.main(["--quick", "--rounds", "1", "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4K/huge" in text and "wrote" in text
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["kernel"].split(" (")[0] for r in rows] == ["combine", "project_ Basis"]
    for r in rows:
        assert float(r["ms_4k"]) > 0 and float(r["ms_huge"]) > 0 and float(r["speedup"]) > 0
        assert int(r["small_kib"]) == 0  # the 4 KiB child stayed on 4 KiB pages
        assert r["threads"] == "1" and r["pairs"] == "1"
    combine = rows[0]
    assert 0 < float(combine["peak_4k"]) and 0 < float(combine["peak_huge"])


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        pages.main(["--pairs", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        pages.main(["--child", "combine"])  # no --k / --threads
    assert e.value.code == 2


def test_a_failing_child_is_reported_not_raised(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pages, "thp_mode", lambda: "madvise")

    def failing(args, huge):
        raise RuntimeError("uno bench pages: the child --child combine exited 1")

    monkeypatch.setattr(pages, "_run_child", failing)
    out = tmp_path / "pages.csv"
    assert pages.main(["--quick", "--csv", str(out)]) == 1
    assert "exited 1" in capsys.readouterr().err
    assert not out.exists()
