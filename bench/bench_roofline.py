"""``uno bench roofline`` (python/uno/bench/roofline.py) writing bench/results/roofline.{md,csv}
(``--help``)."""

from pathlib import Path

from uno.bench import roofline

if __name__ == "__main__":
    raise SystemExit(roofline.main(default_csv=Path(__file__).parent / "results" / "roofline.csv"))
