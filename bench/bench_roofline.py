"""``uno bench roofline`` (python/uno/bench/roofline.py) writing bench/results/roofline.{md,csv}
and the table of record in docs/kernels.md (``--help``)."""

from pathlib import Path

from uno.bench import roofline

if __name__ == "__main__":
    here = Path(__file__).parent
    raise SystemExit(
        roofline.main(
            default_csv=here / "results" / "roofline.csv",
            default_doc=here.parent / "docs" / "kernels.md",
        )
    )
