"""The results store and `evalkit publish` / `evalkit report` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.report.collect import publishable, run_record
from evalkit.report.store import read_record, read_store, write_record
from evalkit.testing import make_run_folder

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, name: str = "run", **outcomes: float) -> Path:
    return make_run_folder(tmp_path / name, outcomes or {"a": 1.0, "b": 0.0, "c": 1.0},
                           task="gsm8k", checkpoint="m")


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_publishing_the_same_run_twice_is_a_no_op(tmp_path):
    run = _run(tmp_path)
    store = tmp_path / "results"
    path, written = write_record(store, run_record(run))
    before = path.read_bytes()
    again, written_again = write_record(store, run_record(run))
    assert (written, written_again) == (True, False)
    assert again == path and path.read_bytes() == before
    assert len(list(store.rglob("*.json"))) == 1
    rec = read_record(path)
    assert rec.metrics["acc"].value == pytest.approx(2 / 3) and rec.metrics["acc"].n == 3
    assert rec.task.name == "gsm8k" and rec.run_dir == str(run)
    # The same run seen from another place is still the same record.
    moved = run.rename(tmp_path / "elsewhere")
    assert write_record(store, run_record(moved)) == (path, False)


def test_a_different_result_for_the_same_key_is_refused(tmp_path):
    store = tmp_path / "results"
    write_record(store, run_record(_run(tmp_path, "first")))
    # Same checkpoint, task, prompts and settings, another outcome (e.g. a nondeterministic
    # backend): two numbers for one question.
    other = _run(tmp_path, "second", a=0.0, b=0.0, c=1.0)
    with pytest.raises(EvalkitError, match="already holds a different result for the same key"):
        write_record(store, run_record(other))
    assert len(list(store.rglob("*.json"))) == 1


def test_other_schema_versions_are_refused_with_what_to_do(tmp_path):
    path, _ = write_record(tmp_path / "results", run_record(_run(tmp_path)))
    raw = json.loads(path.read_text())
    for version, hint in ((2, "upgrade evalkit"), (0, "republish it from its run folder")):
        path.write_text(json.dumps({**raw, "schema_version": version}))
        with pytest.raises(EvalkitError, match=f"schema version {version} .*{hint}"):
            read_record(path)


def test_a_hand_edited_record_is_refused(tmp_path):
    path, _ = write_record(tmp_path / "results", run_record(_run(tmp_path)))
    raw = json.loads(path.read_text())
    raw["metrics"]["acc"]["value"] = 0.99
    path.write_text(json.dumps(raw))
    with pytest.raises(EvalkitError, match="does not match its digest"):
        read_record(path)


def test_a_compare_folder_publishes_its_runs_and_its_verdicts(tmp_path):
    from evalkit.compare import compare_paths, write_comparison

    make_run_folder(tmp_path / "b/gsm8k", {str(i): float(i % 2) for i in range(20)},
                    task="gsm8k", checkpoint="base")
    make_run_folder(tmp_path / "t/gsm8k", {str(i): 1.0 for i in range(20)}, task="gsm8k",
                    checkpoint="tuned")
    write_comparison(compare_paths(tmp_path / "b", tmp_path / "t", resamples=1000),
                     tmp_path / "cmp")
    records = publishable(tmp_path / "cmp")
    assert [r.kind for r in records] == ["evalkit.result.run"] * 2 + ["evalkit.result.comparison"]
    for rec in records:
        write_record(tmp_path / "results", rec)
    stored = read_store(tmp_path / "results")
    cmp = next(r for r in stored if r.kind == "evalkit.result.comparison")
    assert cmp.rows[0].delta == pytest.approx(0.5)
    assert (cmp.base.label, cmp.tuned.label) == ("base", "tuned")


def test_markdown_truncates_flips_with_a_count(tmp_path):
    from evalkit.compare import compare_paths, write_comparison
    from evalkit.report.collect import collect
    from evalkit.report.render import build_markdown

    long = "x" * 500
    make_run_folder(tmp_path / "b/gsm8k", {str(i): 1.0 for i in range(300)}, task="gsm8k",
                    checkpoint="base", completions={str(i): long for i in range(300)})
    make_run_folder(tmp_path / "t/gsm8k", {str(i): 0.0 for i in range(300)}, task="gsm8k",
                    checkpoint="tuned")
    write_comparison(compare_paths(tmp_path / "b", tmp_path / "t", resamples=1000),
                     tmp_path / "cmp")
    md = build_markdown(collect([tmp_path / "cmp"]))
    assert len(md) < 65_536
    shown = md.count("\n**gsm8k / ")
    assert 0 < shown < 300
    assert f"… and {300 - shown} more flipped item(s) not shown here" in md


def test_html_verdict_rows_show_the_shared_cells_escaped(tmp_path):
    """The HTML verdict table shows the same cells as the terminal and Markdown tables (the
    test column reads "McNemar b=.. c=..", not the test's id), and a hostile metric name stays
    text."""
    from evalkit.compare import compare_paths, write_comparison
    from evalkit.report.collect import collect
    from evalkit.report.render import build_html

    hostile = "<i>acc</i>"
    # 20 paired items: 6 only the tuned side gets right, 2 only the base side: b=2, c=6
    base = {str(i): float(i < 8) for i in range(20)}
    tuned = {str(i): float(2 <= i < 14) for i in range(20)}
    for side, outcomes in (("b", base), ("t", tuned)):
        make_run_folder(tmp_path / side / "gsm8k", outcomes, task="gsm8k", checkpoint=side,
                        score_key=hostile)
    write_comparison(compare_paths(tmp_path / "b", tmp_path / "t", resamples=1000),
                     tmp_path / "cmp")
    page = build_html(collect([tmp_path / "cmp"]))
    row = ('<tr><td>gsm8k</td><td>&lt;i&gt;acc&lt;/i&gt;</td><td class="num">20</td>'
           '<td class="num">40.0%</td><td class="num">60.0%</td><td class="num">+20.0 pp</td>')
    assert row in page
    assert "<td>McNemar b=2 c=6</td>" in page
    assert hostile not in page


def test_cli_publish_then_report_without_torch(tmp_path):
    run = _run(tmp_path)
    first = _cli("publish", run, "--to", tmp_path / "results", cwd=tmp_path)
    second = _cli("publish", run, "--to", tmp_path / "results", cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.startswith("published")
    assert second.returncode == 0 and second.stdout.startswith("unchanged")
    probe = ("import sys\nfrom evalkit.cli import main\nsys.argv=['evalkit','report',"
             f"{str(tmp_path / 'results')!r},'-o',{str(tmp_path / 'rep')!r},'--quiet']\n"
             "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "heavy = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]\n"
             "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert (tmp_path / "rep/index.html").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (("report", "nope", "-o", "rep"), "nope does not exist"),
    (("publish", ".", "--to", "results"), "is not a run folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    res = _cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and message in res.stderr and "Traceback" not in res.stderr


def test_code_flips_carry_sandbox_status_and_stderr(tmp_path):
    """A code task's flip shows the sandbox status (from the comparison) and stderr (read back
    from the run folder's samples, as the runner writes them in ``execution``)."""
    import base64
    import gzip

    from evalkit.compare import compare_paths, write_comparison
    from evalkit.report.collect import collect
    from evalkit.report.render import _flip_payload

    outcomes = {"0": 1.0, "1": 1.0, "2": 0.0}
    make_run_folder(tmp_path / "b/humaneval", outcomes, task="humaneval", checkpoint="base")
    tuned = make_run_folder(tmp_path / "t/humaneval", {**outcomes, "1": 0.0}, task="humaneval",
                            checkpoint="tuned")
    lines = (tuned / "samples.jsonl").read_text().splitlines()
    samples = [json.loads(line) for line in lines]
    for s in samples:
        if s["doc_id"] == "1":
            s["execution"] = {"program": "assert f() == 2", "status": "failed",
                              "detail": "AssertionError", "stdout": "",
                              "stderr": "Traceback (most recent call last):\n\x1b[31mboom"}
    (tuned / "samples.jsonl").write_text("\n".join(json.dumps(s) for s in samples) + "\n")
    write_comparison(compare_paths(tmp_path / "b", tmp_path / "t", resamples=1000),
                     tmp_path / "cmp")
    (compare,) = collect([tmp_path / "cmp"]).compares
    (flip,) = compare.flips
    assert flip.item.tuned.execution_status == "failed"
    assert flip.tuned_stderr.startswith("Traceback") and flip.base_stderr is None
    payload, left = _flip_payload(compare, 200)
    (item,) = json.loads(gzip.decompress(base64.b64decode(payload)))
    assert item["tuned"]["status"] == "failed"
    assert item["tuned"]["stderr"] == "Traceback (most recent call last):\n\\u001b[31mboom"
    assert left == {}
