"""The sentences under ``uno demo``'s table are said from the table's own numbers (issue 14, item 5).

They used to be fixed text; on an AMD EPYC VM it read "neither does `surgery`" under a table in which
surgery forgot digit 1 in 48 stable steps.
"""

from __future__ import annotations

from uno.unlearn.demo import DEMO_METHODS, PAPER_NOTE, explanation


def _rows(**stable):
    step = {"retain-hat": 0.0177, "uno": 0.0326, "surgery": 0.0152, "uno-hat": 0.0541}
    return [
        {"method": m, "stable_steps": stable.get(m.replace("-", "_")), "per_step_median_s": step[m]}
        for m in DEMO_METHODS
    ]


def test_a_method_that_forgot_is_said_to_have_forgotten():
    text = explanation(_rows(retain_hat=4, surgery=48, uno_hat=4), 100)
    assert (
        "`surgery` forgets digit 1 in 48 stable steps at 0.9x the step cost of `retain-hat`" in text
    )
    assert "plain `uno` at the paper's settings does not forget digit 1 within 100 steps" in text
    assert (
        "neither" not in text
        and "`uno-hat` (uno plus the histogram loss) forgets digit 1 in 4" in text
    )
    assert "3.1x the step cost" in text  # 54.1 / 17.7 ms
    assert "here that loss does the forgetting" in text and text.endswith(PAPER_NOTE)


def test_a_method_that_did_not_forget_is_said_not_to():
    text = explanation(_rows(retain_hat=4, uno_hat=4), 20)
    assert "`surgery` does not forget digit 1 within 20 steps" in text


def test_the_histogram_loss_conclusion_needs_the_numbers_behind_it():
    assert "loss does the forgetting" not in explanation(_rows(retain_hat=4, uno=9, uno_hat=4), 100)
    assert "loss does the forgetting" not in explanation(
        _rows(retain_hat=4), 100
    )  # uno-hat did not
    only = [r for r in _rows(uno=5) if r["method"] == "uno"]
    assert explanation(only, 100).startswith("What this means: plain `uno` at the paper's settings")
    assert explanation([], 100) == PAPER_NOTE  # no rows: nothing to say about them
