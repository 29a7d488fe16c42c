"""Data for the forgetting probes: MMLU's 57 subject CSVs and WikiText-2 documents.

MMLU (``../shared/data/mmlu/{dev,test}/<subject>_<split>.csv``, header
``question,choice0..choice3,answer``) becomes records shaped like the hub's ``cais/mmlu``
(``question``, ``subject``, ``choices``, ``answer``) plus ``row``, the position in its subject.

WikiText-2 raw becomes one record per article, as ``EleutherAI/wikitext_document_level`` (what
lm-eval's ``wikitext`` task reads): a page starts at each level-1 title line (`` = Title = ``)
and is its lines joined with ``\\n`` (62 pages in test, 60 in validation).
"""

from __future__ import annotations

import re
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.paths import data_dir as resolve_data_dir
from evalkit.tasks.data import load_records, read_file


def mmlu(split: str, data_dir: str | Path | None) -> list[dict]:
    root = resolve_data_dir(data_dir)
    if root is None:  # the hub's "all" config already has the subject per record
        records = load_records(None, hub=("cais/mmlu", "all", split))
        counts: dict[str, int] = {}
        for r in records:
            r["row"] = counts[r["subject"]] = counts.get(r["subject"], -1) + 1
        return records
    files = sorted((root / "mmlu" / split).glob(f"*_{split}.csv"))
    if not files:
        raise EvalkitError(f"no MMLU {split} files (mmlu/{split}/*_{split}.csv) in {root}")
    records = []
    for f in files:
        subject = f.name.removesuffix(f"_{split}.csv")
        for i, r in enumerate(read_file(f)):
            records.append({"question": r["question"], "subject": subject, "row": i,
                            "choices": [r[f"choice{k}"] for k in range(4)],
                            "answer": int(r["answer"])})
    return records


_TITLE = re.compile(r"^= [^=].* =$")


def wikitext_pages(split: str, data_dir: str | Path | None) -> list[dict]:
    files = {"test": "wiki.test.raw", "validation": "wiki.valid.raw"}
    root = resolve_data_dir(data_dir)
    if root is None:
        return load_records(None, hub=("EleutherAI/wikitext_document_level",
                                       "wikitext-2-raw-v1", split))
    path = root / "wikitext2" / files[split]
    if not path.exists():
        raise EvalkitError(f"data file wikitext2/{files[split]} not found in data dir {root}")
    pages: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if _TITLE.match(line.strip()):
            pages.append([])
        if pages:  # the blank line before the first title belongs to no article
            pages[-1].append(line)
    return [{"page": "\n".join(lines), "title": lines[0].strip(" =")} for lines in pages]


def wikitext_detokenize(text: str) -> str:
    """lm-eval's ``wikitext_detokenizer``: undo WikiText's Moses-style tokenization."""
    s = text.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    for a, b in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                 (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        s = s.replace(a, b)
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    for a, b in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="),
                 (" " + chr(176) + " ", chr(176)), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "),
                 (" 's", "'s")):
        s = s.replace(a, b)
    return s


def detokenized(records: list[dict]) -> list[dict]:
    return [{**r, "text": wikitext_detokenize(r["page"])} for r in records]
