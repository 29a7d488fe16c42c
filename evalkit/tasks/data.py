"""Load benchmark records: the local data dir first, then the Hugging Face hub.

Local files are the exact upstream files (see ``shared/data/README.md``): JSONL (optionally
gzipped), a JSON array, or CSV. The hub path is what users with internet get.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as default_data_dir


@dataclass(frozen=True)
class Doc:
    id: str
    index: int  # position in the full eval split (few-shot draws follow this order)
    data: dict


def load_records(
    local: str | None,
    hub: tuple[str, str | None, str] | None = None,
    data_dir: str | Path | None = None,
) -> list[dict]:
    """Records of one split.

    ``local`` is a path relative to the data dir (``gsm8k/test.jsonl``); ``hub`` is
    ``(path, config name, split)`` for ``datasets.load_dataset``. With a data dir set, a missing
    local file is an error (silently going to the network would hide a typo in the data dir).
    """
    root = default_data_dir(data_dir)
    if root is not None and local is not None:
        path = root / local
        if not path.exists():
            raise EvalkitError(f"data file {local} not found in data dir {root}")
        records = read_file(path)
    elif hub is not None:
        records = _load_hub(*hub)
    else:
        raise EvalkitError(
            f"no data source for {local}: set --data-dir / EVALKIT_DATA_DIR to a folder holding it"
        )
    if not records:
        raise EvalkitError(f"dataset {local or hub} is empty")
    return records


def read_file(path: Path) -> list[dict]:
    """Read a JSONL / JSONL.gz / JSON-array / CSV file into a list of dicts."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8")
        name = path.name.removesuffix(".gz")
        if name.endswith(".csv"):
            return list(csv.DictReader(io.StringIO(text)))
        if name.endswith(".json"):
            data = json.loads(text)
            if not isinstance(data, list):
                raise ValueError("expected a JSON array of records")
            return data
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError, EOFError) as exc:
        raise EvalkitError(f"cannot read data file {path}: {exc}") from None


def _load_hub(path: str, name: str | None, split: str) -> list[dict]:
    try:
        import datasets

        ds = datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # datasets raises many types for network/lookup failures
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EvalkitError(
            f"cannot load {path} ({split}) from the Hugging Face hub: {first[:200]}; "
            "with no network, set --data-dir / EVALKIT_DATA_DIR to a local copy"
        ) from None
    return [dict(r) for r in ds]
