"""The curve figures tell every method apart (the colour cycle alone repeats after ten lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uno.unlearn import plots


def test_line_styles_distinct_for_forty_lines() -> None:
    styles = [plots.line_style(i) for i in range(40)]
    assert len(set(styles)) == 40
    assert plots.line_style(0) != plots.line_style(10)  # the 11th method (e.g. salun after uno)


def test_curves_figure_gives_each_method_its_own_line(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {f"m{i}": [[0.1, 0.05, 0.0], [0.12, 0.04, 0.01]] for i in range(12)}
    captured = {}
    real_close = plt.close

    def keep(fig):  # read the lines before the figure is closed
        captured["lines"] = [(ln.get_color(), ln.get_linestyle()) for ln in fig.axes[0].lines]
        real_close(fig)

    plt.close = keep
    try:
        plots.save_curves(tmp_path / "c.png", curves, 0.02, title="t")
    finally:
        plt.close = real_close
    lines = captured["lines"][:12]  # then the τ line
    assert len(set(lines)) == 12
    assert (tmp_path / "c.png").stat().st_size > 0
