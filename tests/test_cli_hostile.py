"""Every `llmops` command, fed hostile arguments, answers with one `error:` line and exit 2, never a traceback.

Commands are enumerated from the Typer app, so a new command is swept automatically: each parameter of
each command gets hostile values of its type (the others get working values), and the command must
either succeed or fail as a user error. Then the faults reported in issue 8 are checked one by one,
where the answer must be exit 2 with the offending value or option named. Commands run in process
through `llmops.cli.run` (what the installed `llmops` does); one test runs the real entry point.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import inspect
import textwrap
import typing
from pathlib import Path

import pytest
import typer
from typer import _click as click
from typer.core import TyperArgument, TyperGroup

import llmops
from llmops.cli import app, run
from rag_support import tiny_model, write_corpus, write_spec  # noqa: F401 (fixture)

HUGE = "99999999999999999999"
LONG = "x" * 20_000
# values every parameter of a type gets, one parameter at a time
HOSTILE = {
    "text": ["", "qa@²", f"qa@{HUGE}", "prompt/qa@-1", "qa@nosuchalias", "\x01\x7f\x1b[2J", "%00", "../../etc/passwd",
             "prompt/" + "a" * 5000, LONG, "(" * 500 + "metrics.acc > 0" + ")" * 500],
    "int": [HUGE, "-" + HUGE, "0", "-1", "²", ""],
    "float": ["nan", "inf", "-1", "1e999", ""],
    "path": ["", "{missing}", "{dir}", "{afile}/sub", "{missing}/out.html"],
}
# commands that do long real work whatever their arguments (the whole tour): checked one case at a time below
SWEEP_SKIP = {"quickstart"}


def command_paths() -> dict[tuple[str, ...], click.Command]:
    """Every leaf command of the CLI, by its words (`("runs", "list")`)."""
    llmops.cli._register()
    out = {}

    def walk(group, words):
        for name, cmd in group.commands.items():
            if isinstance(cmd, TyperGroup):
                walk(cmd, words + (name,))
            else:
                out[words + (name,)] = cmd

    walk(typer.main.get_command(app), ())
    return out


class Env:
    """A workspace with one prompt, one run and one HNSW index (tiny embedder), and paths to aim at."""

    def __init__(self, root: Path, tiny: Path):
        self.root, self.ws_path = root, root / "ws"
        self.dir = root / "adir"
        self.dir.mkdir()
        self.afile = root / "afile"
        self.afile.write_text("not a folder\n")
        self.missing = root / "missing" / "nothing.yaml"
        prompts = self.ws_path / "prompts"
        prompts.mkdir(parents=True)
        (prompts / "qa.yaml").write_text(textwrap.dedent("""\
            name: qa
            template: "Answer: {{ question }}"
            variables: {question: {type: str}}
            """))
        write_corpus(self.ws_path)
        self.spec = write_spec(self.ws_path, tiny, name="kb", index="hnsw")
        for name in ("a.pdf", "b.pdf"):  # unreadable sources: the error lists one problem per file
            (self.ws_path / "rag" / "bad" / name).parent.mkdir(parents=True, exist_ok=True)
            (self.ws_path / "rag" / "bad" / name).write_bytes(b"%PDF-1.4 not really")
        self.bad_spec = write_spec(self.ws_path, tiny, name="bad",
                                   body=self.spec.read_text().replace("docs/**/*", "bad/*.pdf").replace("kb", "bad"))
        self.queries = self.ws_path / "q.jsonl"
        self.queries.write_text('{"_id": "q1", "text": "installing alpha"}\n')
        self.qrels = self.ws_path / "qrels.tsv"
        self.qrels.write_text("query-id\tcorpus-id\tscore\nq1\trag/docs/alpha.md\t1\n")
        with llmops.Workspace(self.ws_path) as ws:
            ws.prompts.push_folder([prompts])
            with ws.start_run("probe", kind="eval") as r:
                r.log_metric("acc", 0.5)
            self.run_id = r.id
            ws.rag.ingest(self.spec, progress=False)
        # a working value per parameter name; unknown names fall back to one per type
        self.filler = {"ref": "qa@1", "name": "qa", "a": "qa@1", "b": "qa@1", "index": "kb", "query": "alpha",
                       "alias": "staging", "version": "1", "run_id": self.run_id, "node": self.run_id,
                       "filter": "metrics.acc > 0", "spec": str(self.spec), "queries": str(self.queries),
                       "qrels": str(self.qrels), "paths": str(prompts), "output": str(root / "out.txt")}

    def value(self, template: str) -> str:
        return template.format(missing=self.missing, dir=self.dir, afile=self.afile, run=self.run_id,
                               bad_spec=self.bad_spec)

    def working(self, words, cmd: click.Command, param: click.Parameter) -> str:
        if words[0] == "assets" and param.name == "ref":
            return "prompt/qa" if words[-1] in ("alias", "history") else "prompt/qa@1"
        if param.name in self.filler:
            return self.filler[param.name]
        return {"int": "1", "float": "0.5", "path": str(self.dir), "text": "x"}[kind_of(cmd, param)]


def kind_of(cmd: click.Command, param: click.Parameter) -> str:
    """int, float, path or text, from the annotation of the command's function (Optional and list unwrapped)."""
    hint = typing.get_type_hints(inspect.unwrap(cmd.callback))[param.name]
    while typing.get_args(hint):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return {int: "int", float: "float", Path: "path"}.get(hint, "text")


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model):
    return Env(tmp_path_factory.mktemp("hostile"), tiny_model)


@pytest.fixture(autouse=True)
def _in_scratch_folder(env, monkeypatch):
    monkeypatch.chdir(env.dir)  # commands that default to `prompts/` of the current folder find none
    monkeypatch.delenv("LLMOPS_HOME", raising=False)


def call(capsys, *argv: str) -> tuple[int, str, str]:
    """Run one command line in process; an unexpected exception propagates (it is a bug) and fails the test."""
    capsys.readouterr()
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, argv) -> str:
    lines = err.splitlines()
    assert code == 2, (argv, code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err[-2000:])
    assert "Traceback" not in err
    return lines[0]


def _value_params(cmd: click.Command) -> list[click.Parameter]:
    return [p for p in cmd.params if not getattr(p, "is_flag", False) and p.name != "help"]


def _argv(cmd: click.Command, env: Env, words, hostile: click.Parameter | None = None, value: str = "") -> list[str]:
    """The command line with working values everywhere and `value` for the `hostile` parameter."""
    argv = ["-w", str(env.ws_path), *words]
    for p in _value_params(cmd):
        if p is hostile:
            v = value
        elif p.required or isinstance(p, TyperArgument):
            v = env.working(words, cmd, p)
        else:
            continue
        argv += [v] if isinstance(p, TyperArgument) else [p.opts[0], v]
    return argv


COMMANDS = command_paths()


def test_the_sweep_sees_every_command():
    assert {" ".join(w) for w in COMMANDS} >= {"init", "runs list", "runs search", "assets alias", "lineage",
                                               "prompts diff", "chains push", "rag tune", "quickstart"}


@pytest.mark.parametrize("words", sorted(w for w in COMMANDS if " ".join(w) not in SWEEP_SKIP), ids=" ".join)
def test_hostile_values_for_every_parameter(words, env, capsys):
    """Success or one `error:` line with exit 2, for every hostile value of every parameter."""
    cmd = COMMANDS[words]
    for param in _value_params(cmd):
        for template in HOSTILE[kind_of(cmd, param)]:
            argv = _argv(cmd, env, words, param, env.value(template))
            code, _out, err = call(capsys, *argv)
            if code != 0:
                assert_user_error(code, err, argv)


# The faults of issue 8, each with what the error line must name.

CASES = [  # (arguments after `-w WS`, what the error line must contain)
    (["assets", "show", "prompt/qa@²"], "qa@²"),
    (["assets", "show", f"prompt/qa@{HUGE}"], HUGE),
    (["prompts", "show", "qa@²"], "qa@²"),
    (["prompts", "render", f"qa@{HUGE}"], HUGE),
    (["assets", "alias", "prompt/qa", "production", HUGE], HUGE),
    (["assets", "alias", "prompt/qa", "production", "-1"], "-1"),
    (["prompts", "alias", "qa", "production", HUGE], HUGE),
    (["runs", "list", "--limit", HUGE], "limit"),
    (["runs", "list", "--limit", "-1"], "limit"),
    (["runs", "search", "metrics.acc > 0", "--limit", HUGE], "limit"),
    (["runs", "search", "(" * 500 + "metrics.acc > 0" + ")" * 500], "nest"),
    (["runs", "search", "NOT " * 500 + "metrics.acc > 0"], "nest"),
    (["runs", "show", ""], "run"),
    (["runs", "show", "______"], "______"),
    (["lineage", ""], "''"),
    (["lineage", "{run}", "--depth", "-1"], "depth"),
    (["assets", "show", ""], "''"),
    (["assets", "show", "prompt/" + "a" * 5000], "aaaa"),
    (["assets", "history", "prompt/qa@1@2"], "qa@1@2"),
    (["prompts", "diff", "qa@1", "qa@1", "-o", "{missing}/d.html"], "missing"),
    (["prompts", "diff", "qa@1", "qa@1", "-o", "{dir}"], "adir"),
    (["prompts", "diff", "qa@1", "qa@1", "--format", "pdf"], "pdf"),
    (["prompts", "push", "{missing}"], "nothing.yaml"),
    (["prompts", "push", "{afile}"], "afile"),
    (["prompts", "render", "qa@1", "--var", "nokey"], "nokey"),
    (["chains", "invoke", "qa@1", "--input", "noequals"], "noequals"),
    (["rag", "ingest", "{missing}"], "nothing.yaml"),
    (["rag", "ingest", "{dir}"], "adir"),
    (["rag", "ingest", "{bad_spec}"], "b.pdf"),  # a multi-line message, printed on one line
    (["rag", "query", "kb", "alpha", "-k", "0"], "k must"),
    (["rag", "query", "kb", "alpha", "-k", HUGE], HUGE),
    (["rag", "tune", "kb", "-k", "0"], "k must"),
    (["rag", "tune", "kb", "--target", "nan"], "target"),
    (["rag", "tune", "kb", "--target", "2"], "target"),
    (["rag", "eval", "kb", "--queries", "{dir}", "--qrels", "{missing}"], "adir"),
    (["quickstart", "--dir", "{afile}"], "afile"),
    (["quickstart", "--dir", "{afile}/sub"], "afile"),
]


def _case_id(value) -> str:
    return " ".join(value)[:60] if isinstance(value, list) else "named"


@pytest.mark.parametrize("args,named", CASES, ids=_case_id)
def test_reported_fault_is_one_error_line(args, named, env, capsys):
    argv = ["-w", str(env.ws_path)] + [env.value(a) for a in args]
    line = assert_user_error(*call(capsys, *argv)[::2], argv)
    assert named in line, line


# Valid, if odd: the answer may be a result (exit 0) or one error line, never a traceback.
ODD_BUT_VALID = [
    ["runs", "search", f"attributes.started_at > {HUGE}{HUGE}"],
    ["runs", "search", f"metrics.acc < -{HUGE}e999"],
    ["runs", "search", f"params.x = '{HUGE}'"],
    ["runs", "search", "metrics.acc > 0 OR " * 5000 + "metrics.acc > 0"],
    ["runs", "search", "metrics.acc > 0 AND " * 5000 + "metrics.acc > 0"],
    ["runs", "search", "attributes.name IN (" + ", ".join(f"'{i}'" for i in range(50_000)) + ")"],
    ["runs", "search", ""],
]


@pytest.mark.parametrize("args", ODD_BUT_VALID, ids=_case_id)
def test_odd_but_valid_input_answers_or_errs_in_one_line(args, env, capsys):
    argv = ["-w", str(env.ws_path), *args]
    code, _out, err = call(capsys, *argv)
    if code != 0:
        assert_user_error(code, err, argv)


def test_reading_a_missing_workspace_creates_nothing(env, capsys, tmp_path):
    for words in (["runs", "list"], ["assets", "list"], ["prompts", "list"], ["lineage", "x"]):
        line = assert_user_error(*call(capsys, "-w", str(tmp_path / "typo" / "ws"), *words)[::2], words)
        assert f"`llmops -w {tmp_path / 'typo' / 'ws'} init`" in line
    assert list(tmp_path.iterdir()) == []


def test_a_file_as_workspace(env, capsys):
    for words in (["init"], ["runs", "list"]):
        for where in (env.afile, env.afile / "sub"):
            line = assert_user_error(*call(capsys, "-w", str(where), *words)[::2], words)
            assert "afile" in line and "init`" not in line  # no hint that cannot work


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_init_in_a_read_only_folder(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        line = assert_user_error(*call(capsys, "-w", str(tmp_path / "ws"), "init")[::2], "init")
    finally:
        tmp_path.chmod(0o755)
    assert str(tmp_path) in line


def test_nul_in_an_argument(env, capsys):
    assert_user_error(*call(capsys, "-w", str(env.ws_path), "assets", "show", "prompt/q\0a")[::2], "NUL")


def test_usage_errors_are_one_line_naming_the_help(env, capsys):
    for argv, named in [(["nosuch"], "nosuch"), (["runs", "list", "--limit"], "--limit"),
                        (["runs", "list", "--limit", "many"], "--limit"), (["assets", "show"], "'ref'"),
                        (["runs", "list", "--nosuch"], "--nosuch")]:
        line = assert_user_error(*call(capsys, *argv)[::2], argv)
        assert named in line and "--help`" in line, line


def test_hints_name_commands_that_work(env, capsys):
    """Each hint, run as printed, succeeds."""
    for argv in (["assets", "show", "prompt/nosuch"], ["runs", "show", "0123456789ab"],
                 ["assets", "show", "prompt/qa@nosuchalias"]):
        line = assert_user_error(*call(capsys, "-w", str(env.ws_path), *argv)[::2], argv)
        hint = line.rsplit("`", 2)[-2]
        assert hint.startswith("llmops -w "), line
        words = shlex.split(hint)[1:]
        if "KIND/NAME" in words:  # the alias hint is a pattern: fill it in as the user would
            words = [{"KIND/NAME": "prompt/qa", "ALIAS": "nosuchalias", "VERSION": "1"}.get(w, w) for w in words]
        assert call(capsys, *words)[0] == 0, hint
    assert call(capsys, "-w", str(env.ws_path), "assets", "show", "prompt/qa@nosuchalias")[0] == 0


def test_bare_group_prints_help(capsys):
    code, out, err = call(capsys, "runs")
    assert (code, err) == (0, "") and "list" in out and "search" in out


def test_installed_entry_point(tmp_path):
    """The `llmops` script itself: a hostile ref gives one line and exit 2; a bug would still show a traceback."""
    exe = shutil.which("llmops", path=str(Path(sys.executable).parent))
    assert exe, "the llmops entry point is not installed next to this Python"
    r = subprocess.run([exe, "-w", str(tmp_path / "ws"), "init"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "-w", str(tmp_path / "ws"), "assets", "show", f"prompt/qa@{HUGE}"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and HUGE in r.stderr
