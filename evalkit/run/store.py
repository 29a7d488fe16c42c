"""Writing a run folder safely, and the generation cache.

The files' models live in ``evalkit.run.format`` (docs/run-format.md). The rules that make runs
safe to kill:
- samples.jsonl is append-only, one complete JSON line per scored sample, flushed at once;
  a killed writer can leave one truncated last line, which ``format.repair_samples`` cuts off.
- run.json says ``"status": "running"`` until metrics.json has been written; readers refuse
  anything that is not ``"complete"``, so a partial folder is never mistaken for results.
- Generations also go to a content-addressed SQLite cache (keyed by checkpoint fingerprint,
  backend, prompt, generation settings and seed) before they are scored, so neither a crash
  during scoring nor re-running an identical configuration regenerates anything.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir
from evalkit.run.format import (
    SAMPLES_JSONL,
    MetricsFile,
    RunHeader,
    Sample,
    read_header,
    repair_samples,
    write_header,
    write_metrics,
    write_samples,
)


class RunWriter:
    """Appends scored samples to a run folder and finishes it."""

    def __init__(self, path: Path, header: RunHeader):
        self.path = path
        self.header = header
        self.done: set[tuple[str, int]] = set()
        self._file: Any = None

    @classmethod
    def open(cls, path: Path, header: RunHeader) -> RunWriter:
        """Create the folder, or reopen a killed run of the same configuration to resume it."""
        writer = cls(path, header)
        if (path / "run.json").exists():
            existing = read_header(path)
            if existing.run_key != header.run_key:
                raise EvalkitError(
                    f"{path} holds a different run (other checkpoint, task version or settings); "
                    "choose another --out")
            writer.done = {(s.doc_id, s.sample_idx) for s in repair_samples(path)}
            if header.backend.get("engine_id") is None:  # nothing was loaded this time: the
                # record of the engine that answered (the run key pins its options) stays
                header = header.model_copy(update={"backend": existing.backend})
            header = RunHeader.model_validate({**existing.model_dump(exclude_unset=True),
                                               **header.model_dump(exclude_unset=True)})
        else:
            path.mkdir(parents=True, exist_ok=True)
        writer.header = header.model_copy(update={"status": "running"})
        write_header(path, writer.header)
        (path / "metrics.json").unlink(missing_ok=True)
        writer._file = (path / SAMPLES_JSONL).open("a", encoding="utf-8")
        return writer

    def append(self, sample: Sample) -> None:
        self._file.write(sample.line() + "\n")
        self._file.flush()  # in the kernel now: survives kill -9 of this process
        self.done.add((sample.doc_id, sample.sample_idx))

    def finish(self, metrics: dict[str, dict[str, Any]], extra: dict[str, Any],
               samples: list[Sample] | None = None) -> None:
        """Write metrics.json and mark the run complete; with ``samples``, first rewrite
        samples.jsonl as exactly these samples in this order (atomically), so a finished file
        has the same bytes whatever order engines, replicas or resumes finished them in."""
        self._file.close()
        if samples is not None:
            write_samples(self.path, samples)
        write_metrics(self.path, MetricsFile.model_validate(
            {"task": self.header.task.name, "metrics": metrics}))
        self.header = self.header.model_copy(update={**extra, "status": "complete"})
        write_header(self.path, self.header)

    def close(self) -> None:
        if self._file and not self._file.closed:
            self._file.close()


def content_key(**parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class GenerationCache:
    """Completions by content key, in one SQLite file shared by all runs (WAL, so concurrent
    evalkit processes can read and write)."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "generations.sqlite"
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS gen (key TEXT PRIMARY KEY, value TEXT)")

    def get(self, key: str) -> list[dict[str, Any]] | None:
        row = self.db.execute("SELECT value FROM gen WHERE key = ?", (key,)).fetchone()
        return list(json.loads(row[0])) if row else None

    def put(self, key: str, value: list[dict[str, Any]]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO gen VALUES (?, ?)", (key, json.dumps(value)))

    def close(self) -> None:
        self.db.close()


R = TypeVar("R")


class CachedExecution(Generic[R]):
    """Results of requests by cache key: cached ones at once, the rest from the backend."""

    def __init__(self, keys: Sequence[str], cache: GenerationCache | None,
                 result_type: Callable[..., R]):
        self.keys, self.cache, self.result_type = list(keys), cache, result_type
        self.hits = {i: c for i, k in enumerate(self.keys)
                     if cache is not None and (c := cache.get(k)) is not None}
        self.misses = [i for i in range(len(self.keys)) if i not in self.hits]

    def results(self, execute: Callable[[list[int]], Iterable[tuple[int, list[R]]]]
                ) -> Iterator[tuple[int, list[R], bool]]:
        """``(index, results, cached)`` for every key: hits first, then each miss as
        ``execute(miss indices)`` finishes it (``(position in misses, results)``), cached at
        once so a crash later never regenerates it."""
        for i, cached in self.hits.items():
            yield i, [self.result_type(**c) for c in cached], True
        if self.misses:
            for j, results in execute(self.misses):
                i = self.misses[j]
                if self.cache is not None:
                    self.cache.put(self.keys[i], [vars(r) for r in results])
                yield i, results, False


def cached_execute(keys: Sequence[str], cache: GenerationCache | None,
                   result_type: Callable[..., R]) -> CachedExecution[R]:
    """The one path from requests to results through the generation cache (runs and judge)."""
    return CachedExecution(keys, cache, result_type)
