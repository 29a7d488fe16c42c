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


# spec_hash of the variant tasks before they were collapsed into bases + `extends:`: a task's
# hash keys its runs and cached generations, so merging a base must give the same spec.
VARIANT_SPEC_HASHES = {
    "critique_code": "ae2b73b73a8dcd88",
    "critique_code_chat": "f2a855c61cae61d3",
    "critique_code_correct": "493c62358fe0c380",
    "critique_code_correct_chat": "b1263c2ff1361b19",
    "critique_gsm8k": "579df2ba5d3f2da8",
    "critique_gsm8k_chat": "dea5e39a5a276772",
    "critique_gsm8k_correct": "6fe5913b4e89c206",
    "critique_gsm8k_correct_chat": "68f234ad29b0f11d",
    "critique_realcritic": "ee6a94981514cc8e",
    "critique_realcritic_chat": "87864a440b2c4a8e",
    "critique_realcritic_correct": "8f81690023776cd1",
    "critique_realcritic_correct_chat": "1871083e80362f0c",
    "finetunebench_coding_generalization": "0ec5b5873fde349c",
    "finetunebench_fictional_people_comparison": "8e28320e6030556c",
    "finetunebench_fictional_people_generalization": "b12a9dbadc38cdae",
    "finetunebench_fictional_people_memorization": "37d80d091170a573",
    "finetunebench_fictional_people_secondary": "f10ed970574f881e",
    "finetunebench_latest_news_date_changed": "1cd84e53aa227ed8",
    "finetunebench_latest_news_generalization": "9e5687424cf439c1",
    "finetunebench_latest_news_memorization": "22350d1e0ef779d5",
    "finetunebench_medical_generalization": "e01de590c6f7e11b",
    "finetunebench_medical_memorization": "053b972c600377ae",
}


def test_collapsed_variant_tasks_keep_their_spec_hashes():
    from evalkit.tasks.spec import load_spec

    tasks = list_tasks()
    for name, expected in VARIANT_SPEC_HASHES.items():
        assert load_spec(tasks[name]).spec_hash()[:16] == expected, name


def test_extends_merges_a_base_and_bases_are_not_tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_TASKS_PATH", str(tmp_path))
    (tmp_path / "_base.yaml").write_text(MINIMAL.format(name="unused")
                                         + "generation: {max_tokens: 32, until: [x]}\n")
    write_task(tmp_path, 'extends: _base.yaml\nname: child\nprompt: "Q2: {{q}}"\n'
               "generation: {max_tokens: 8}\n", name="child")
    write_task(tmp_path, "extends: child\nname: grandchild\n", name="grandchild")
    data = write_data(tmp_path, [{"q": "1+1", "a": "2"}])
    from evalkit.tasks.files import _index

    _index.cache_clear()
    try:
        assert "child" in list_tasks() and "_base" not in list_tasks()
        for name in ("child", "grandchild"):
            task = load_task(name, data_dir=data)
            # a mapping merges key by key; a scalar or list replaces the base's
            assert task.generation.max_tokens == 8 and task.generation.until == ["x"]
            assert task.prompt(task.docs()[0]) == "Q2: 1+1" and task.target(task.docs()[0]) == "2"
    finally:
        _index.cache_clear()


@pytest.mark.parametrize("text,message", [
    ("extends: missing.yaml\n", "field 'extends': no task 'missing.yaml'"),
    ("extends: toy.yaml\n", "field 'extends': names itself"),
    ("extends: [a]\n", "field 'extends': expected a file or task name"),
    ("extends: other.yaml\n", "'toy.yaml' extends itself"),
])
def test_extends_errors_name_the_file(tmp_path, text, message):
    (tmp_path / "other.yaml").write_text("extends: toy.yaml\n")
    with pytest.raises(EvalkitError, match=message):
        load_task(str(write_task(tmp_path, text + MINIMAL.format(name="toy"))))


@pytest.mark.parametrize("scorer,helper,message", [
    ("nowhere:make", None, "cannot import 'nowhere:make': No module named 'nowhere'"),
    ("helper:missing", "def make(config):\n    return 1\n", "cannot import 'helper:missing'"),
    ("helper:make", "def make(config):\n    return 1\n", "scorer 'helper:make' gave a int, not"),
    ("no_such_scorer", None, "unknown scorer 'no_such_scorer' .*exact_match.*module:function"),
])
def test_scorer_references_that_do_not_resolve(tmp_path, scorer, helper, message):
    if helper:
        (tmp_path / "helper.py").write_text(helper)
    text = MINIMAL.format(name="toy").replace("{name: exact_match}", f'{{name: "{scorer}"}}')
    with pytest.raises(EvalkitError, match=message):
        load_task(str(write_task(tmp_path, text)))


def test_a_broken_entry_point_is_one_line(tmp_path, monkeypatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[evalkit.tasks]\nbroken = not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(EvalkitError, match=r"entry point evalkit.tasks:broken = "
                       r"not_installed_pkg does not load: ModuleNotFoundError"):
        list_tasks()
