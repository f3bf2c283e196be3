"""Helpers for benchmark scripts: wall time and peak memory (RSS of this process and its children, sampled)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil


@dataclass
class StageResult:
    stage: str
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)


def _tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@contextmanager
def measure(stage: str, interval: float = 0.1):
    """Time a block and sample the peak RSS of this process tree (dbt runs as a child process)."""
    result = StageResult(stage)
    me = psutil.Process()
    peak = [_tree_rss(me)]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _tree_rss(me))
            except psutil.Error:
                pass
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        stop.set()
        thread.join()
        result.peak_rss_mb = peak[0] / 2**20
