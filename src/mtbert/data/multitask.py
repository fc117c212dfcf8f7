"""DeepPavlov's multitask batches: the i-th batch of every task side by side, None where a task ran out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def multitask_batches(datasets: Iterable[Iterable], batch_size: int) -> Iterator[list[tuple]]:
    """Yield batches of tuples, one element per dataset, until the longest dataset is used up.

    This is the iterator DeepPavlov's multitask documentation describes: with inputs [0..6] and [7, 8, 9]
    and batch size 2 it yields [(0, 7), (1, 8)], [(2, 9), (3, None)], [(4, None), (5, None)], [(6, None)].
    Shorter datasets are padded with None, not repeated, so no example is seen twice in a pass.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    columns = [list(d) for d in datasets]
    longest = max((len(c) for c in columns), default=0)
    for start in range(0, longest, batch_size):
        yield [tuple(c[i] if i < len(c) else None for c in columns)
               for i in range(start, min(start + batch_size, longest))]
