"""Task files: loading, validation errors that name the file and field, data problems."""

from __future__ import annotations

import json

import pytest

from evalkit.errors import EvalkitError
from evalkit.tasks import list_tasks, load_task

MINIMAL = """\
name: {name}
version: "1"
dataset:
  splits:
    test: {{file: toy/test.jsonl}}
split: test
prompt: "Q: {{{{q}}}}\\nA:"
target: "{{{{a}}}}"
scorer: {{name: exact_match}}
"""


def write_task(tmp_path, text, name="toy"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def write_data(tmp_path, rows):
    d = tmp_path / "data" / "toy"
    d.mkdir(parents=True, exist_ok=True)
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "data"


def test_builtin_tasks_all_load():
    names = list_tasks()
    assert {"gsm8k", "gsm8k_cot_zeroshot", "gsm8k_chat"} <= set(names)
    for name in names:
        assert load_task(name).name == name


def test_a_yaml_task_end_to_end(tmp_path):
    data = write_data(tmp_path, [{"q": "1+1", "a": "2"}, {"q": "2+2", "a": "4"}])
    task = load_task(str(write_task(tmp_path, MINIMAL.format(name="toy"))), data_dir=data)
    docs = task.docs()
    assert [d.id for d in docs] == ["0", "1"]
    assert task.prompt(docs[1]) == "Q: 2+2\nA:" and task.target(docs[1]) == "4"


@pytest.mark.parametrize("text,message", [
    ("name: [unclosed", r"malformed task file .*toy.yaml \(line 1\)"),
    ("- just\n- a list\n", "expected a mapping"),
    (MINIMAL.format(name="toy").replace('version: "1"\n', ""), "field 'version': Field required"),
    (MINIMAL.format(name="toy").replace("split: test", "split: train"), "field 'split'"),
    (MINIMAL.format(name="toy") + "generation: {max_tokens: -1}\n",
     "field 'generation.max_tokens'"),
    (MINIMAL.format(name="toy") + "colour: blue\n", "field 'colour': Extra inputs"),
])
def test_malformed_task_files_name_file_and_field(tmp_path, text, message):
    with pytest.raises(EvalkitError, match=message):
        load_task(str(write_task(tmp_path, text)))


def test_unknown_task_suggests():
    with pytest.raises(EvalkitError, match="unknown task 'gsm8kk'; did you mean gsm8k"):
        load_task("gsm8kk")


def test_data_problems(tmp_path):
    path = write_task(tmp_path, MINIMAL.format(name="toy"))
    with pytest.raises(EvalkitError, match=r"data file toy/test\.jsonl not found in data dir"):
        load_task(str(path), data_dir=tmp_path / "elsewhere").docs()
    empty = write_data(tmp_path, [])
    with pytest.raises(EvalkitError, match="is empty"):
        load_task(str(path), data_dir=empty).docs()
    data = write_data(tmp_path, [{"question": "1+1", "a": "2"}])
    task = load_task(str(path), data_dir=data)
    with pytest.raises(EvalkitError, match="template uses a field the data lacks"):
        task.prompt(task.docs()[0])


def test_an_installed_wheel_finds_tasks_and_sandbox_under_its_prefix(tmp_path, monkeypatch):
    """A non-editable install has no checkout: pyproject's data-files put tasks/ and sandbox/
    under <prefix>/share/evalkit, and that is where evalkit must look."""
    import sys

    import evalkit.paths as paths

    share = tmp_path / "prefix" / "share" / "evalkit"
    (share / "tasks").mkdir(parents=True)
    (share / "sandbox").mkdir()
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path / "site-packages")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert paths.resource_dir("tasks") == share / "tasks"
    assert paths.resource_dir("sandbox") == share / "sandbox"
    monkeypatch.undo()
    assert paths.resource_dir("tasks") == paths.project_root() / "tasks"  # the checkout wins
