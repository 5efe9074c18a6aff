"""Importing this module before numpy gives the process one BLAS/OpenMP thread (unless the
environment already sets a count).

Serving processes (the engine, the API) run one request per thread, as Vespa runs a query on one
thread by default: concurrency comes from concurrent requests. Multi-threaded BLAS inside each
request only adds threads that spin while waiting: on the 2-core machine the engine's CPU per
personalized query fell from 85 ms to 29 ms with one BLAS thread (docs/serving-latency.md).
The entry points import this first; it has no effect once numpy is loaded.
"""

from __future__ import annotations

import os

MATH_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

for _name in MATH_THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")
