"""Prompt specs and strict sandboxed templates: loading errors, render checks, LangChain parity."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.errors import SpecError, TemplateError
from llmops.prompts import Prompt, canonical_spec, load_prompt_spec
from llmops.prompts.spec import PromptSpec

REPO = Path(__file__).resolve().parent.parent


def load(text: str, file: str = "prompts/p.yaml") -> Prompt:
    spec, where = load_prompt_spec(file, text=text)
    return Prompt(spec, where=where)


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load(text)
    return str(info.value)


# -- loading: every bad input is one clear error with file, line, field and fix ----------------

@pytest.mark.parametrize("text, message", [
    ("name: qa\ntemplate: 'hi\nvariables: [\n",
     "prompts/p.yaml:4: malformed YAML: found unexpected end of stream while scanning a quoted scalar "
     "started on line 2 (check indentation and quote text that contains ':', '{' or '#')"),
    ("name: qa\n  template: x\n",
     "prompts/p.yaml:2: malformed YAML: mapping values are not allowed here "
     "(check indentation and quote text that contains ':', '{' or '#')"),
    ("name: qa\ntemplate: {{ question }}\nvariables: {question: str}\n",
     "prompts/p.yaml:2: malformed YAML: found unhashable key while constructing a mapping "
     "(quote text that starts with {{, e.g. template: \"{{ question }}\", or use a block scalar (|))"),
    ("name: qa\ntemplate: hi\nmodel_params:\n  tempreature: 0.2\n",
     "prompts/p.yaml:4: model_params.tempreature: unknown field 'tempreature' (did you mean 'temperature'?)"),
    ("name: qa\ntemplate: hi\ntemplate: again\n",
     "prompts/p.yaml:3: template: duplicate key 'template' (first on line 2) (keep one of them)"),
    ("name: qa\ntemplate: '{{ q }}'\nvariables:\n  q: strr\n",
     "prompts/p.yaml:4: variables.q.type: unknown type 'strr': use one of str, int, float, bool, list, dict "
     "or their JSON Schema names string, integer, number, boolean, array, object"),
    ("name: qa\ntemplate: '{{ n }}'\nvariables:\n  n: {type: int, default: two}\n",
     "prompts/p.yaml:4: variables.n: default 'two' is not an int"),
    ("name: qa\ntemplate: hi\nmessages: [{role: user, content: hi}]\n",
     "prompts/p.yaml: give exactly one of `template` (text) or `messages` (chat)"),
    ("name: qa\nmessages:\n  - role: robot\n    content: hi\n",
     "prompts/p.yaml:3: messages[0].role: Input should be 'system', 'user' or 'assistant'"),
    ("name: 'q a'\ntemplate: hi\n",
     "prompts/p.yaml:1: name: prompt name 'q a' is not allowed: a name is a letter or digit, then letters, "
     "digits, '_', '.' or '-' (at most 128, ASCII only), e.g. 'qa' or 'rag-qa'"),
    ("template: hi\n", "prompts/p.yaml: name: required field is missing (add `name:`)"),
    ("- a\n- b\n", "prompts/p.yaml:1: expected a mapping of fields (name: ..., ...) at the top level"),
    ("name: qa\ntemplate: '{{ x }}'\nvariables:\n  if: str\n  x: str\n",
     "prompts/p.yaml:3: variables: variable name 'if' cannot be used in a template: "
     "use letters, digits and underscores, not a Jinja2 keyword"),
])
def test_bad_spec_is_one_clear_error(text, message):
    assert error_of(text) == message


def test_variable_typo_names_file_line_and_suggestion():
    text = "name: qa\ntemplate: |\n  Hello\n  {{ questoin }}\nvariables:\n  question: str\n"
    with pytest.raises(TemplateError) as info:
        load(text)
    assert str(info.value) == ("prompts/p.yaml:4: template: prompt qa: template uses undeclared variable 'questoin' "
                               "(did you mean 'question'?)")
    assert info.value.line == 4 and info.value.file == "prompts/p.yaml"


def test_declared_but_unused_variable_is_an_error_unless_it_has_a_default():
    text = "name: qa\ntemplate: hi\nvariables:\n  question: str\n"
    assert error_of(text) == ("prompts/p.yaml:4: variables.question: prompt qa: variable 'question' is declared "
                              "but no template uses it (use it in the template, give it a default, or remove it)")
    load("name: qa\ntemplate: hi\nvariables:\n  style: {type: str, default: plain}\n")


def test_template_syntax_error_points_at_the_file_line():
    text = "name: qa\ntemplate: |\n  ok\n  {{ x + }}\nvariables: {x: int}\n"
    with pytest.raises(TemplateError) as info:
        load(text)
    assert info.value.line == 4
    assert "template syntax error" in str(info.value)


# -- the sandbox ---------------------------------------------------------------------------

@pytest.mark.parametrize("source, names", [
    ("{{ ''.__class__ }}", "'__class__'"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__class__', '__mro__', '__subclasses__'"),
    ("{{ x['__globals__'] }}", "'__globals__'"),
    ("{{ x|attr('__class__') }}", "'|attr'"),
    ("{{ lipsum.__globals__ }}", "'__globals__'"),
])
def test_reaching_python_internals_is_refused_at_load(source, names):
    text = f"name: evil\ntemplate: \"{source}\"\nvariables:\n  x: {{type: str, default: ''}}\n"
    with pytest.raises(TemplateError) as info:
        load(text)
    assert str(info.value) == (f"prompts/p.yaml:2: template: prompt evil: access to {names} is refused: "
                               "templates may not reach Python internals "
                               "(use only the declared variables and their public fields)")


def test_sandbox_still_refuses_at_render_time_what_static_checks_cannot_see():
    # A dict key that names a method: not an underscore, so loading passes; the immutable sandbox
    # refuses the mutating call when rendering.
    prompt = load("name: p\ntemplate: \"{{ items.append(1) }}{{ items }}\"\nvariables:\n  items: list\n")
    with pytest.raises(TemplateError) as info:
        prompt.render(items=[1])
    assert str(info.value).startswith("prompt p: render failed: ")
    assert "unsafe" in str(info.value)


# -- render: strict variables --------------------------------------------------------------

QA = """
name: qa
template: "Q: {{ question }} ({{ n }} words, {{ 'formal' if formal else 'casual' }}){% for t in tags %} #{{ t }}{% endfor %}"
variables:
  question: str
  n: {type: int, default: 20}
  formal: {type: bool, default: false}
  tags: {type: list, default: []}
"""


def test_render_fills_defaults_and_checks_types():
    prompt = load(QA)
    assert prompt.render(question="Why?") == "Q: Why? (20 words, casual)"
    assert prompt.render(question="Why?", n=5, formal=True, tags=("a", "b")) == "Q: Why? (5 words, formal) #a #b"


@pytest.mark.parametrize("kwargs, message", [
    ({}, "prompt qa@3: missing variable 'question' (pass question=... (str))"),
    ({"question": "x", "questoin": "y"},
     "prompt qa@3: unknown variable 'questoin' (did you mean 'question'? declared: question, n, formal, tags)"),
    ({"question": 42}, "prompt qa@3: variable 'question' must be str, got int (pass a str)"),
    ({"question": "x", "n": True}, "prompt qa@3: variable 'n' must be int, got bool (pass an int)"),
    ({"question": "x", "n": 2.5}, "prompt qa@3: variable 'n' must be int, got float (pass an int)"),
    ({"question": "x", "formal": "yes"}, "prompt qa@3: variable 'formal' must be bool, got str (pass a bool)"),
    ({"question": "x", "tags": "a"}, "prompt qa@3: variable 'tags' must be list, got str (pass a list)"),
])
def test_render_errors_name_prompt_version_and_variable(kwargs, message):
    spec, _ = load_prompt_spec("qa.yaml", text=QA)
    prompt = Prompt(spec, version=3)
    with pytest.raises(TemplateError) as info:
        prompt.render(**kwargs)
    assert str(info.value) == message


def test_undefined_attribute_inside_a_variable_is_an_error_not_blank():
    prompt = load("name: p\ntemplate: '{{ doc.title }}'\nvariables:\n  doc: dict\n")
    with pytest.raises(TemplateError) as info:
        prompt.render(doc={"text": "x"})
    assert str(info.value) == "prompt p: render failed: 'dict object' has no attribute 'title'"


def test_float_accepts_int_and_none_is_allowed_only_for_a_null_default():
    prompt = load("name: p\ntemplate: '{{ t }}{{ s or \"-\" }}'\nvariables:\n  t: float\n  s: {type: str, default: null}\n")
    assert prompt.render(t=1) == "1-"
    assert prompt.render(t=0.5, s=None) == "0.5-"
    with pytest.raises(TemplateError) as info:
        prompt.render(t=None)
    assert str(info.value) == "prompt p: variable 't' must be float, got NoneType (pass a float)"


def test_chat_prompt_renders_messages():
    prompt = load("name: c\nmessages:\n  - {role: system, content: 'Be {{ tone }}.'}\n"
                  "  - {role: user, content: '{{ q }}'}\nvariables:\n  tone: {type: str, default: brief}\n  q: str\n")
    assert prompt.render(q="Hi?") == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


# -- LangChain -----------------------------------------------------------------------------

def test_to_langchain_text_prompt_renders_the_same():
    from langchain_core.prompts import PromptTemplate

    prompt = load(QA)
    lc = prompt.to_langchain()
    assert isinstance(lc, PromptTemplate)
    for kwargs in ({"question": "Why?"}, {"question": "Why?", "n": 5, "formal": True, "tags": ["x"]}):
        assert lc.format(**kwargs) == prompt.render(**kwargs)
        assert lc.invoke(kwargs).to_string() == prompt.render(**kwargs)


@pytest.mark.parametrize("path", ["prompts/qa.yaml", "prompts/rag-qa.yaml", "llmops/quickstart/qa_v1.yaml"])
def test_to_langchain_chat_prompt_renders_the_same(path):
    from langchain_core.prompts import ChatPromptTemplate

    prompt = Prompt.from_file(REPO / path)
    values = {"question": "How many vacation days?"}
    if "context" in prompt.variables:
        values["context"] = [{"text": "Staff get 25 days.", "source": "leave.md"}, {"text": "<b>&</b>", "source": "x"}]
    lc = prompt.to_langchain()
    assert isinstance(lc, ChatPromptTemplate)
    ours = prompt.render(**values)
    theirs = lc.invoke(values).to_messages()
    roles = {"system": "system", "user": "human", "assistant": "ai"}
    assert [(roles[m["role"]], m["content"]) for m in ours] == [(m.type, m.content) for m in theirs]


def test_trailing_newline_handling_matches_langchain():
    prompt = load("name: p\ntemplate: |\n  line {{ x }}\n\nvariables: {x: str}\n")
    assert prompt.render(x="1") == prompt.to_langchain().format(x="1") == "line 1"


# -- canonical form ------------------------------------------------------------------------

def test_equivalent_spellings_have_the_same_canonical_spec():
    a, _ = load_prompt_spec("a.yaml", text="name: p\ntemplate: '{{ x }}'\nvariables:\n  x: str\n")
    b, _ = load_prompt_spec("b.yaml", text="# comment\nkind: prompt\nname: p\nvariables:\n  x: {type: str}\n"
                                           "template: '{{ x }}'\nmodel_params: {}\ntags: []\n")
    assert canonical_spec(a) == canonical_spec(b) == {"name": "p", "template": "{{ x }}", "variables": {"x": {}}}


def test_null_default_survives_the_canonical_form():
    spec, _ = load_prompt_spec("a.yaml", text="name: p\ntemplate: '{{ x }}'\nvariables:\n  x: {default: null}\n")
    data = canonical_spec(spec)
    assert data["variables"] == {"x": {"default": None}}
    assert not PromptSpec.model_validate(data).variables["x"].required


def test_example_prompts_load():
    for path in sorted((REPO / "prompts").glob("*.yaml")):
        if "kind: chain" not in path.read_text():
            Prompt.from_file(path)


def test_to_yaml_reads_back_as_the_same_prompt():
    prompt = Prompt.from_file(REPO / "prompts" / "rag-qa.yaml")
    text = prompt.to_yaml()
    assert "content: |" in text
    again, _ = load_prompt_spec("again.yaml", text=text)
    assert canonical_spec(again) == prompt.to_dict()


# -- variable types and model params ---------------------------------------------------------------

PY_TYPES = "variables: {a: str, b: int, c: float, d: bool, e: list, f: dict}\n"
JSON_TYPES = "variables: {a: string, b: integer, c: number, d: boolean, e: array, f: {type: object}}\n"


def test_json_schema_type_names_are_the_same_prompt_as_python_names():
    body = "name: p\ntemplate: '{{ a }} {{ b }} {{ c }} {{ d }} {{ e|length }} {{ f|length }}'\n"
    py, _ = load_prompt_spec("p.yaml", text=body + PY_TYPES)
    js, _ = load_prompt_spec("p.yaml", text=body + JSON_TYPES)
    assert canonical_spec(js) == canonical_spec(py)  # one digest: pushing either spelling is `unchanged`
    prompt = Prompt(js, version=1)
    assert prompt.render(a="x", b=1, c=0.5, d=True, e=[1], f={}) == "x 1 0.5 True 1 0"
    with pytest.raises(TemplateError) as info:
        prompt.render(a="x", b="1", c=0.5, d=True, e=[1], f={})
    assert str(info.value) == "prompt p@1: variable 'b' must be int, got str (pass an int)"


@pytest.mark.parametrize("field, bad", [
    ("temperature", -0.1), ("temperature", 2.5), ("max_tokens", 0), ("max_tokens", 40000),
    ("top_p", 0), ("top_p", 1.5), ("stop", [""]), ("seed", "x"),
])
def test_model_params_refuse_what_generation_params_refuse_with_the_same_message(field, bad):
    from pydantic import ValidationError

    from llmops.models import GenerationParams
    from llmops.prompts.spec import ModelParams

    with pytest.raises(ValidationError) as backend:
        GenerationParams(**{field: bad})
    with pytest.raises(ValidationError) as prompt:
        ModelParams(**{field: bad})
    assert prompt.value.errors()[0]["msg"] == backend.value.errors()[0]["msg"]


def test_model_params_are_generation_params_made_optional():
    from llmops.models import GenerationParams
    from llmops.prompts.spec import ModelParams

    assert set(ModelParams.model_fields) == set(GenerationParams.model_fields)
    assert ModelParams().as_dict() == {}
    params = ModelParams(temperature=0.2, max_tokens=16, stop="END")
    assert params.as_dict() == {"temperature": 0.2, "max_tokens": 16, "stop": ["END"]}
    assert GenerationParams(**params.as_dict()) == GenerationParams(temperature=0.2, max_tokens=16, stop=("END",))
