"""One torch thread per test process: the suite runs on two processes (`pytest -n 2`) on a 2-core machine, where a
second thread per process only spins against the other process (docs/performance.md measures it)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads at import)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
