"""Progress of a measurement: a tqdm bar in a terminal, one line per measurement elsewhere.

A bar redraws itself with carriage returns; where stderr is no terminal (CI logs, a notebook's
captured output, ``| tee``) every redraw becomes a line of its own. There a measurement prints
one line when it is done instead: what was measured and how long it took.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

__all__ = ["stderr_is_terminal", "progress"]

T = TypeVar("T")


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` is an interactive terminal (``False`` when it cannot tell)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def progress(
    items: Iterable[T], total: Optional[int], what: str, count: Callable[[T], int] = lambda item: 1, unit: str = "items"
) -> Iterator[T]:
    """Yield ``items``: under a tqdm bar (``desc=what``) when stderr is a terminal, else print one
    line to stderr after the last item: ``what: {sum of count(item)} {unit} in {seconds}s``."""
    if stderr_is_terminal():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=what, leave=False)
        return
    start, done = time.perf_counter(), 0
    for item in items:
        done += count(item)
        yield item
    print(f"{what}: {done} {unit} in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
