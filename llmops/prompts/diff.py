"""What changed between two prompt versions, and four ways to show it.

Why structured first: `llmops prompts diff` prints it as text, writes Markdown for a CI comment, a
self-contained HTML page (`-f html -o diff.html`) or JSON for scripts. One `PromptDiff` feeds all
four renderers, so they never disagree.

    >>> d = diff_prompts(spec_v1, spec_v2, "qa@1", "qa@2")
    >>> print(render_diff(d, "markdown"))
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from llmops.errors import InvalidValue
from llmops.prompts.spec import PromptSpec

__all__ = ["FORMATS", "PromptDiff", "diff_prompts", "render_diff"]

FORMATS = ("text", "markdown", "json", "html")


@dataclass(frozen=True)
class PromptDiff:
    """A structured diff from prompt `a` to prompt `b` (labels like `qa@1`)."""

    a: str
    b: str
    a_digest: str | None = None
    b_digest: str | None = None
    # Unified diff lines of the template text (chat messages shown as `[role]` blocks).
    template: list[str] = field(default_factory=list)
    # ("text", "chat") when the prompt switched between a template and messages.
    form: tuple[str, str] | None = None
    description: tuple[str, str] | None = None
    variables_added: dict[str, str] = field(default_factory=dict)      # name -> type
    variables_removed: dict[str, str] = field(default_factory=dict)    # name -> type
    variables_retyped: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (old, new)
    # name -> {"description" | "default" | "required": (old, new)}
    variables_changed: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    model_params: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # param -> (old, new); None = unset
    tags_added: list[str] = field(default_factory=list)
    tags_removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """False when the two versions say the same thing."""
        return bool(self.template or self.form or self.description or self.variables_added
                    or self.variables_removed or self.variables_retyped or self.variables_changed
                    or self.model_params or self.tags_added or self.tags_removed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become `{"old": .., "new": ..}`."""
        def pair(p: tuple[Any, Any] | None) -> dict[str, Any] | None:
            return None if p is None else {"old": p[0], "new": p[1]}

        data = asdict(self)
        data["form"] = pair(self.form)
        data["description"] = pair(self.description)
        data["variables_retyped"] = {k: pair(v) for k, v in self.variables_retyped.items()}
        data["variables_changed"] = {k: {f: pair(p) for f, p in v.items()} for k, v in self.variables_changed.items()}
        data["model_params"] = {k: pair(v) for k, v in self.model_params.items()}
        data["changed"] = self.changed
        return data


def template_text(spec: PromptSpec) -> str:
    """The text the template diff compares: the template, or each message as a `[role]` block."""
    if spec.template is not None:
        return spec.template
    return "\n".join(f"[{m.role}]\n{m.content.rstrip(chr(10))}" for m in spec.messages or []) + "\n"


def diff_prompts(a: PromptSpec, b: PromptSpec, a_label: str, b_label: str, *,
                 a_digest: str | None = None, b_digest: str | None = None) -> PromptDiff:
    """Compare two prompt specs field by field."""
    ta, tb = template_text(a), template_text(b)
    lines = [] if ta == tb else list(difflib.unified_diff(
        ta.splitlines(), tb.splitlines(), fromfile=a_label, tofile=b_label, lineterm=""))
    form_a, form_b = ("chat" if a.is_chat else "text"), ("chat" if b.is_chat else "text")

    added = {n: v.type for n, v in b.variables.items() if n not in a.variables}
    removed = {n: v.type for n, v in a.variables.items() if n not in b.variables}
    retyped, changed = {}, {}
    for name in a.variables.keys() & b.variables.keys():
        va, vb = a.variables[name], b.variables[name]
        if va.type != vb.type:
            retyped[name] = (va.type, vb.type)
        fields = {}
        if va.description != vb.description:
            fields["description"] = (va.description, vb.description)
        if va.required != vb.required:
            fields["required"] = (va.required, vb.required)
        if not va.required and not vb.required and va.default != vb.default:
            fields["default"] = (va.default, vb.default)
        elif va.required != vb.required:
            fields["default"] = (None if va.required else va.default, None if vb.required else vb.default)
        if fields:
            changed[name] = fields

    pa, pb = a.model_params.as_dict(), b.model_params.as_dict()
    params = {k: (pa.get(k), pb.get(k)) for k in sorted(pa.keys() | pb.keys()) if pa.get(k) != pb.get(k)}
    return PromptDiff(
        a=a_label, b=b_label, a_digest=a_digest, b_digest=b_digest, template=lines,
        form=(form_a, form_b) if form_a != form_b else None,
        description=(a.description, b.description) if a.description != b.description else None,
        variables_added=dict(sorted(added.items())), variables_removed=dict(sorted(removed.items())),
        variables_retyped=dict(sorted(retyped.items())), variables_changed=dict(sorted(changed.items())),
        model_params=params,
        tags_added=sorted(set(b.tags) - set(a.tags)), tags_removed=sorted(set(a.tags) - set(b.tags)),
    )


def render_diff(diff: PromptDiff, format: str = "text") -> str:
    """One call per CLI format: `text`, `markdown`, `json` or `html` (a full page)."""
    if format == "text":
        return _text(diff)
    if format == "markdown":
        return _markdown(diff)
    if format == "json":
        return json.dumps(diff.to_dict(), indent=2, sort_keys=True, default=str)
    if format == "html":
        return render_diff_html(diff)
    raise InvalidValue(f"unknown diff format {format!r}: use one of {', '.join(FORMATS)}")


def _v(value: Any) -> str:
    """A value as users write it in YAML/JSON (`null` for unset)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _summary(diff: PromptDiff) -> list[tuple[str, list[str]]]:
    """(section title, lines) for everything but the template, shared by text and markdown."""
    sections: list[tuple[str, list[str]]] = []
    general = []
    if diff.form:
        general.append(f"form: {diff.form[0]} -> {diff.form[1]}")
    if diff.description:
        general.append(f"description: {_v(diff.description[0])} -> {_v(diff.description[1])}")
    if diff.tags_added:
        general.append("tags added: " + ", ".join(diff.tags_added))
    if diff.tags_removed:
        general.append("tags removed: " + ", ".join(diff.tags_removed))
    if general:
        sections.append(("Prompt", general))
    variables = [f"+ {n} ({t})" for n, t in diff.variables_added.items()]
    variables += [f"- {n} ({t})" for n, t in diff.variables_removed.items()]
    variables += [f"~ {n}: {old} -> {new}" for n, (old, new) in diff.variables_retyped.items()]
    for name, fields in diff.variables_changed.items():
        variables += [f"~ {name}.{f}: {_v(old)} -> {_v(new)}" for f, (old, new) in fields.items()]
    if variables:
        sections.append(("Variables", variables))
    if diff.model_params:
        sections.append(("Model params", [f"~ {k}: {_v(old)} -> {_v(new)}" for k, (old, new)
                                          in diff.model_params.items()]))
    return sections


def _text(diff: PromptDiff) -> str:
    out = [f"prompt diff {diff.a} -> {diff.b}"]
    if not diff.changed:
        out.append("no changes")
        return "\n".join(out) + "\n"
    if diff.template:
        out += ["", "Template:"] + diff.template
    for title, lines in _summary(diff):
        out += ["", f"{title}:"] + [f"  {line}" for line in lines]
    return "\n".join(out) + "\n"


def _markdown(diff: PromptDiff) -> str:
    out = [f"## Prompt diff `{diff.a}` → `{diff.b}`", ""]
    if not diff.changed:
        return "\n".join(out + ["No changes.", ""])
    if diff.template:
        fence = "````" if any("```" in line for line in diff.template) else "```"
        out += ["### Template", "", fence + "diff"] + diff.template + [fence, ""]
    for title, lines in _summary(diff):
        out += [f"### {title}", ""] + [f"- `{line}`" if "`" not in line else f"- {line}" for line in lines] + [""]
    return "\n".join(out)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Prompt diff {{ d.a }} → {{ d.b }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
pre{background:#f6f8fa;padding:.75rem;overflow-x:auto;line-height:1.35}
pre span{display:block;white-space:pre}.add{background:#e6ffec}.del{background:#ffebe9}.hunk{color:#6f42c1}.file{font-weight:bold}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
code{background:#f6f8fa;padding:0 .2rem}
</style></head><body>
<h1>Prompt diff <code>{{ d.a }}</code> → <code>{{ d.b }}</code></h1>
{% if not d.changed %}<p>No changes.</p>{% endif %}
{% if d.template %}<h2>Template</h2>
<pre>{% for cls, line in template %}<span class="{{ cls }}">{{ line or " " }}</span>{% endfor %}</pre>{% endif %}
{% for title, lines in sections %}<h2>{{ title }}</h2>
<ul>{% for line in lines %}<li><code>{{ line }}</code></li>{% endfor %}</ul>
{% endfor %}
</body></html>
"""


def render_diff_html(diff: PromptDiff) -> str:
    """A standalone HTML page; every value is escaped (templates contain `<`, `&` and quotes)."""
    from jinja2 import Environment

    env = Environment(autoescape=True)
    return env.from_string(_HTML).render(d=diff, sections=_summary(diff), template=[(_line_class(x), x) for x in diff.template])


def _line_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
