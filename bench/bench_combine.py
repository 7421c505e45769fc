"""``uno bench combine`` (python/uno/bench/combine.py) appending to bench/results/combine.csv (``--help``)."""

from pathlib import Path

from uno.bench import combine

if __name__ == "__main__":
    raise SystemExit(combine.main(default_csv=Path(__file__).parent / "results" / "combine.csv"))
