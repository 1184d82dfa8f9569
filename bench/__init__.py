"""Benchmarks (DESIGN.md §6): ratios against the raw backend operation measured in the same run."""
