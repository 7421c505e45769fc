"""Issue 13's campaign over uno.optim and uno.per_sample: every case of tests/audit_cases.py gives a
clear TypeError/ValueError with nothing written, or its documented result (no raw torch error, no
IndexError/AttributeError, no silent wrong answer)."""

from __future__ import annotations

import pytest

from audit_cases import CASES, outcome


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_case(case):
    got, detail = outcome(case)
    assert got == ("clean" if case.expect == "error" else "ok"), detail
