"""The docs checker behind tests/test_docs.py: broken links and anchors, stale `llmops` commands and options,
`make` targets that do not exist, and `llmops.X` names a Python example imports that do not exist.

    problems = check([REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    # ["docs/x.md:12: `llmops runs lst`: `llmops runs` has no command 'lst' (list|search|show)", ...]

Each problem names the file, the line and what is wrong. Commands are read from shell-like code blocks
(bash, sh, console, text, yaml, or no language) and from inline code that starts with `llmops `, `make `,
or holds `-m llmops.cli` (torchrun); they are checked against the Click tree Typer builds from
`llmops.cli.app`, so a renamed command or option fails here before a reader finds it.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from llmops.docsgen import slug

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text", "yaml", "yml"}
OPERATORS = {"|", "||", "&", "&&", ";", ";;", ">", ">>", "<", "(", ")", "<<", ">&", "&>"}
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)(.*)$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|\.\.\.|…)$")


@dataclass
class Block:
    """A fenced code block: its language, info string words after it, first body line (1-based) and body."""

    lang: str
    info: list[str]
    line: int
    body: str


@dataclass
class Page:
    path: Path
    text: str
    blocks: list[Block] = field(default_factory=list)
    prose: str = ""  # the text with every fenced line blanked (line numbers kept)

    @classmethod
    def read(cls, path: Path) -> "Page":
        page = cls(path, path.read_text(encoding="utf-8"))
        prose, fence, body, start = [], None, [], 0
        for no, line in enumerate(page.text.splitlines(), 1):
            m = FENCE.match(line)
            if fence is None and m:
                fence, start, body = m, no + 1, []
                prose.append("")
            elif fence is not None and m and m.group(1)[0] == fence.group(1)[0] \
                    and len(m.group(1)) >= len(fence.group(1)) and not m.group(2):
                lang, *info = [fence.group(2).lower(), *fence.group(3).split()]
                page.blocks.append(Block(lang, info, start, "\n".join(body)))
                fence = None
                prose.append("")
            elif fence is not None:
                body.append(line)
                prose.append("")
            else:
                prose.append(line)
        page.prose = "\n".join(prose)
        return page

    def anchors(self) -> set[str]:
        """GitHub's heading anchors: the slug, then `-1`, `-2`, … for repeats."""
        seen: dict[str, int] = {}
        found = set()
        for line in self.prose.splitlines():
            m = HEADING.match(line)
            if m:
                base = slug(m.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
        return found

    def inline_code(self) -> Iterator[tuple[int, str]]:
        """(line, text) of each inline code span outside fenced blocks and outside HTML comments."""
        prose = re.sub(r"<!--.*?-->", lambda m: re.sub(r"[^\n]", " ", m.group(0)), self.prose, flags=re.S)
        for m in INLINE.finditer(prose):
            if "\n\n" not in m.group(2):
                yield prose.count("\n", 0, m.start()) + 1, " ".join(m.group(2).split())

    def shell_lines(self) -> Iterator[tuple[int, str]]:
        """(line, text) of each logical line of the shell-like blocks (`\\` continuations joined)."""
        for block in self.blocks:
            if block.lang not in SHELL_LANGS:
                continue
            pending, first = "", 0
            for no, line in enumerate(block.body.splitlines(), block.line):
                if not pending:
                    first = no
                if line.rstrip().endswith("\\"):
                    pending += line.rstrip()[:-1] + " "
                    continue
                yield first, pending + line
                pending = ""
            if pending:
                yield first, pending

    def where(self, line: int, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{line}"


# links ----------------------------------------------------------------------------------------------------------
def check_links(page: Page, root: Path = REPO) -> list[str]:
    """Every relative link resolves to a file or folder, and every `#anchor` to a heading of its page."""
    problems = []
    prose = INLINE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), page.prose)
    for m in LINK.finditer(prose):
        target, line = m.group(1), prose.count("\n", 0, m.start()) + 1
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (page.path.parent / file_part).resolve() if file_part else page.path
        if not dest.exists():
            problems.append(f"{page.where(line, root)}: link {target!r}: no file {file_part!r} "
                            f"next to {page.path.name}; fix the path or create the page")
        elif anchor and dest.suffix == ".md" and anchor not in Page.read(dest).anchors():
            problems.append(f"{page.where(line, root)}: link {target!r}: {dest.name} has no heading "
                            f"with the anchor #{anchor}; link one of its headings")
    return problems


# commands -------------------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose or YAML: fall back to plain words
        return text.split()


def _starts_command(words: list[str], i: int) -> bool:
    """Whether words[i] is where a shell command begins (not a word in prose or in a YAML `name:`)."""
    before = words[i - 1] if i else None
    return before is None or before in OPERATORS or before in ("run:", "$", "-", "time", "exec") \
        or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", before) is not None


def commands_in(text: str) -> Iterator[tuple[str, list[str]]]:
    """("llmops" or "make", its words up to the next shell operator) for each command that `text` runs."""
    words = _words(text)
    for i, word in enumerate(words):
        if (word == "llmops" or word.endswith("/llmops")) and _starts_command(words, i):
            start, tool = i + 1, "llmops"
        elif word == "-m" and words[i + 1:i + 2] in (["llmops"], ["llmops.cli"]):
            start, tool = i + 2, "llmops"  # python -m llmops.cli, torchrun … -m llmops.cli
        elif word == "make" and _starts_command(words, i):
            start, tool = i + 1, "make"
        else:
            continue
        rest = []
        for w in words[start:]:
            if w in OPERATORS:
                break
            rest.append(w)
        yield tool, rest


def _option(command, name: str):
    for param in command.params:
        if param.param_type_name == "option" and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def command_problem(words: list[str], root) -> str | None:
    """Why `llmops WORDS` is not a real command line, or None. Placeholders (`COMMAND`, `…`) end the check."""
    command, path, i = root, ["llmops"], 0
    while i < len(words):
        word = words[i].strip("[]")
        if word in ("...", "…") or word == "--":
            return None
        if word.startswith("-") and len(word) > 1:
            for name in word.split("=", 1)[0].split("/"):
                if name == "--help":
                    continue
                param = _option(command, name)
                if param is None:
                    known = sorted((o for p in command.params if p.param_type_name == "option" for o in p.opts),
                                   key=lambda o: o.lstrip("-"))
                    return f"`{' '.join(path)}` has no option {name}" + (f" ({', '.join(known)})" if known else "")
                if not param.is_flag and "=" not in word:
                    i += 1  # its value
        elif hasattr(command, "commands"):
            if word in command.commands:
                command = command.commands[word]
                path.append(word)
            elif PLACEHOLDER.match(word):
                return None
            else:
                return f"`{' '.join(path)}` has no command {word!r} ({'|'.join(sorted(command.commands))})"
        i += 1
    return None


def _make_targets(makefile: Path) -> set[str]:
    text = makefile.read_text(encoding="utf-8") if makefile.is_file() else ""
    return {t for m in re.finditer(r"^([A-Za-z0-9_.%/-]+(?:\s+[A-Za-z0-9_.%/-]+)*)\s*:(?!=)", text, re.M)
            for t in m.group(1).split() if not t.startswith(".")}


def check_commands(page: Page, root: Path = REPO) -> list[str]:
    """Every `llmops …` command line names real commands and options; every `make X` a Makefile target."""
    import typer

    from llmops import cli

    cli._register()
    app = typer.main.get_command(cli.app)
    targets = _make_targets(root / "Makefile")
    problems = []
    mentions = [*page.shell_lines(), *((line, code) for line, code in page.inline_code()
                                      if re.match(r"(?:\S*/)?(?:llmops|make|torchrun)\b(?![.\[])", code))]
    for line, text in mentions:
        for tool, words in commands_in(text):
            if tool == "make":
                bad = [w for w in words if not w.startswith("-") and "=" not in w and w not in targets]
                problem = f"the Makefile has no target {bad[0]!r} ({', '.join(sorted(targets))})" if bad else None
            else:
                problem = command_problem(words, app)
            if problem:
                shown = " ".join([tool, *words])
                problems.append(f"{page.where(line, root)}: `{shown}`: {problem}")
    return problems


# Python examples ------------------------------------------------------------------------------------------------
def check_python_imports(page: Page, root: Path = REPO) -> list[str]:
    """Every `import llmops.X` and `from llmops.X import Y` of a python block names a module and name that exist."""
    problems = []
    for block in page.blocks:
        if block.lang != "python":
            continue
        try:
            tree = ast.parse(block.body)
        except SyntaxError as exc:
            problems.append(f"{page.where(block.line + (exc.lineno or 1) - 1, root)}: python block does not parse: "
                            f"{exc.msg}")
            continue
        for node in ast.walk(tree):
            where = page.where(block.line + getattr(node, "lineno", 1) - 1, root)
            if isinstance(node, ast.Import):
                names = [(a.name, None) for a in node.names if a.name.split(".")[0] == "llmops"]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "llmops":
                names = [(node.module, a.name) for a in node.names]
            else:
                continue
            for module, attr in names:
                try:
                    mod = importlib.import_module(module)
                except ImportError as exc:
                    problems.append(f"{where}: no module {module} ({exc})")
                    continue
                if attr and attr != "*" and not hasattr(mod, attr):
                    problems.append(f"{where}: {module} has no {attr}")
    return problems


def check(paths: list[Path], root: Path = REPO) -> list[str]:
    """Every problem of these Markdown files, each naming its file and line."""
    problems = []
    for path in paths:
        page = Page.read(path)
        found = check_links(page, root) + check_commands(page, root) + check_python_imports(page, root)
        problems += sorted(found, key=lambda p: int(p.split(":")[1]))  # stable: by line within a file
    return problems


def doc_pages(root: Path = REPO) -> list[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
