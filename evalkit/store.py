"""Run folders (run.json, samples.jsonl, metrics.json) and the generation cache.

The format is documented in docs/run-format.md. The rules that make runs safe to kill:
- samples.jsonl is append-only, one complete JSON line per scored sample, flushed at once;
  a killed writer can leave one truncated last line, which ``open_run`` cuts off.
- run.json says ``"status": "running"`` until metrics.json has been written; readers refuse
  anything that is not ``"complete"``, so a partial folder is never mistaken for results.
- Generations also go to a content-addressed SQLite cache (keyed by checkpoint fingerprint,
  backend, prompt, generation settings and seed) before they are scored, so neither a crash
  during scoring nor re-running an identical configuration regenerates anything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import cache_dir

SCHEMA_VERSION = 1


def write_json_atomic(path: Path, obj: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files share its mode
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EvalkitError(f"{path} not found") from None
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{path} is not valid JSON: {exc}") from None


class RunWriter:
    """Appends scored samples to a run folder and finishes it."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.header = header
        self.done: set[tuple[str, int]] = set()
        self._file = None

    @classmethod
    def open(cls, path: Path, header: dict) -> RunWriter:
        """Create the folder, or reopen a killed run of the same configuration to resume it."""
        run_json = path / "run.json"
        writer = cls(path, header)
        if run_json.exists():
            existing = read_json(run_json)
            if existing.get("run_key") != header["run_key"]:
                raise EvalkitError(
                    f"{path} holds a different run (other checkpoint, task version or settings); "
                    "choose another --out")
            writer.done = {(s["doc_id"], s["sample_idx"]) for s in repair_samples(path)}
            header = {**existing, **header, "status": "running"}
        else:
            path.mkdir(parents=True, exist_ok=True)
        writer.header = header
        write_json_atomic(run_json, {**header, "status": "running"})
        (path / "metrics.json").unlink(missing_ok=True)
        writer._file = (path / "samples.jsonl").open("a", encoding="utf-8")
        return writer

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()  # in the kernel now: survives kill -9 of this process
        self.done.add((record["doc_id"], record["sample_idx"]))

    def finish(self, metrics: dict, extra: dict) -> None:
        self._file.close()
        write_json_atomic(self.path / "metrics.json",
                          {"schema_version": SCHEMA_VERSION, "task": self.header["task"]["name"],
                           "metrics": metrics})
        self.header = {**self.header, **extra, "status": "complete"}
        write_json_atomic(self.path / "run.json", self.header)

    def close(self) -> None:
        if self._file and not self._file.closed:
            self._file.close()


def repair_samples(path: Path) -> list[dict]:
    """Read samples.jsonl, cutting off a truncated last line and dropping duplicates."""
    f = path / "samples.jsonl"
    if not f.exists():
        return []
    data = f.read_bytes()
    good_end = data.rfind(b"\n") + 1
    records, seen, offset = [], set(), 0
    for line in data[:good_end].splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn write inside the file: keep what precedes it
        offset += len(line)
        key = (rec["doc_id"], rec["sample_idx"])
        if key not in seen:
            seen.add(key)
            records.append(rec)
    if offset != len(data):
        with f.open("r+b") as fh:
            fh.truncate(offset)
    return records


def load_run(path: str | Path) -> tuple[dict, list[dict], dict]:
    """A finished run's (run.json, samples, metrics.json); refuses unfinished folders."""
    path = Path(path)
    if not (path / "run.json").exists():
        raise EvalkitError(f"{path} is not a run folder (no run.json)")
    run = read_json(path / "run.json")
    if not isinstance(run, dict):
        raise EvalkitError(f"{path}/run.json is not a JSON object")
    if run.get("status") != "complete" or not (path / "metrics.json").exists():
        raise EvalkitError(f"{path} is an unfinished run; rerun its command to complete it")
    if run.get("schema_version") != SCHEMA_VERSION:
        raise EvalkitError(f"{path}: unsupported run schema version {run.get('schema_version')}")
    samples = []
    if not (path / "samples.jsonl").exists():
        raise EvalkitError(f"{path} has no samples.jsonl")
    with (path / "samples.jsonl").open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                samples.append(json.loads(line))
            except json.JSONDecodeError:
                raise EvalkitError(f"{path}/samples.jsonl line {n} is not valid JSON") from None
    return run, samples, read_json(path / "metrics.json")


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

    def get(self, key: str) -> list[dict] | None:
        row = self.db.execute("SELECT value FROM gen WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: list[dict]) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO gen VALUES (?, ?)", (key, json.dumps(value)))

    def close(self) -> None:
        self.db.close()
