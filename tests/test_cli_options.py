"""The commands share their options: every flag an error message names exists, and `compare`
offers what `run` offers."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

import evalkit
from evalkit.cli import app
from evalkit.cli.options import EngineOptions, with_engine_options

# Flags of other programs that messages quote in the sandbox's diagnostics: bubblewrap's, and
# systemd-run's (how to get a delegated cgroup).
FOREIGN = {"--ro-bind", "--user", "--scope"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _flags(command: Any) -> set[str]:
    return {o for p in command.params for o in getattr(p, "opts", []) + getattr(
        p, "secondary_opts", []) if o.startswith("--")}


def _commands() -> dict[str, Any]:
    root = typer.main.get_command(app)
    out: dict[str, Any] = {}

    def walk(cmd: Any, prefix: str) -> None:
        if hasattr(cmd, "commands"):  # a group (typer ships its own click classes)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            out[prefix] = cmd

    walk(root, "")
    return out


def _error_message_flags() -> dict[str, set[str]]:
    """Flags named in the string literals of ``raise`` statements in evalkit/."""
    found: dict[str, set[str]] = {}
    for path in Path(evalkit.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for const in ast.walk(node.exc):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        for flag in FLAG.findall(const.value):
                            found.setdefault(flag, set()).add(str(path.name))
    return found


def test_every_flag_named_in_an_error_message_exists():
    existing = set().union(*(_flags(c) for c in _commands().values()))
    named = _error_message_flags()
    assert named, "the scan found no flags at all"
    missing = {f: sorted(where) for f, where in named.items() if f not in existing | FOREIGN}
    assert not missing, f"error messages name flags no command has: {missing}"


def test_the_scan_catches_a_flag_that_does_not_exist():
    existing = set().union(*(_flags(c) for c in _commands().values()))
    assert "--adapter-model-name" not in existing  # the flag an old message named
    assert FLAG.findall("pass --adapter-model-name or --base-url") == [
        "--adapter-model-name", "--base-url"]


def test_compare_offers_every_generation_and_engine_option_of_run():
    commands = _commands()
    run_only = {"--model", "--out"}  # run's own: compare takes BASE TUNED and --runs-dir
    missing = _flags(commands["run"]) - run_only - _flags(commands["compare"])
    assert not missing, f"compare lacks {sorted(missing)}"


def test_seed_and_resample_seed_are_apart():
    commands = _commands()
    compare, check = commands["compare"], commands["check"]
    by_opt = {o: p for p in compare.params for o in getattr(p, "opts", [])}
    assert by_opt["--seed"].name == "seed" and by_opt["--resample-seed"].name == "resample_seed"
    assert "--resample-seed" in _flags(check) and "--seed" not in _flags(check)


def test_run_compare_and_check_accept_task_and_tasks():
    for name in ("run", "compare", "check"):
        assert {"--task", "--tasks"} <= _flags(_commands()[name]), name


def test_each_main_command_help_shows_an_example_and_its_output():
    for name in ("run", "compare", "check"):
        text = _commands()[name].help or ""
        assert "Example: evalkit " + name in text and "Output:" in text, name


def test_run_and_compare_hand_the_shared_engine_options_to_the_runner():
    """The shared sandbox/engine options reach the command as one EngineOptions (defaults
    included) and turn into the runner's settings for the chosen backend."""
    seen: list[Any] = []
    probe = typer.Typer()

    @probe.command()
    @with_engine_options
    def cmd(backend: str = "vllm", engine: EngineOptions = EngineOptions()) -> None:
        seen.append(engine.run_options(backend))

    args = ["--backend", "openai", "--no-cache", "--sandbox", "none", "--workers", "3",
            "--base-url", "http://x/v1", "--served-model-name", "m"]
    assert CliRunner().invoke(probe, args).exit_code == 0
    assert CliRunner().invoke(probe, ["--tp", "2", "--max-model-len", "512"]).exit_code == 0
    assert seen == [
        {"use_cache": False, "sandbox": "none", "allow_weaker_isolation": False, "workers": 3,
         "backend_options": {"base_url": "http://x/v1", "served_model_name": "m"}},
        {"use_cache": True, "sandbox": "process", "allow_weaker_isolation": False,
         "workers": None,
         "backend_options": {"tensor_parallel_size": 2, "max_model_len": 512, "dtype": "auto"}}]
    shared = {"--no-cache", "--sandbox", "--allow-weaker-isolation", "--workers", "--tp",
              "--max-model-len", "--dtype", "--batch-size", "--base-url", "--served-model-name"}
    commands = _commands()
    assert shared <= _flags(commands["run"]) and shared <= _flags(commands["compare"])
