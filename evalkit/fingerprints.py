"""Content fingerprints of model folders, with file hashes cached across processes."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from evalkit.paths import cache_dir

# Files whose content changes what a model generates, besides the weights.
META_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "adapter_config.json",
)


def folder_fingerprint(path: Path, weights: list[Path]) -> str:
    parts = {}
    for name in META_FILES:
        f = path / name
        if f.exists():
            parts[name] = file_sha256(f)
    for w in weights:
        parts[w.name] = file_sha256(w)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (realpath, size, mtime_ns, inode) in SQLite, which several
    evalkit processes may read and write at once."""
    st = path.stat()
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    db = sqlite3.connect(cache_dir() / "file-hashes.sqlite", timeout=60)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS hashes (key TEXT PRIMARY KEY, sha256 TEXT)")
        row = db.execute("SELECT sha256 FROM hashes WHERE key = ?", (key,)).fetchone()
        if row:
            return row[0]
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        with db:
            db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?)", (key, digest))
        return digest
    finally:
        db.close()
