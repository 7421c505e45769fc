"""``python -m uno.bench NAME [options]``: the same benchmarks as ``uno bench NAME``."""

from uno.bench import main

raise SystemExit(main())
