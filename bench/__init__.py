"""Benchmarks of each stage against the tool it replaces, run from the repository root as
`python -m bench.<name>` (see the Makefile's `bench` target); `bench.corpus` is the documents they share."""
