"""Section `peak`: this machine's fp32 matmul GFLOP/s (torch's default threads and 1 thread), measured at the
start and at the end of the run; every throughput is also shown as a share of the best of those."""

from __future__ import annotations

import time
from typing import Any

from contrastive.bench.common import Inputs, Row, note, torch_threads
from contrastive.bench.settings import BenchPeak


def matmul_gflops(size: int, reps: int, threads: int | None = None) -> float:
    """Best fp32 GFLOP/s of `reps` torch products of two size x size matrices (at `threads` intra-op threads)."""
    import torch

    with torch_threads(threads):
        a = torch.randn(size, size)
        b = torch.randn(size, size)
        a @ b  # first touch
        best = 0.0
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            best = max(best, 2.0 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def measure(inp: Inputs, settings: BenchPeak) -> None:
    """The machine's fp32 matmul rate (best of a few products at torch's default threads, then at 1 thread)."""
    for threads in (None, 1):
        gflops = matmul_gflops(int(settings.size), int(settings.reps), threads)
        inp.peak_gflops.append(gflops)
        note(f"fp32 matmul ({threads or 'default'} threads): {gflops:.1f} GFLOP/s")


def peak_row(inp: Inputs, settings: BenchPeak, record: dict[str, Any]) -> Row:
    """The row naming the peak every share is taken of (measured at the start and the end of the run)."""
    import torch

    record["peak_gflops"] = inp.peak_gflops
    return {
        "row": "0",
        "what": f"fp32 matmul GFLOP/s of this machine, n={settings.size} "
        f"({torch.get_num_threads()} threads, 1 thread; at the start, at the end)",
        "a": ", ".join(f"{g:.1f}" for g in inp.peak_gflops),
        "quality": "the max is the 100% below",
        "peak": "100%",
    }
