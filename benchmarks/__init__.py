"""Benchmarks: each module runs as ``python -m benchmarks.NAME``, prints a table and writes
``benchmarks/results/NAME.json`` with the command that reproduces it."""
