"""Data files shipped with uno (the embedded MNIST default; see mnist/README.md for attribution)."""
