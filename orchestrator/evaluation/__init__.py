"""Judging a steerable model: Pareto metrics (hypervolume, inner product, sparsity, spacing), the
front over a λ grid, how methods without a λ per row answer a grid, and the reports people read
(front, comparison, sweep, SIPO rounds). Imports algorithms/ and below."""
