"""``uno bench pages`` (python/uno/bench/pages.py) appending to bench/results/pages.csv (``--help``)."""

from pathlib import Path

from uno.bench import pages

if __name__ == "__main__":
    raise SystemExit(pages.main(default_csv=Path(__file__).parent / "results" / "pages.csv"))
