"""Each command against an unwritable output, input that would silently give wrong results, and
the small contracts of the command line (exit codes, file modes, `tasks`, `--version`)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from test_cli_errors import assert_clean_error, evalkit

from evalkit.checkpoints import resolve
from evalkit.run.format import load_run
from evalkit.run.runner import RunOptions, run_task


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """Two finished gsm8k runs (different seeds) of the tiny model: BASE and TUNED sides."""
    root = tmp_path_factory.mktemp("runs")
    folders = [run_task(resolve(tiny_llama), "gsm8k", RunOptions(
        backend="hf", limit=3, max_tokens=4, seed=seed, out_dir=root / name, progress=False))
        for name, seed in (("a", 1), ("b", 2))]
    return [str(f) for f in folders]


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_run_to_an_unwritable_out(tmp_path, tiny_llama, a_file):
    for out in (a_file, a_file / "runs", "/proc/evalkit-runs"):
        proc = evalkit("run", "--model", str(tiny_llama), "--task", "gsm8k", "--limit", "1",
                       "--backend", "hf", "--out", str(out))
        assert_clean_error(proc, "is not a writable folder", tmp_path / "none")


def test_compare_and_check_to_unwritable_outputs(runs, tmp_path, a_file, tiny_llama):
    base, tuned = runs
    assert_clean_error(evalkit("compare", base, tuned, "--out", str(a_file / "cmp")),
                       str(a_file), tmp_path / "none")
    # checkpoints: refused before any model is loaded or generation starts
    assert_clean_error(evalkit("compare", str(tiny_llama), "builtin:smollm2-135m", "--tasks",
                               "gsm8k", "--runs-dir", str(tmp_path / "runs"),
                               "--out", str(a_file)),
                       "is not a writable folder", tmp_path / "none")
    # exit 2, never 1: 1 is the gate's "regression"
    assert_clean_error(evalkit("check", tuned, "--baseline", base, "--junit",
                               "/proc/evalkit.xml"), "/proc/evalkit.xml", tmp_path / "none")
    assert_clean_error(evalkit("check", tuned, "--write-baseline", str(a_file / "b.json")),
                       str(a_file), tmp_path / "none")
    junit = tmp_path / "junit.xml"  # writable: it records why the gate broke
    assert_clean_error(evalkit("check", tuned, "--baseline", base, "--junit", str(junit),
                               "--markdown", "/proc/evalkit.md"), "/proc/evalkit.md",
                       tmp_path / "none")
    assert "<error" in junit.read_text() and "/proc/evalkit.md" in junit.read_text()


def test_analyze_edit_finetune_to_unwritable_outputs(tmp_path, tiny_llama, a_file):
    model = str(tiny_llama)
    for args in (["analyze", model, model, "--out", str(a_file)],
                 ["edit", model, "--base", model, "--scale-intruders", "0.5",
                  "--out", str(a_file / "x" / "edited")],
                 ["finetune", model, "--data", "gsm8k:train", "--method", "lora",
                  "--out", str(a_file / "x" / "tuned")]):
        assert_clean_error(evalkit(*args), "is not a writable folder", tmp_path / "none")


@pytest.mark.parametrize("args, message", [
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--task", ""], "--task names no task"),
    (["--task", " , "], "--task names no task"),
    (["--tp", "0", "--backend", "vllm"], "--tp must be at least 1"),
    (["--dtype", "float7", "--backend", "vllm"], "unknown --dtype 'float7'"),
    (["--max-model-len", "99999", "--backend", "vllm"], "longer than the model's context"),
    # the tiny llama's heads are 16 wide: no CPU attention kernel (was a 93-line traceback)
    (["--backend", "vllm"], "no attention kernel for head size 16"),
])
def test_refused_before_anything_runs(args, message, tmp_path, tiny_llama):
    out = tmp_path / "runs"
    base = {"--model": str(tiny_llama), "--task": "gsm8k", "--limit": "1", "--backend": "hf",
            "--out": str(out)}
    for flag in args[::2]:
        base.pop(flag, None)
    proc = evalkit("run", *[x for kv in base.items() for x in kv], *args)
    assert_clean_error(proc, message, out)


def test_a_smaller_limit_into_the_same_folder_is_refused(tmp_path, tiny_llama):
    """Metrics describe exactly the samples compare and check read."""
    out = tmp_path / "runs"

    def run(limit):
        return evalkit("run", "--model", str(tiny_llama), "--task", "gsm8k", "--limit", limit,
                       "--max-tokens", "4", "--backend", "hf", "--out", str(out),
                       env={"EVALKIT_CACHE_DIR": str(tmp_path / "cache")})

    assert run("5").returncode == 0
    (folder,) = out.glob("gsm8k/*")
    refused = run("3")
    assert refused.returncode == 2 and "outside this selection" in refused.stderr
    held = load_run(folder)  # untouched
    assert len(held.samples) == 5 and held.metrics.metrics["exact_match,strict-match"].n == 5
    assert run("6").returncode == 0  # extending resumes: one more item
    held = load_run(folder)
    assert held.header.limit == 6 and held.header.counts["resumed"] == 5
    assert len(held.samples) == 6 and held.metrics.metrics["exact_match,strict-match"].n == 6


def test_compare_with_itself_needs_allow_same(runs, tmp_path):
    base, _ = runs
    proc = evalkit("compare", base, base + "/", "--out", str(tmp_path / "cmp"))
    assert_clean_error(proc, "BASE and TUNED are the same", tmp_path / "none")
    proc = evalkit("compare", base, base, "--allow-same", "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "comparing" in proc.stderr and "with itself" in proc.stderr


def test_a_sandbox_that_cannot_start_leaves_no_folder(tmp_path, tiny_llama):
    out = tmp_path / "runs"
    proc = evalkit("run", "--model", str(tiny_llama), "--task", "humaneval", "--limit", "1",
                   "--max-tokens", "4", "--backend", "hf", "--sandbox", "chroot",
                   "--out", str(out))
    assert_clean_error(proc, "unknown sandbox backend 'chroot'", out)


def test_run_files_follow_the_umask(runs):
    folder = runs[0]
    mask = os.umask(0)
    os.umask(mask)
    modes = {name: stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
             for name in ("run.json", "metrics.json", "samples.jsonl")}
    assert set(modes.values()) == {0o666 & ~mask}, modes


def test_sandbox_run_exit_code_says_whether_the_program_passed(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("print('ok')\n")
    bad.write_text("raise SystemExit(3)\n")
    for flags in ([], ["--json"]):
        assert evalkit("sandbox", "run", str(good), "--backend", "none", *flags).returncode == 0
        assert evalkit("sandbox", "run", str(bad), "--backend", "none", *flags).returncode == 1


def test_tasks_piped_json_and_a_bad_user_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: [x\n")
    env = {"EVALKIT_TASKS_PATH": str(tmp_path)}
    piped = evalkit("tasks", env=env)
    assert piped.returncode == 0
    names = [line.split("\t")[0] for line in piped.stdout.splitlines()]
    assert "critique_realcritic_correct_chat" in names and "gsm8k" in names  # never cut
    assert "…" not in piped.stdout
    warnings = piped.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: malformed task file")
    listed = json.loads(evalkit("tasks", "--json", env=env).stdout)
    assert {"gsm8k", "humaneval"} <= {t["name"] for t in listed["tasks"]}
    assert "broken" not in {t["name"] for t in listed["tasks"]}
    assert listed["suites"] and all("tasks" in s for s in listed["suites"])


def test_version():
    from evalkit import __version__

    proc = evalkit("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"evalkit {__version__}"


@pytest.mark.slow
def test_cpu_head_sizes_are_vllms():
    """check_engine_options reads the CPU engine's head sizes without importing vLLM."""
    pytest.importorskip("vllm")
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the CPU engine's list")
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    from evalkit.models.vllm import CPU_HEAD_SIZES

    assert list(CPU_HEAD_SIZES) == CPUAttentionBackend.get_supported_head_sizes()
