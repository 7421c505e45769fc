"""``uno bench dist`` (python/uno/bench/dist.py) appending to bench/results/dist.csv (``--help``)."""

from pathlib import Path

from uno.bench import dist

if __name__ == "__main__":
    raise SystemExit(dist.main(default_csv=Path(__file__).parent / "results" / "dist.csv"))
