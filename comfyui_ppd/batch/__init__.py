"""Batch depth for whole datasets: input expansion, a prefetching single-machine runner, a Ray Data job."""
