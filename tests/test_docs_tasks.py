"""docs/tasks.md works as written: its files are written to a temporary folder and used the way
the page says (a task folder on EVALKIT_TASKS_PATH, a scorer beside the YAML, a package that
offers a scorer and a task folder through installed entry points)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.scoring import ScoreInput
from evalkit.tasks import load_task
from evalkit.tasks.files import _index

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "tasks.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"```\w+ (file|output)=(\S+)\n(.*?)```", re.S)


def doc_blocks(kind: str) -> dict[str, str]:
    return {name: body for k, name, body in BLOCK.findall(DOC) if k == kind}


def write_doc_files(root: Path) -> None:
    for name, body in doc_blocks("file").items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)


def test_a_task_and_a_scorer_in_a_user_folder(tmp_path, monkeypatch):
    write_doc_files(tmp_path)
    # `export EVALKIT_TASKS_PATH=$PWD/mytasks`, then `evalkit tasks` lists the new tasks
    env = {**os.environ, "EVALKIT_TASKS_PATH": str(tmp_path / "mytasks"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    monkeypatch.setenv("EVALKIT_TASKS_PATH", env["EVALKIT_TASKS_PATH"])
    _index.cache_clear()
    try:
        listed = CliRunner().invoke(app, ["tasks"])
    finally:
        _index.cache_clear()
    assert listed.exit_code == 0, listed.output
    names = [line.split("\t")[0] for line in listed.output.splitlines()]
    assert {"capitals", "capitals_loose"} <= set(names)
    # `python check.py` prints what the page shows
    done = subprocess.run([sys.executable, "check.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == doc_blocks("output")["check.py"]


def test_a_package_offers_a_scorer_and_tasks_through_entry_points(tmp_path, monkeypatch):
    write_doc_files(tmp_path)
    pkg = tmp_path / "mybench"
    # what the page says to do by hand
    shutil.copy(tmp_path / "mytasks" / "capital_scorer.py", pkg / "mybench" / "scoring.py")
    (pkg / "mybench" / "__init__.py").write_text("")
    # `pip install ./mybench`, as an installed distribution: its package and a dist-info
    # holding the entry points its pyproject declares, in a folder on sys.path
    site = tmp_path / "site"
    shutil.copytree(pkg / "mybench", site / "mybench")
    project = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name']}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in project["entry-points"].items()))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("EVALKIT_TASKS_PATH", raising=False)
    _index.cache_clear()
    try:
        task = load_task("world_capitals", data_dir=tmp_path / "mydata")
    finally:
        _index.cache_clear()
    assert task.path == site / "mybench" / "world_capitals.yaml"
    assert type(task.scorer).__module__ == "mybench.scoring"
    doc = task.docs()[2]
    right = ScoreInput(doc=doc.data, prompt=task.prompt(doc), completion=" Nairobi",
                       target=task.target(doc))
    wrong = ScoreInput(doc=doc.data, prompt=task.prompt(doc), completion=" Mombasa",
                       target=task.target(doc))
    assert task.scorer(right).values == {"correct": 1.0}
    assert task.scorer(wrong).values == {"correct": 0.0}
