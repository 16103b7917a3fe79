"""Every `cxrkit ...` command line the docs show must still parse.

Thirty-odd sessions of docs quote hundreds of commands; a renamed option or recipe would leave them silently wrong.
This reads the code spans of the README, docs/, benchmarks/README.md and the model cards, and checks each command's
subcommand, its options and the recipe and model names it passes against the real parser and registries.
"""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from cxrkit.cli.main import build_parser
from cxrkit.models import shipped_models
from cxrkit.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "src" / "cxrkit" / "weights").glob("*.md"))]
NAMED = {"--recipe": "recipe", "--recipes": "recipe", "--model": "model", "--models": "model"}


def _code_spans(text: str) -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return blocks + inline


def doc_commands(text: str) -> list[list[str]]:
    """The argument lists after `cxrkit` in a markdown text's code (continuations joined; redirections, pipes and
    trailing comments cut; environment prefixes such as `nohup` or `VAR=1` skipped)."""
    found = []
    for span in _code_spans(text):
        for line in re.sub(r"\\\n\s*", " ", span).splitlines():
            line = line.strip()
            match = re.search(r"(?:^|[\s(;&|])cxrkit\s+(\S.*)", line)
            if not match or line.startswith("#"):
                continue
            command = re.split(r"\s(?:>|2>|\||&&|;|#)", match.group(1))[0]
            try:
                found.append(shlex.split(command))
            except ValueError:  # an unbalanced quote in prose-like code: judge the words anyway
                found.append(command.split())
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def problems(args: list[str], root: argparse.ArgumentParser, recipes, models) -> list[str]:
    """What in one documented command the CLI would reject: an unknown (sub)command, option or built-in name."""
    parser, path, args = root, [], list(args)
    while args and _subcommands(parser) and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in _subcommands(parser):
            return [f"unknown command {' '.join([*path, name])!r}"]
        parser, path = _subcommands(parser)[name], [*path, name]
    found = []
    for i, token in enumerate(args):
        if not token.startswith("--"):
            continue
        option = token.split("=")[0]
        if option not in parser._option_string_actions:
            found.append(f"{' '.join(path)}: unknown option {option}")
        kind = NAMED.get(option)
        if kind and i + 1 < len(args):
            for name in args[i + 1].split(","):
                # bare lower-case words are registry names; paths, files and PLACEHOLDERS are the reader's own
                if re.fullmatch(r"[a-z][a-z0-9_]*", name) and name not in (recipes if kind == "recipe" else models):
                    found.append(f"{' '.join(path)}: no built-in {kind} {name!r}")
    return found


def test_the_checker_catches_what_it_is_for():
    root, recipes, models = build_parser(), set(RECIPES), set(shipped_models())
    text = ("Run `cxrkit train --recipe cxr_cnn --data D --out R` or\n```bash\ncxrkit evaluate --model cxr_cnn \\\n"
            "    --dta D > log 2>&1 &\nnohup cxrkit trian --recipe x\ncxrkit predict --model nosuch a.png\n"
            "cxrkit train --recipe nosuch_recipe --data D --out R  # comment --bogus\n```\n")
    commands = doc_commands(text)
    assert commands[0][:2] == ["evaluate", "--model"] and len(commands) == 5
    found = [p for c in commands for p in problems(c, root, recipes, models)]
    assert found == ["evaluate: unknown option --dta", "unknown command 'trian'", "predict: no built-in model 'nosuch'",
                     "train: no built-in recipe 'nosuch_recipe'"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_parse(doc):
    root, recipes, models = build_parser(), set(RECIPES), set(shipped_models())
    commands = doc_commands(doc.read_text(encoding="utf-8"))
    found = [f"cxrkit {' '.join(c)[:90]}: {p}" for c in commands for p in problems(c, root, recipes, models)]
    assert not found, "\n".join(found)


def test_the_docs_quote_commands():
    assert sum(len(doc_commands(d.read_text(encoding="utf-8"))) for d in DOCS) > 100
