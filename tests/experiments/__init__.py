"""Tests of the experiments/ scripts (a package, so that test files of the same name in two folders do not collide)."""
