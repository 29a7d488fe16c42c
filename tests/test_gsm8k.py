"""GSM8K must equal lm-evaluation-harness 0.4.13: prompts, extraction, normalization, scores.

The reference is lm-eval itself (installed with the dev extra), run on the same local files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evalkit.scoring import ScoreInput
from evalkit.tasks import load_task

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is part of the dev extra")


def lm_eval_task(name: str, data_dir: Path, yaml_name: str):
    """lm-eval's own task object, reading our local copies of the GSM8K files."""
    from lm_eval.api.task import ConfigurableTask

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k" / yaml_name)
                            .read_text())
    config.pop("tag", None)
    files = {split: str(data_dir / f"gsm8k/{split}.jsonl") for split in ("train", "test")}
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(seed=1234)  # lm-eval's default fewshot_random_seed
    return task


@pytest.mark.parametrize("name,yaml_name", [("gsm8k", "gsm8k.yaml"),
                                            ("gsm8k_cot_zeroshot", "gsm8k-cot-zeroshot.yaml")])
def test_prompts_byte_identical_to_lm_eval(data_dir, name, yaml_name):
    ref = lm_eval_task(name, data_dir, yaml_name)
    ref.build_all_requests(limit=200, rank=0, world_size=1)
    ref_prompts = [i.args[0] for i in sorted(ref.instances, key=lambda i: i.doc_id)]
    ref_until = ref.instances[0].args[1]["until"]

    task = load_task(name)
    ours = [task.prompt(d) for d in task.docs(200)]
    assert len(ours) == len(ref_prompts) == 200
    mismatched = [i for i, (a, b) in enumerate(zip(ours, ref_prompts, strict=True)) if a != b]
    assert mismatched == []
    assert task.generation.until == ref_until


def test_fewshot_draws_do_not_depend_on_limit():
    task = load_task("gsm8k")
    full = task.docs()
    assert task.prompt(task.docs(3)[2]) == task.prompt(full[2])
    # doc 2's shots are the third draw of the seeded sampler: differ from doc 0's
    assert task.prompt(full[0]).split("\n\n")[:5] != task.prompt(full[2]).split("\n\n")[:5]


# completion, gold final answer, expected strict extraction, expected flexible extraction
TRICKY = [
    (" She makes 9 * 2 = $18.\n#### 18", "18", "18", "18"),
    (" 3 + 4 = 7\n#### 7.", "7", "7.", "7."),                       # trailing dot dropped
    (" Total is $1,234.\n#### $1,234.", "1234", "[invalid]", "$1,234."),  # strict needs digits
    (" He owes #### -5", "-5", "-5", "-5"),                         # negative numbers
    (" The answer is 2.5 hours.\n#### 2.5", "2.5", "2.5", "2.5"),   # decimals
    (" I don't know.", "12", "[invalid]", "[invalid]"),             # no number at all
    (" #### 12\n\nQuestion: How many? Answer: 3 + 4 = 7\n#### 7", "12", "12", "7"),
    # a model reciting a few-shot answer first: strict takes the FIRST match, flexible the LAST
    (" First 10 then 20 then 30", "30", "[invalid]", "30"),
    (" #### 1,000,000", "1000000", "1,000,000", "1,000,000"),
    (" so 5 apples", "5", "[invalid]", "5"),                        # single digit via group 2
    (" costs $5", "5", "[invalid]", "$5"),
    (" #### 0.50", "0.5", "0.50", "0.50"),                           # no numeric equivalence
    ("", "3", "[invalid]", "[invalid]"),
    (" #### 18\n", "18", "18", "18"),
]


@pytest.mark.parametrize("completion,gold,strict,flexible", TRICKY)
def test_extraction_and_scores_match_lm_eval(data_dir, completion, gold, strict, flexible):
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    task = load_task("gsm8k")
    target = f"Some rationale.\n#### {gold}"
    score = task.scorer(ScoreInput(doc={}, prompt="", completion=completion, target=target))
    assert score.extracted == {"strict-match": strict, "flexible-extract": flexible}

    ref_path = Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml"
    ref_yaml = yaml.safe_load(ref_path.read_text())
    metric = ref_yaml["metric_list"][0]
    for f in ref_yaml["filter_list"]:
        regex = f["filter"][0]
        ref_filter = RegexFilter(regex_pattern=regex["regex_pattern"],
                                 group_select=regex.get("group_select", 0))
        ref_extracted = next(iter(ref_filter.apply([[completion]], [{}])))[0]
        assert score.extracted[f["name"]] == ref_extracted
        ref_score = exact_match_hf_evaluate(
            [ref_extracted], [target], regexes_to_ignore=metric["regexes_to_ignore"],
            ignore_case=metric["ignore_case"], ignore_punctuation=metric["ignore_punctuation"],
        )["exact_match"]
        assert score.values[f"exact_match,{f['name']}"] == ref_score


def test_hand_checked_scores():
    """Independent of lm-eval: what a person expects from the normalization rules."""
    task = load_task("gsm8k")

    def strict_and_flex(completion, gold):
        s = task.scorer(ScoreInput(doc={}, prompt="", completion=completion,
                                   target=f"x\n#### {gold}"))
        return s.values["exact_match,strict-match"], s.values["exact_match,flexible-extract"]

    assert strict_and_flex(" #### $1,234.", "1,234") == (0.0, 1.0)  # strict regex skips "$"
    assert strict_and_flex(" #### 1,234.", "1234") == (1.0, 1.0)    # "," and final "." dropped
    assert strict_and_flex(" #### -3", "-3") == (1.0, 1.0)
    assert strict_and_flex(" #### 0.50", "0.5") == (0.0, 0.0)     # string compare, not numeric
    assert strict_and_flex(" none", "4") == (0.0, 0.0)
