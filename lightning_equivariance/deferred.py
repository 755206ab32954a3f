"""Work that the measures of a chunk's layers defer to the end of the chunk, where it runs once for all layers.

A measure's per-chunk bookkeeping of a few numbers - merging the images' moments into its states, adding
its sums - costs the same handful of ATen calls whatever the layer's size: on a GPU a kernel launch each,
paid for every layer of every chunk (issue 23). Deferred, the same work runs on the layers' numbers
stacked: a handful of calls per chunk instead of per layer.

The engine hands a :class:`DeferredWork` to every context of a chunk (``LayerContext.deferred``) and
runs it after the chunk's pass (:meth:`DeferredWork.run`); a measure used on its own (no engine, no
``deferred``) does the same work at once. The engine knows no measure here: a measure defers items under
a key of its choosing, with the function that handles a list of them.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Sequence, Tuple

__all__ = ["DeferredWork"]

#: ``run(items)``: does the work of every item in one go; it must raise before changing any state, so that
#: a failure can be retried item by item (and blamed on the one that fails).
Run = Callable[[Sequence[Any]], None]


class DeferredWork:
    """Items deferred by the measures of one chunk, grouped by key, each group run once at the end."""

    def __init__(self):
        self._groups: Dict[Hashable, Tuple[Run, List[Tuple[Any, Any]]]] = {}
        #: who defers now (the engine sets it around each measure's update): a failure is reported with it
        self.owner: Any = None

    def defer(self, key: Hashable, run: Run, item: Any) -> None:
        """Run ``run(items)`` at :meth:`run` with every item deferred under ``key``, in the order deferred.
        Items of one key must be stackable together (the key says so: same shapes, same device)."""
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = (run, [])
        group[1].append((self.owner, item))

    def __len__(self) -> int:
        return sum(len(items) for _, items in self._groups.values())

    def run(self) -> List[Tuple[Any, Exception]]:
        """Run every group and empty the queue. A group that fails is run again item by item, so that one
        bad item costs only its own owner; returns ``[(owner, error)]`` of the items that failed alone."""
        groups, self._groups = self._groups, {}
        failures: List[Tuple[Any, Exception]] = []
        for run, owned in groups.values():
            try:
                run([item for _, item in owned])
            except Exception as e:  # noqa: BLE001 - retried one by one below, each failure blamed on its owner
                if len(owned) == 1:
                    failures.append((owned[0][0], e))
                    continue
                for owner, item in owned:
                    try:
                        run([item])
                    except Exception as e:  # noqa: BLE001 - reported to the caller with its owner
                        failures.append((owner, e))
        return failures

