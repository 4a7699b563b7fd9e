"""The thing that labels: the `Engine` protocol, and the one chunk loop every engine runs.

The Labeler (the LLM) and every labeling method (`llmlabel.methods`) are engines: recipes, executors and users label
through `iter_label` / `label_texts`, read `stats` and `report`, and join results to rows with `merge`. Engines
inherit `ChunkedEngine`, which owns the loop (rows checked, `chunk_size` rows at a time, a progress bar, the time,
the counters); an engine only says how to label one chunk (`label_chunk`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from llmlabel.core.results import LabelResult, LabelStats
from llmlabel.inputs import checked_rows


@runtime_checkable
class Engine(Protocol):
    """What labels rows: the Labeler, or a method around one."""

    stats: LabelStats

    @property
    def report(self) -> dict[str, Any]:
        """What the engine chose and on which evidence (empty for the plain Labeler)."""

    def label_texts(self, texts: Any, text_pairs: Any = None) -> list[LabelResult]:
        """Label plain strings (and their pairs): one result per string."""

    def iter_label(self, rows: Iterable[dict[str, Any]], total: int | None = None
                   ) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        """Yield (row, result) in input order, streaming."""

    def merge(self, row: dict[str, Any], result: LabelResult) -> dict[str, Any]:
        """`row` plus the result's columns."""


def chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """`rows` in lists of `size` (the last may be shorter)."""
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ChunkedEngine:
    """The one chunk loop. Subclasses set `stats`, `chunk_size`, `progress` and implement `label_chunk`; the bar of
    the current `iter_label` is `bar` (a chunk may move it as its backend finishes prompts)."""

    stats: LabelStats
    chunk_size: int = 256
    progress: bool = False
    #: the progress bar of the `iter_label` running now, else None
    bar: Any = None

    def progress_label(self) -> str:
        """The progress bar's description."""
        return "labeling"

    def label_chunk(self, chunk: list[dict[str, Any]]) -> list[LabelResult]:
        """One result per row of `chunk`, in order."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called when an `iter_label` ends (normally, on error or when its consumer stops)."""

    def iter_label(self, rows: Iterable[dict[str, Any]], total: int | None = None
                   ) -> Iterator[tuple[dict[str, Any], LabelResult]]:
        """Yield (row, result) in input order, `chunk_size` rows at a time (streaming; resumable via the cache)."""
        from llmlabel.terminal import progress_bar

        rows = checked_rows(rows, "iter_label")
        start = time.perf_counter()
        bar = progress_bar(total=total, disable=not self.progress, unit="row", desc=self.progress_label())
        self.bar = bar
        try:
            for chunk in chunks(rows, self.chunk_size):
                begin = bar.n
                results = self.label_chunk(chunk)
                for result in results:
                    self.stats.rows += 1
                    self.stats.truncated += int(result.truncated)
                    self.stats.statuses[result.status] += 1
                bar.update(begin + len(chunk) - bar.n)  # the bar may have moved within the chunk
                yield from zip(chunk, results)
        finally:
            self.bar = None
            bar.close()
            self.stats.seconds += time.perf_counter() - start
            self.finish()
