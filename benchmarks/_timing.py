"""Shared timing helpers for the benchmark scripts."""

import time

import numpy as np


def best_time(fn, repeats=7, warmup=2):
    """Median wall time of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
