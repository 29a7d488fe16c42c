"""compare_checkpoints drives the runner API correctly (fake runner; the real end-to-end test
with the embedded model and a LoRA adapter lives with the runner's tests)."""

from __future__ import annotations

import contextlib
import sys
from types import SimpleNamespace

import pytest

import evalkit.checkpoints
import evalkit.run.runner
from evalkit.compare.orchestrate import compare_checkpoints
from evalkit.testing import make_run_folder

OUTCOMES = {
    "base": {str(i): float(i % 2 == 0) for i in range(40)},
    "tuned": {str(i): float(i % 2 == 0 and i >= 20) for i in range(40)},  # 10 regressions
}


@pytest.fixture
def fake_runner(tmp_path, monkeypatch):
    base = SimpleNamespace(spec="base", name="base", kind="model", base=None, fingerprint="b0")
    events: list[tuple] = []

    def resolve(spec, config=None, fallback=None):
        if spec == "base":
            return base
        if spec == "adapter":
            return SimpleNamespace(spec=spec, name="tuned", kind="adapter", base=base,
                                   fingerprint="a1")
        return SimpleNamespace(spec=spec, name="tuned", kind="model", base=None,
                               fingerprint="m2")

    @contextlib.contextmanager
    def open_backend(checkpoint, options, adapters=()):
        engine = object()
        events.append(("open", checkpoint.spec, tuple(a.spec for a in adapters), engine))
        yield engine
        events.append(("close", checkpoint.spec))

    def run_task(checkpoint, task, options, backend=None):
        events.append(("run", checkpoint.spec, task, backend))
        side = "base" if checkpoint.spec == "base" else "tuned"
        return make_run_folder(tmp_path / "runs" / task / checkpoint.spec, OUTCOMES[side],
                               task=task, checkpoint=checkpoint.name)

    monkeypatch.setattr(evalkit.checkpoints, "resolve", resolve)
    monkeypatch.setattr(evalkit.run.runner, "open_backend", open_backend)
    monkeypatch.setattr(evalkit.run.runner, "run_task", run_task)
    return events


def test_lora_adapter_of_base_is_served_by_one_engine(fake_runner, tmp_path, monkeypatch):
    import evalkit.models.merged_lora

    monkeypatch.setattr(evalkit.models.merged_lora, "merges_adapters", lambda backend: False)
    options = evalkit.run.runner.RunOptions(backend="vllm", limit=40)
    comp = compare_checkpoints("base", "adapter", ["gsm8k", "humaneval"], options,
                               tmp_path / "out")
    opens = [e for e in fake_runner if e[0] == "open"]
    assert len(opens) == 1 and opens[0][1:3] == ("base", ("adapter",))
    engine = opens[0][3]
    runs = [e for e in fake_runner if e[0] == "run"]
    assert [(e[1], e[2]) for e in runs] == [("base", "gsm8k"), ("adapter", "gsm8k"),
                                            ("base", "humaneval"), ("adapter", "humaneval")]
    assert all(e[3] is engine for e in runs)
    assert [r.task for r in comp.rows] == ["gsm8k", "humaneval"]
    assert all(r.verdict == "regressed" and (r.b, r.c) == (10, 0) for r in comp.rows)
    assert (tmp_path / "out" / "comparison.json").exists()
    assert (tmp_path / "out" / "comparison.md").exists()


def test_unrelated_checkpoints_run_one_engine_after_the_other(fake_runner, tmp_path):
    options = evalkit.run.runner.RunOptions(backend="hf")
    compare_checkpoints("base", "other", ["gsm8k"], options, tmp_path / "out")
    kinds = [(e[0], e[1]) for e in fake_runner if e[0] in ("open", "close")]
    # The first engine is closed before the second opens: never two models in memory.
    assert kinds == [("open", "base"), ("close", "base"), ("open", "other"), ("close", "other")]
    opens = [e for e in fake_runner if e[0] == "open"]
    assert all(e[2] == () for e in opens)


def test_cli_compare_checkpoints_goes_through_the_runner(fake_runner, tmp_path, monkeypatch,
                                                         capsys):
    from evalkit.cli import main

    out = tmp_path / "cli-out"
    monkeypatch.setattr(sys, "argv", ["evalkit", "compare", "base", "adapter", "--tasks",
                                      "gsm8k", "--limit", "40", "--backend", "hf",
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 0, capsys.readouterr().err
    assert "regressed" in capsys.readouterr().out
    assert len([e for e in fake_runner if e[0] == "open"]) == 1
    assert (out / "comparison.json").exists()


def test_cli_compare_checkpoints_needs_tasks(monkeypatch, capsys):
    from evalkit.cli import main

    monkeypatch.setattr(sys, "argv", ["evalkit", "compare", "builtin:a", "builtin:b"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "--tasks is required" in capsys.readouterr().err


def test_an_engine_that_serves_adapters_merged_gets_one_engine_per_side(fake_runner, tmp_path,
                                                                        monkeypatch):
    import evalkit.models.merged_lora

    # vLLM-CPU: the adapter is served merged into a copy of BASE, which cannot serve BASE too
    monkeypatch.setattr(evalkit.models.merged_lora, "merges_adapters", lambda backend: True)
    options = evalkit.run.runner.RunOptions(backend="vllm", limit=40)
    compare_checkpoints("base", "adapter", ["gsm8k"], options, tmp_path / "out")
    kinds = [(e[0], e[1]) for e in fake_runner if e[0] in ("open", "close")]
    assert kinds == [("open", "base"), ("close", "base"), ("open", "adapter"),
                     ("close", "adapter")]
