"""``uno bench optim`` (python/uno/bench/optim.py) appending to bench/results/optim.csv (``--help``)."""

from pathlib import Path

from uno.bench import optim

if __name__ == "__main__":
    raise SystemExit(optim.main(default_csv=Path(__file__).parent / "results" / "optim.csv"))
