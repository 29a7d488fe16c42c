"""`evalkit check`: exit 0 / 1 / 2 in every direction, JUnit structure, baselines, pytest API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from evalkit.compare import gate
from evalkit.compare.load import load_baseline
from evalkit.compare.render import write_comparison
from evalkit.compare.rows import compare_paths
from evalkit.errors import EvalkitError
from evalkit.testing import assert_no_regression, make_run_folder

ROOT = Path(__file__).resolve().parent.parent
N = 400
BASE = {str(i): float(i % 2 == 0) for i in range(N)}  # 50% accuracy
BASE_RIGHT = [d for d in BASE if BASE[d] == 1.0]


def _variant(regress: int = 0, improve: int = 0) -> dict[str, float]:
    """BASE with the first `regress` right items made wrong, `improve` wrong items made right."""
    out = dict(BASE)
    for d in BASE_RIGHT[:regress]:
        out[d] = 0.0
    for d in [d for d in BASE if BASE[d] == 0.0][:improve]:
        out[d] = 1.0
    return out


@pytest.fixture
def runs(tmp_path):
    def write(name: str, outcomes: dict, **kw) -> Path:
        return make_run_folder(tmp_path / name / "toy", outcomes, checkpoint=name,
                               completions={d: f"{name} says {d}" for d in outcomes}, **kw)
    return write


# ------------------------------------------------------------------------- the decision rule


def test_significant_drop_beyond_tolerance_fails(runs):
    base, cand = runs("base", BASE), runs("cand", _variant(regress=30))  # -7.5 pp
    result = gate.run_gate(cand, base)
    assert result.exit_code == 1
    (row,) = result.failed
    assert row.drop_pp == pytest.approx(7.5)
    assert row.row.regressions == BASE_RIGHT[:30]
    assert "dropped 7.5 pp, more than the 1 pp tolerance" in row.message
    assert "worst flipped items: 0, 2, 4, 6, 8 (+25 more)" in row.message


def test_identical_and_improved_candidates_pass(runs):
    base = runs("base", BASE)
    assert gate.run_gate(runs("same", BASE), base).exit_code == 0
    better = gate.run_gate(runs("better", _variant(improve=40)), base)
    assert better.exit_code == 0 and better.rows[0].row.verdict == "improved"


def test_significant_drop_within_tolerance_passes(runs):
    # 12 of 400 regress (-3 pp), McNemar p = 2/4096: significant, but tolerated at 5 pp.
    base, cand = runs("base", BASE), runs("cand", _variant(regress=12))
    assert gate.run_gate(cand, base, max_drop=5.0).exit_code == 0
    assert gate.run_gate(cand, base, max_drop=2.9).exit_code == 1


def test_large_but_insignificant_drop_passes(runs):
    # 10 items, 2 regress: a 20 pp drop, but McNemar p = 0.5 -> could be noise.
    small = {str(i): 1.0 for i in range(10)}
    base = runs("base", small)
    cand = runs("cand", {**small, "0": 0.0, "1": 0.0})
    result = gate.run_gate(cand, base)
    assert result.exit_code == 0
    assert result.rows[0].drop_pp == pytest.approx(20.0)
    assert result.rows[0].row.verdict == "no significant change"


def test_candidate_may_be_a_comparison_json(runs, tmp_path):
    comp = compare_paths(runs("base", BASE), runs("cand", _variant(regress=30)))
    json_path, _ = write_comparison(comp, tmp_path / "cmp")
    assert gate.run_gate(json_path).exit_code == 1
    assert gate.run_gate(json_path, max_drop=10).exit_code == 0
    with pytest.raises(EvalkitError, match="--baseline is required"):
        gate.run_gate(runs("other", BASE))


def test_untested_metric_means_the_gate_cannot_decide(runs):
    base = runs("base", BASE)
    # no sample carries the metric's score key: no item can be scored
    cand = runs("cand", {d: {"other": 1.0} for d in BASE})
    result = gate.run_gate(cand, base)
    assert result.exit_code == 2 and len(result.untested) == 1


# ------------------------------------------------------------------------------- baselines


def test_baseline_file_round_trip_gives_the_same_decision(runs, tmp_path):
    base, cand = runs("base", BASE), runs("cand", _variant(regress=30))
    path = gate.write_baseline(base, tmp_path / "results" / "baseline-main.json")
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1 and raw["kind"] == "evalkit.baseline"
    (task,) = raw["tasks"]
    assert task["task"] == "toy" and len(task["doc_ids"]) == N
    assert task["metrics"]["acc"]["values"][:4] == [1.0, 0.0, 1.0, 0.0]
    from_file = gate.run_gate(cand, path)
    from_run = gate.run_gate(cand, base)
    assert from_file.exit_code == from_run.exit_code == 1
    assert from_file.rows[0].row.p_value == from_run.rows[0].row.p_value
    assert from_file.rows[0].row.regressions == from_run.rows[0].row.regressions
    assert load_baseline(path).tasks[0].checkpoint.name == "base"


@pytest.mark.parametrize(("content", "message"), [
    ("{oops", "is not valid JSON"),
    ('{"kind": "something else"}', "not a run folder, a comparison.json or an evalkit baseline"),
    ('{"kind": "evalkit.baseline", "schema_version": 1}', "malformed baseline file"),
    ('{"kind": "evalkit.baseline", "schema_version": 2, "tasks": []}', "malformed baseline"),
])
def test_malformed_baseline_is_an_error_not_a_regression(runs, tmp_path, content, message):
    bad = tmp_path / "baseline-bad.json"
    bad.write_text(content)
    with pytest.raises(EvalkitError, match=message):
        gate.run_gate(runs("cand", BASE), bad)


def test_baseline_with_misaligned_values_is_refused(runs, tmp_path):
    path = gate.write_baseline(runs("base", BASE), tmp_path / "baseline.json")
    raw = json.loads(path.read_text())
    raw["tasks"][0]["metrics"]["acc"]["values"].pop()
    path.write_text(json.dumps(raw))
    with pytest.raises(EvalkitError, match="metric acc has 399 values for 400 doc_ids"):
        gate.run_gate(runs("cand", BASE), path)


def test_mismatched_baseline_is_an_error(runs, tmp_path):
    base = runs("base", BASE)
    with pytest.raises(EvalkitError, match="prompts differ"):
        gate.run_gate(runs("chat", BASE, prompt_salt="<chat>"), base)
    other = make_run_folder(tmp_path / "other", BASE, task="gsm8k")
    with pytest.raises(EvalkitError, match="candidate has no run of baseline task"):
        gate.run_gate(other, base)


# ------------------------------------------------------------------------------------ JUnit


def _check_junit_structure(path: Path) -> ET.Element:
    """What the common JUnit XSD (Ant / Jenkins flavour) requires of the elements we emit."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "time", "timestamp", "hostname"):
        assert attr in suite.attrib, attr
    for attr in ("tests", "failures", "errors"):
        assert int(suite.get(attr)) >= 0 and suite.get(attr) == root.get(attr)
    assert float(suite.get("time")) >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))
    # Children in schema order: properties?, testcase*, system-out?, system-err?
    tags = [child.tag for child in suite]
    order = {"properties": 0, "testcase": 1, "system-out": 2, "system-err": 3}
    assert all(t in order for t in tags) and tags == sorted(tags, key=order.get)
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases)
    assert int(suite.get("errors")) == sum(c.find("error") is not None for c in cases)
    for case in cases:
        assert case.get("name") and case.get("classname")
        assert float(case.get("time")) >= 0
        for tag in ("failure", "error"):
            for el in case.findall(tag):
                assert el.get("message") and el.get("type")
    for prop in suite.iter("property"):
        assert prop.get("name") is not None and prop.get("value") is not None
    return suite


def test_junit_has_one_testcase_per_task_metric_with_numbers(runs, tmp_path):
    metrics = {"exact_match,strict-match": {"score_key": "strict"},
               "exact_match,flexible-extract": {"score_key": "flex"}}
    two = {d: {"strict": v, "flex": v} for d, v in BASE.items()}
    worse = {d: {"strict": v, "flex": BASE[d]} for d, v in _variant(regress=30).items()}
    make_run_folder(tmp_path / "b" / "gsm8k", two, task="gsm8k", metrics=metrics)
    make_run_folder(tmp_path / "c" / "gsm8k", worse, task="gsm8k", metrics=metrics)
    make_run_folder(tmp_path / "b" / "toy", BASE)
    make_run_folder(tmp_path / "c" / "toy", BASE)
    result = gate.run_gate(tmp_path / "c", tmp_path / "b")
    path = gate.write_junit(result, tmp_path / "junit.xml")
    suite = _check_junit_structure(path)
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert set(cases) == {("evalkit.gsm8k", "exact_match,strict-match"),
                          ("evalkit.gsm8k", "exact_match,flexible-extract"),
                          ("evalkit.toy", "acc")}
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    failure = cases[("evalkit.gsm8k", "exact_match,strict-match")].find("failure")
    assert failure.get("type") == "regression"
    assert "dropped 7.5 pp" in failure.get("message") and "b=30 c=0" in failure.get("message")
    # The body lists the worst flipped items with both sides' answers.
    assert "doc 0:" in failure.text
    assert "baseline: answer=" in failure.text and "candidate: answer=" in failure.text
    assert cases[("evalkit.toy", "acc")].find("failure") is None


def test_junit_for_a_broken_gate_is_an_error_not_a_failure(tmp_path):
    path = gate.write_junit("baseline-x.json is not valid JSON", tmp_path / "j.xml")
    suite = _check_junit_structure(path)
    assert (suite.get("failures"), suite.get("errors")) == ("0", "1")


# -------------------------------------------------------------------------- pytest entry point


def test_assert_no_regression(runs):
    base = runs("base", BASE)
    result = assert_no_regression(runs("same", BASE), base)
    assert result.exit_code == 0
    with pytest.raises(AssertionError, match=r"FAIL toy acc dropped 7\.5 pp") as exc:
        assert_no_regression(runs("cand", _variant(regress=30)), base, max_drop=1.0)
    assert "worst flipped items: 0, 2, 4" in str(exc.value)
    assert_no_regression(runs("cand2", _variant(regress=30)), base, max_drop=8.0)
    with pytest.raises(EvalkitError):  # a mismatched baseline is an error, not a failure
        assert_no_regression(runs("chat", BASE, prompt_salt="<chat>"), base)


# ------------------------------------------------------------------------------------- CLI


def _check(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`evalkit check ...` through the real entry point (evalkit.cli.main), in-process."""
    from evalkit.cli import main

    monkeypatch.setattr(sys, "argv", ["evalkit", "check", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_cli_check_exit_codes_in_both_directions(runs, tmp_path, monkeypatch, capsys):
    def check(*args):
        return _check(monkeypatch, capsys, *map(str, args))

    base = runs("base", BASE)
    baseline_file = tmp_path / "results" / "baseline-main.json"
    code, out, err = check(base, "--write-baseline", baseline_file)
    assert code == 0 and baseline_file.exists(), err
    junit = tmp_path / "junit.xml"

    code, out, err = check(runs("same", BASE), "--baseline", baseline_file, "--junit", junit)
    assert code == 0, err
    assert "passed" in out
    _check_junit_structure(junit)

    code, out, err = check(runs("cand", _variant(regress=30)), "--baseline", baseline_file,
                           "--junit", junit, "--markdown", tmp_path / "gate.md")
    assert code == 1, err
    assert "FAIL" in out and "regression" in out
    assert _check_junit_structure(junit).get("failures") == "1"
    assert (tmp_path / "gate.md").read_text().startswith("**evalkit check: ❌ 1 regression")

    broken = tmp_path / "baseline-broken.json"
    broken.write_text('{"kind": "evalkit.baseline", "schema_version": 1, "tasks": [{}]}')
    code, out, err = check(runs("c2", BASE), "--baseline", broken, "--junit", junit)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert _check_junit_structure(junit).get("errors") == "1"

    code, _, err = check(runs("c3", BASE, version="2.0"), "--baseline", baseline_file)
    assert code == 2 and "versions differ" in err

    code, _, err = check(runs("c4", BASE), "--baseline", base, "--max-drop", "-1")
    assert code == 2 and "--max-drop" in err


def test_cli_check_broken_baseline_exits_2_without_traceback(runs, tmp_path):
    # A real process, the way CI runs it.
    broken = tmp_path / "baseline-broken.json"
    broken.write_text("{")
    done = subprocess.run([sys.executable, "-m", "evalkit", "check", str(runs("c", BASE)),
                           "--baseline", str(broken)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


# ---------------------------------------------------------------- the tolerance boundary


def _boundary_runs(tmp_path, flipped: int, n: int = 4000, right: int = 1200) -> tuple[Path, Path]:
    """30.0% of n items right at baseline; the candidate gets `flipped` of them wrong."""
    base = {str(i): float(i < right) for i in range(n)}
    cand = {**base, **{str(i): 0.0 for i in range(flipped)}}
    return (make_run_folder(tmp_path / f"b{flipped}" / "toy", base, checkpoint="base"),
            make_run_folder(tmp_path / f"c{flipped}" / "toy", cand, checkpoint="cand"))


def test_drop_equal_to_the_tolerance_is_tolerated_both_sides(tmp_path, monkeypatch, capsys):
    # The case: n = 4000, b = 40, c = 0 is 30.0% -> 29.0%, exactly 1 pp; in floats
    # 100 * (0.29 - 0.3) is 1.0000000000000009 pp, which used to fail the gate.
    base, cand = _boundary_runs(tmp_path, 40)
    assert 100 * (0.3 - 0.29) > 1.0  # the float trap is real
    result = gate.run_gate(cand, base, max_drop=1.0)
    (row,) = result.rows
    assert (row.row.b, row.row.c, row.row.verdict) == (40, 0, "regressed")
    assert result.exit_code == 0 and "within the 1 pp tolerance" in row.message
    code, _out, err = _check(monkeypatch, capsys, str(cand), "--baseline", str(base),
                            "--max-drop", "1.0")
    assert code == 0, err
    # Just inside the tolerance on the other side: 0.99 pp tolerated drop, 1 pp drop -> fail.
    assert gate.run_gate(cand, base, max_drop=0.99).exit_code == 1
    # One more flipped item: 1.025 pp > 1 pp -> fail.
    base41, cand41 = _boundary_runs(tmp_path, 41)
    assert gate.run_gate(cand41, base41, max_drop=1.0).exit_code == 1
    assert gate.run_gate(cand41, base41, max_drop=1.025).exit_code == 0


def test_continuous_drop_at_the_tolerance_uses_the_documented_allowance(tmp_path):
    # Two samples per item; 80 of 4000 items lose one of two passes: -0.5 each, 1 pp in all.
    base = {str(i): [1.0, 1.0] if i < 1200 else [0.0, 0.0] for i in range(4000)}
    for flipped, code in ((80, 0), (81, 1)):
        cand = {**base, **{str(i): [1.0, 0.0] for i in range(flipped)}}
        b = make_run_folder(tmp_path / f"b{flipped}" / "toy", base)
        c = make_run_folder(tmp_path / f"c{flipped}" / "toy", cand)
        result = gate.run_gate(c, b, max_drop=1.0)
        assert result.rows[0].row.test == "permutation"
        assert result.rows[0].row.verdict == "regressed"
        assert result.exit_code == code, result.rows[0].message


def test_drop_exceeds_is_exact_for_counts_and_allows_1e9_pp_otherwise():
    from evalkit.stats import drop_exceeds

    assert not drop_exceeds(1.0000000000000009, 1.0, b=40, c=0, n=4000)
    assert drop_exceeds(1.025, 1.0, b=41, c=0, n=4000)
    assert drop_exceeds(1.0, 0.99, b=40, c=0, n=4000)
    assert not drop_exceeds(0.1 + 0.2, 0.3, b=3, c=0, n=1000)  # 0.3 pp == 0.3 pp
    assert not drop_exceeds(1.0 + 5e-10, 1.0) and drop_exceeds(1.0 + 2e-9, 1.0)


# --------------------------------------------- malformed inputs: exit 2 + a JUnit error


def _cli(*args: str) -> tuple[int, str, str]:
    """The real entry point in-process, without pytest fixtures (hypothesis reuses them)."""
    import contextlib
    import io

    from evalkit.cli import main

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["evalkit", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    return exc.value.code or 0, out.getvalue(), err.getvalue()


SMALL = {str(i): float(i % 3 != 0) for i in range(30)}


def _damage_samples(folder: Path, how: str, value) -> None:
    path = folder / "samples.jsonl"
    lines = path.read_bytes().splitlines()
    i = value[0] % len(lines)
    if how == "bad utf-8":
        cut = value[1] % len(lines[i])
        lines[i] = lines[i][:cut] + value[2] + lines[i][cut:]
    else:
        record = json.loads(lines[i])
        if how == "non-numeric score" or how == "non-finite score":
            record["scores"]["acc"] = value[1]
        elif how == "missing field":
            record.pop(value[1])
        lines[i] = json.dumps(record).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")


def _damage_baseline_file(path: Path, how: str, value) -> None:
    raw = json.loads(path.read_text())
    task = raw["tasks"][0]
    i = value[0] % len(task["doc_ids"])
    if how == "baseline value":
        task["metrics"]["acc"]["values"][i] = value[1]
    elif how == "baseline missing field":
        del task[value[1]]
    elif how == "baseline bad utf-8":
        path.write_bytes(path.read_bytes()[:value[0] % 50] + value[2])
        return
    path.write_text(json.dumps(raw))  # json.dumps writes NaN / Infinity as their JS names


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hst
except ImportError:  # pragma: no cover - hypothesis is a pinned dev dependency
    given = None

_INVALID_UTF8 = hst.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82",
                                  b"\x80abc"]) if given else None
_DAMAGE = hst.one_of(
    hst.tuples(hst.just("bad utf-8"), hst.tuples(hst.integers(0, 99), hst.integers(0, 400),
                                                  _INVALID_UTF8)),
    hst.tuples(hst.just("non-numeric score"), hst.tuples(
        hst.integers(0, 99), hst.one_of(hst.sampled_from(["n/a", "", "1.0", "NaN"]), hst.text(),
                                        hst.lists(hst.integers(), max_size=2),
                                        hst.dictionaries(hst.text(max_size=3), hst.integers(),
                                                         max_size=1)))),
    hst.tuples(hst.just("non-finite score"), hst.tuples(
        hst.integers(0, 99), hst.sampled_from([float("nan"), float("inf"), float("-inf")]))),
    hst.tuples(hst.just("missing field"), hst.tuples(
        hst.integers(0, 99), hst.sampled_from(["doc_id", "sample_idx", "scores", "prompt_hash"]))),
    hst.tuples(hst.just("baseline value"), hst.tuples(
        hst.integers(0, 99), hst.one_of(hst.sampled_from([float("nan"), float("inf"), "n/a"]),
                                        hst.text(min_size=1), hst.lists(hst.integers(), max_size=1)
                                        ))),
    hst.tuples(hst.just("baseline missing field"), hst.tuples(
        hst.integers(0, 99), hst.sampled_from(["doc_ids", "prompt_hashes", "metrics", "task",
                                               "generation", "version"]))),
    hst.tuples(hst.just("baseline bad utf-8"), hst.tuples(hst.integers(0, 99), hst.just(0),
                                                          _INVALID_UTF8)),
    hst.tuples(hst.just("mismatched items"), hst.tuples(hst.integers(0, 99),
                                                        hst.booleans())),
) if given else None


def _assert_exit_2_with_junit_error(tmp: Path, args: list[str]) -> str:
    junit = tmp / "junit.xml"
    code, out, err = _cli("check", *args, "--junit", str(junit))
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    # The specific cause is named: not the catch-all for unexpected exceptions.
    assert "could not decide: " not in err, err
    suite = _check_junit_structure(junit)
    assert suite.get("errors") == "1" and suite.get("failures") == "0"
    (case,) = suite.findall("testcase")
    assert case.find("error") is not None
    return err


@pytest.mark.skipif(given is None, reason="hypothesis is not installed")
def test_malformed_baselines_and_runs_exit_2_with_a_junit_error():
    import tempfile

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(damage=_DAMAGE, damage_candidate=hst.booleans())
    def check_one(damage, damage_candidate):
        how, value = damage
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            base = make_run_folder(tmp / "base" / "toy", SMALL, checkpoint="base")
            cand = make_run_folder(tmp / "cand" / "toy", SMALL, checkpoint="cand")
            baseline: Path = base
            if how.startswith("baseline"):
                baseline = gate.write_baseline(base, tmp / "baseline.json")
                _damage_baseline_file(baseline, how, value)
            elif how == "mismatched items":
                docs = dict(SMALL)
                docs.pop(str(value[0] % len(SMALL)))
                other = make_run_folder(tmp / "other" / "toy", docs, checkpoint="other")
                cand, baseline = (other, base) if value[1] else (cand, other)
            else:
                _damage_samples(cand if damage_candidate else base, how, value)
            _assert_exit_2_with_junit_error(tmp, [str(cand), "--baseline", str(baseline)])

    check_one()


def test_averaged_metric_with_one_changed_item_is_decided_not_crashed(tmp_path):
    # 2 samples per item; one item's mean changes: the permutation test has one non-zero
    # difference (scipy raised "two or more observations" here) -> p = 1, exit 0.
    two = {str(i): [float(i % 2), 1.0] for i in range(20)}
    changed = {**two, "3": [0.0, 1.0]}
    base = make_run_folder(tmp_path / "b" / "toy", two)
    cand = make_run_folder(tmp_path / "c" / "toy", changed)
    junit = tmp_path / "junit.xml"
    code, _out, err = _cli("check", str(cand), "--baseline", str(base), "--junit", str(junit))
    assert code == 0, err
    row = gate.run_gate(cand, base).rows[0].row
    assert (row.test, row.p_value, row.verdict) == ("permutation", 1.0, "no significant change")
    assert _check_junit_structure(junit).get("errors") == "0"
    code, _, err = _cli("compare", str(base), str(cand), "--out", str(tmp_path / "cmp"))
    assert code == 0, err


def test_unwritable_junit_path_is_exit_2_not_a_traceback(runs, tmp_path):
    base = runs("base", BASE)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder is needed
    code, _, err = _cli("check", str(runs("same", BASE)), "--baseline", str(base),
                        "--junit", str(blocker / "junit.xml"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
