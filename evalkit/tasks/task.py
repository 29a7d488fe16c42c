"""A task: documents, prompts, targets and a scorer, built from a validated ``TaskSpec``."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cached_property, lru_cache
from pathlib import Path

import jinja2

from evalkit.errors import EvalkitError
from evalkit.plugins import import_ref
from evalkit.scoring import make_scorer
from evalkit.scoring.base import Metric, Scorer
from evalkit.tasks.data import Doc, load_records
from evalkit.tasks.fewshot import sample_shots
from evalkit.tasks.spec import GenerationSpec, TaskSpec

# Same settings as lm-eval's templates: a missing field is an error, trailing newlines kept.
_ENV = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True)


class Task:
    def __init__(self, spec: TaskSpec, path: Path, data_dir: Path | None = None):
        self.spec = spec
        self.path = path
        self.data_dir = data_dir
        self.scorer: Scorer = make_scorer(spec.scorer.name, dict(spec.scorer.model_extra or {}),
                                           near=path)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def generation(self) -> GenerationSpec:
        return self.spec.generation

    def metrics(self, n_samples: int) -> list[Metric]:
        return self.scorer.metrics(n_samples)

    # ------------------------------------------------------------------------------ docs

    def split_records(self, split: str) -> list[dict]:
        ds = self.spec.dataset
        s = ds.splits[split]
        if ds.loader:
            records = import_ref(ds.loader, self.path)(split, self.data_dir)
        else:
            hub = (ds.hub.path, ds.hub.name, s.hub_split or split) if ds.hub else None
            records = load_records(s.file, hub=hub, data_dir=self.data_dir)
        if s.process:
            records = import_ref(s.process, self.path)(records)
        if not records:
            raise EvalkitError(f"task {self.name}: split '{split}' has no documents")
        return records

    @cached_property
    def _all_docs(self) -> list[Doc]:
        records = self.split_records(self.spec.split)
        docs = [Doc(id=self._render(self.spec.doc_id, r) if self.spec.doc_id else str(i),
                    index=i, data=r) for i, r in enumerate(records)]
        if len({d.id for d in docs}) != len(docs):
            raise EvalkitError(f"task {self.name}: doc ids are not unique")
        if self.spec.conjugate:
            from evalkit.tasks.conjugate import apply_conjugate

            docs = apply_conjugate(self, docs)
        return docs

    def docs(self, limit: int | None = None) -> list[Doc]:
        if limit is not None and self.spec.group_by:  # the first `limit` docs of every group
            taken: dict[str, int] = defaultdict(int)
            picked = []
            for d in self._all_docs:
                taken[self.group(d.data)] += 1
                if taken[self.group(d.data)] <= limit:
                    picked.append(d)
            return picked
        return self._all_docs[:limit] if limit is not None else list(self._all_docs)

    def group(self, record: dict) -> str:
        """The group (``group_by`` field) a doc belongs to; "" for ungrouped tasks."""
        if not self.spec.group_by:
            return ""
        if self.spec.group_by not in record:
            raise EvalkitError(f"task {self.name}: group_by field '{self.spec.group_by}' is "
                               "missing from the data")
        return str(record[self.spec.group_by])

    @cached_property
    def _shots(self) -> list[list[dict]]:
        fs = self.spec.fewshot
        if fs.n == 0:
            return [[] for _ in self._all_docs]
        pool = self.split_records(fs.split)
        if not self.spec.group_by:
            return sample_shots(pool, [d.data for d in self._all_docs], fs.n,
                                sampler=fs.sampler, seed=fs.seed,
                                same_split=fs.split == self.spec.split)
        # Each group draws from its own pool with its own sampler, like one lm-eval subtask.
        pools: dict[str, list[dict]] = defaultdict(list)
        for r in pool:
            pools[self.group(r)].append(r)
        members: dict[str, list[Doc]] = defaultdict(list)
        for d in self._all_docs:
            members[self.group(d.data)].append(d)
        shots: list[list[dict]] = [[] for _ in self._all_docs]
        for g, docs in members.items():
            if len(pools[g]) < fs.n:
                raise EvalkitError(f"task {self.name}: group '{g}' has {len(pools[g])} few-shot "
                                   f"examples in split '{fs.split}', needs {fs.n}")
            drawn = sample_shots(pools[g], [d.data for d in docs], fs.n, sampler=fs.sampler,
                                 seed=fs.seed, same_split=fs.split == self.spec.split)
            for d, s in zip(docs, drawn, strict=True):
                shots[self._position(d)] = s
        return shots

    # --------------------------------------------------------------------------- prompts

    def prompt(self, doc: Doc) -> str | list[dict]:
        """The full prompt text, or chat messages for a chat task (rendered by the runner
        with the model's own template, whose hash run.json records)."""
        spec, fs = self.spec, self.spec.fewshot
        shots = [(self._render(spec.prompt, s), self._shot_answer(s))
                 for s in self._shots[self._position(doc)]]
        question = self._render(spec.prompt, doc.data)
        instruction = self._render(spec.instruction, doc.data) if spec.instruction else ""
        if not spec.chat:
            body = "".join(q + fs.target_delimiter + a + fs.delimiter for q, a in shots)
            return instruction + body + question
        messages = [{"role": "system", "content": spec.system}] if spec.system else []
        if fs.multiturn:
            for i, (q, a) in enumerate(shots):
                messages += [{"role": "user", "content": (instruction if i == 0 else "") + q},
                             {"role": "assistant", "content": a}]
            lead = "" if shots else instruction
            messages.append({"role": "user", "content": lead + question})
        else:
            body = "".join(q + fs.target_delimiter + a + fs.delimiter for q, a in shots)
            messages.append({"role": "user", "content": instruction + body + question})
        return messages

    def target(self, doc: Doc) -> str:
        return self._render(self.spec.target, doc.data)

    @cached_property
    def _positions(self) -> dict[int, int]:
        # A conjugate transform may drop docs, so a doc's index need not be its position.
        return {d.index: i for i, d in enumerate(self._all_docs)}

    def _position(self, doc: Doc) -> int:
        return self._positions[doc.index]

    def _shot_answer(self, record: dict) -> str:
        if self.spec.output_type == "multiple_choice":  # a shot answers with its choice's text
            return self.choices(record)[self.gold(record)]
        return self._render(self.spec.target, record)

    # ------------------------------------------------------------------- loglikelihood

    def choices(self, record: dict) -> list[str]:
        """The options of a multiple-choice doc (lm-eval's ``doc_to_choice``)."""
        c = self.spec.choices
        if isinstance(c, list):
            return [self._render(x, record) for x in c]
        rendered = self._render(c or "", record)
        try:
            value = ast.literal_eval(rendered)
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise EvalkitError(f"task file {self.path}: 'choices' must render to a list of "
                               f"strings, got {rendered[:80]!r}")
        return value

    def gold(self, record: dict) -> int:
        """Index of the right choice: the target renders to an index or to a choice's text."""
        target, choices = self._render(self.spec.target, record).strip(), self.choices(record)
        if target.lstrip("-").isdigit() and 0 <= int(target) < len(choices):
            return int(target)
        if target in choices:
            return choices.index(target)
        raise EvalkitError(f"task {self.name}: target {target!r} is neither a choice index nor "
                           f"one of the choices {choices}")

    def loglikelihood_pairs(self, doc: Doc, prompt: str) -> list[tuple[str, str]]:
        """(context, continuation) pairs to score for a doc whose rendered prompt is given."""
        if self.spec.output_type == "loglikelihood_rolling":
            return [("", self.target(doc))]
        # After a chat template's assistant header no space goes before the answer (lm-eval).
        delimiter = "" if self.spec.chat else self.spec.fewshot.target_delimiter
        return [(prompt, delimiter + c) for c in self.choices(doc.data)]

    def _render(self, template: str, record: dict) -> str:
        try:
            return _compiled(template).render(**record)
        except jinja2.UndefinedError as exc:
            raise EvalkitError(f"task file {self.path}: template uses a field the data lacks "
                               f"({exc.message})") from None
        except jinja2.TemplateSyntaxError as exc:
            raise EvalkitError(f"task file {self.path}: bad template: {exc.message}") from None


@lru_cache(maxsize=256)
def _compiled(template: str) -> jinja2.Template:
    return _ENV.from_string(template)
