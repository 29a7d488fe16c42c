"""Every `evalkit` command and flag the README and docs/*.md name exists in the command line."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from evalkit.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `evalkit <command> [<subcommand>] ...` up to the end of an inline code span or of a
# (backslash-continued) line in a code block.
CALL = re.compile(r"\bevalkit((?:[ \t]+(?:\\\n)?[^`\n]*)*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def snippets(text: str) -> list[str]:
    """Inline code spans and code-block lines that run evalkit."""
    found = []
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    for block in blocks:
        found += [m.group(0) for m in CALL.finditer(block.replace("\\\n", " "))]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        found += [m.group(0) for m in CALL.finditer(span)]
    return found


def resolve(group, words: list[str]) -> tuple[object, str] | None:
    """The command a snippet's words name (None: the words are prose, e.g. "evalkit itself").
    Typer's commands are its own click's: duck-typed here."""
    command, path = group, []
    for word in words:
        if not hasattr(command, "get_command") or word.startswith("-"):
            break
        sub = command.get_command(command.context_class(command), word)
        if sub is None:
            if command is group:
                return None
            break
        command, path = sub, [*path, word]
    return (command, " ".join(path)) if path else (group, "")


def test_every_documented_command_and_flag_exists():
    group = typer.main.get_command(app)
    checked, missing = 0, []
    for doc in DOCS:
        for snippet in snippets(doc.read_text(encoding="utf-8")):
            words = snippet.split()[1:]
            found = resolve(group, words)
            if found is None:
                if words and re.fullmatch(r"[a-z][a-z-]+", words[0]) and words[0] not in (
                        "is", "and", "itself", "the", "run's", "runs"):
                    missing.append(f"{doc.name}: `{snippet.strip()}`: no command {words[0]!r}")
                continue
            command, name = found
            options = {o for p in command.params for o in [*p.opts, *p.secondary_opts]}
            options |= {"--help"} | ({"--version"} if command is group else set())
            for flag in FLAG.findall(snippet):
                checked += 1
                if flag not in options:
                    missing.append(f"{doc.name}: `evalkit {name}` has no {flag}")
    assert not missing, "\n".join(missing)
    assert checked > 20  # the docs do name flags: the parser found them
