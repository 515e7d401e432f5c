"""Benchmarks: runstate and the tools its users would otherwise pick, side by side in one run.

`python -m bench.library` measures library mode (see QUALITY.md §1); results go to
`bench/results/`.
"""
