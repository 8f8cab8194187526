"""Prompt diffs: the structured diff and its text, Markdown, JSON and HTML renderings."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from llmops.prompts import diff_prompts, load_prompt_spec, render_diff

V1 = """
name: qa
template: |
  Answer the question.
  Question: {{ question }}
  Answer:
variables:
  question: str
  n: {type: int, default: 3}
  lang: {type: str, default: en, description: language}
model_params: {temperature: 0.7, max_tokens: 64}
tags: [qa]
"""

V2 = """
name: qa
template: |
  Answer the question in {{ lang }} & be <brief>.
  Question: {{ question }}
  Context: {{ context }}
  Answer:
variables:
  question: str
  n: {type: float, default: 3}
  lang: {type: str, default: fr, description: language code}
  context: {type: str, default: ""}
model_params: {temperature: 0.2, max_tokens: 64, stop: ["\\n"]}
tags: [qa, rag]
"""


def diff():
    a, _ = load_prompt_spec("v1.yaml", text=V1)
    b, _ = load_prompt_spec("v2.yaml", text=V2)
    return diff_prompts(a, b, "qa@1", "qa@2", a_digest="aaa", b_digest="bbb")


def test_structured_diff_contents():
    d = diff()
    assert d.changed
    assert d.template == [
        "--- qa@1", "+++ qa@2", "@@ -1,3 +1,4 @@",
        "-Answer the question.", "+Answer the question in {{ lang }} & be <brief>.",
        " Question: {{ question }}", "+Context: {{ context }}", " Answer:",
    ]
    assert d.variables_added == {"context": "str"}
    assert d.variables_removed == {}
    assert d.variables_retyped == {"n": ("int", "float")}
    assert d.variables_changed == {"lang": {"description": ("language", "language code"), "default": ("en", "fr")}}
    assert d.model_params == {"stop": (None, ["\n"]), "temperature": (0.7, 0.2)}
    assert d.tags_added == ["rag"] and d.tags_removed == []
    assert d.form is None and d.description is None


def test_removed_variable_and_text_to_chat_switch():
    a, _ = load_prompt_spec("a.yaml", text=V1)
    b, _ = load_prompt_spec("b.yaml", text="name: qa\nmessages:\n  - {role: user, content: '{{ question }}'}\n"
                                           "variables: {question: str}\n")
    d = diff_prompts(a, b, "qa@1", "qa@2")
    assert d.form == ("text", "chat")
    assert d.variables_removed == {"lang": "str", "n": "int"}
    assert d.model_params == {"max_tokens": (64, None), "temperature": (0.7, None)}
    assert "+[user]" in d.template and "+{{ question }}" in d.template


def test_identical_specs_have_no_changes():
    a, _ = load_prompt_spec("a.yaml", text=V1)
    d = diff_prompts(a, a, "qa@1", "qa@1")
    assert not d.changed
    assert render_diff(d, "text") == "prompt diff qa@1 -> qa@1\nno changes\n"


def test_text_rendering():
    assert render_diff(diff(), "text") == """prompt diff qa@1 -> qa@2

Template:
--- qa@1
+++ qa@2
@@ -1,3 +1,4 @@
-Answer the question.
+Answer the question in {{ lang }} & be <brief>.
 Question: {{ question }}
+Context: {{ context }}
 Answer:

Prompt:
  tags added: rag

Variables:
  + context (str)
  ~ n: int -> float
  ~ lang.description: "language" -> "language code"
  ~ lang.default: "en" -> "fr"

Model params:
  ~ stop: null -> ["\\n"]
  ~ temperature: 0.7 -> 0.2
"""


def test_markdown_rendering():
    md = render_diff(diff(), "markdown")
    assert md.startswith("## Prompt diff `qa@1` → `qa@2`\n\n### Template\n\n```diff\n--- qa@1\n")
    assert "\n- `+ context (str)`\n" in md
    assert "### Model params\n\n- `~ stop: null -> [\"\\n\"]`\n- `~ temperature: 0.7 -> 0.2`\n" in md


def test_json_rendering_round_trips():
    data = json.loads(render_diff(diff(), "json"))
    assert data["a"] == "qa@1" and data["b_digest"] == "bbb" and data["changed"] is True
    assert data["variables_retyped"] == {"n": {"old": "int", "new": "float"}}
    assert data["model_params"]["temperature"] == {"old": 0.7, "new": 0.2}
    assert data["variables_changed"]["lang"]["default"] == {"old": "en", "new": "fr"}


def test_html_rendering_escapes_template_text():
    html = render_diff(diff(), "html")
    assert "<brief>" not in html
    assert '<span class="add">+Answer the question in {{ lang }} &amp; be &lt;brief&gt;.</span>' in html
    assert '<span class="del">-Answer the question.</span>' in html

    class Check(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack = []

        def handle_starttag(self, tag, attrs):
            if tag not in ("meta",):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag

    parser = Check()
    parser.feed(html)
    assert parser.stack == []


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown diff format 'yaml': use one of text, markdown, json, html"):
        render_diff(diff(), "yaml")
