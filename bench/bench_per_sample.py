"""``uno bench per-sample`` (python/uno/bench/per_sample.py) appending to bench/results/per_sample.csv (``--help``)."""

from pathlib import Path

from uno.bench import per_sample

if __name__ == "__main__":
    raise SystemExit(
        per_sample.main(default_csv=Path(__file__).parent / "results" / "per_sample.csv")
    )
