"""``uno bench project`` (python/uno/bench/project.py) appending to bench/results/project.csv (``--help``)."""

from pathlib import Path

from uno.bench import project

if __name__ == "__main__":
    raise SystemExit(project.main(default_csv=Path(__file__).parent / "results" / "project.csv"))
