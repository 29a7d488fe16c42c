"""`run --shard i/N` + `evalkit merge` == one unsharded run, byte for byte; merge refuses what
would not be one run (a missing shard, a shard twice, shards of different configurations)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.checkpoints import resolve
from evalkit.errors import EvalkitError
from evalkit.run.format import load_run
from evalkit.run.runner import RunOptions, run_task
from evalkit.scale.merge import merge_shards
from evalkit.scale.shard import Shard, parse_shard, shard_of

LIMIT = 7


def options(out: Path, **kw) -> RunOptions:
    return RunOptions(**{"backend": "hf", "limit": LIMIT, "max_tokens": 12, "out_dir": out,
                         "progress": False, "use_cache": False, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """One unsharded run and the same run as 3 shards (each in its own --out, as array jobs)."""
    root = tmp_path_factory.mktemp("shards")
    ckpt = resolve(tiny_llama)
    whole = run_task(ckpt, "gsm8k", options(root / "whole"))
    shards = [run_task(ckpt, "gsm8k", options(root / f"job{i}", shard=Shard(i, 3)))
              for i in range(3)]
    return root, whole, shards


def test_shards_partition_the_items(runs):
    _, _whole, shards = runs
    ids = [[json.loads(line)["doc_id"] for line in (s / "samples.jsonl").open()]
           for s in shards]
    assert sorted(i for part in ids for i in part) == sorted(str(i) for i in range(LIMIT))
    assert all(shard_of(d, 3) == k for k, part in enumerate(ids) for d in part)
    assert all(json.loads((s / "run.json").read_text())["shard"]["docs"] == LIMIT
               for s in shards)
    with pytest.raises(EvalkitError, match="evalkit merge"):
        load_run(shards[0])  # one shard is never read as the run's results


def test_merged_shards_equal_the_unsharded_run(runs):
    root, whole, _shards = runs
    [merged] = merge_shards([root / f"job{i}" for i in range(3)], root / "merged")
    assert merged.relative_to(root / "merged") == whole.relative_to(root / "whole")
    assert (merged / "samples.jsonl").read_bytes() == (whole / "samples.jsonl").read_bytes()
    assert (merged / "metrics.json").read_bytes() == (whole / "metrics.json").read_bytes()
    a, b = (json.loads((f / "run.json").read_text()) for f in (whole, merged))
    assert set(a) == set(b) and a["run_key"] == b["run_key"] and b["status"] == "complete"
    assert a["counts"] == {**b["counts"]}
    load_run(merged)


def merge_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalkit", "merge", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def one_line_error(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert needle in done.stderr, done.stderr


def test_merge_refuses_a_missing_shard(runs, tmp_path):
    _root, _, shards = runs
    one_line_error(merge_cli(shards[0], shards[2], "--out", tmp_path), "shard(s) 1/3 missing")
    assert not list(tmp_path.iterdir())  # nothing written


def test_merge_refuses_a_shard_twice(runs, tmp_path):
    _root, _, shards = runs
    one_line_error(merge_cli(*shards, shards[1], "--out", tmp_path), "shard 1/3 given twice")


def test_merge_refuses_shards_of_different_configs(runs, tiny_llama, tmp_path):
    _root, _, shards = runs
    other = run_task(resolve(tiny_llama), "gsm8k",
                     options(tmp_path / "other", max_tokens=5, shard=Shard(1, 3)))
    one_line_error(merge_cli(shards[0], other, shards[2], "--out", tmp_path / "m"),
                   "different configurations (generation settings differ")


def test_parse_shard_refuses_nonsense():
    assert parse_shard("2/4") == Shard(2, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(EvalkitError, match="--shard"):
            parse_shard(bad)
