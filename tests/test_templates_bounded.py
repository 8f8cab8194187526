"""Hostile templates: bounded cost at push and at render, and undefined values refused wherever used.

Each case is an instance of a class the sandbox closes (see llmops/prompts/sandbox.py): numbers built
by `**` / `*`, text built by `*`, `+`, `~`, `%`, `.format`, string methods and filters, lists built by
`*`, loops and calls (steps and time), and the rendered output itself.
"""

from __future__ import annotations

import pytest

from llmops.errors import TemplateError
from llmops.prompts import Prompt, load_prompt_spec
from llmops.prompts.limits import RenderLimits
from llmops.prompts.template import CompiledPrompt

_TYPES = {str: "str", int: "int", float: "float", list: "list", dict: "dict"}


def prompt_of(template: str, variables: dict | None = None, *, version: int | None = 3) -> Prompt:
    """A prompt `p` whose template is `template`, declaring each of `variables` with its type."""
    declared = "".join(f"  {k}: {_TYPES[type(v)]}\n" for k, v in (variables or {}).items())
    text = "name: p\ntemplate: |-\n  " + template.replace("\n", "\n  ") + "\nvariables:" + (
        "\n" + declared if declared else " {}\n")
    spec, where = load_prompt_spec("prompts/p.yaml", text=text)
    return Prompt(spec, version=version, where=where)


# -- at push: constant expressions fail with the file, line and prompt ----------------------------

@pytest.mark.parametrize("template, message", [
    ("{{ 10 ** 100000 }}", "10 ** 100000 would have about 332,192 bits (limit 4,096) (use smaller numbers)"),
    ("{{ 'y' * 30000000 }}", "repeating 1 characters 30,000,000 times gives 30,000,000 characters "
                             "(limit 1,000,000) (repeat fewer times)"),
    ("{{ [1] * 1000000000 }}", "repeating 1 items 1,000,000,000 times gives 1,000,000,000 items "
                               "(limit 100,000) (repeat fewer times)"),
    ("{{ '%999999999d' % 1 }}", "the formatted text would be about 1,000,000,044 characters (limit 1,000,000) "
                                "(use a smaller width or precision)"),
    ("{{ '{:999999999}'.format(1) }}", "the formatted text would be about 1,000,000,011 characters "
                                       "(limit 1,000,000) (build shorter text; pass long text in as a variable "
                                       "only when it fits)"),
    ("{{ 'x'|center(2000000) }}", "width 2,000,000 is over the limit of 1,000,000 (use a width under 1,000,000)"),
    ("{% for i in range(100000) %}\n{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "these nested loops would run 10,000,000,000 times (limit 1,000,000) (loop over less data)"),
])
def test_constant_expressions_over_the_bounds_fail_at_push(template, message):
    with pytest.raises(TemplateError) as info:
        prompt_of("ok\n" + template, version=None)  # as at push: no version yet
    line = 5 if "\n{% for j" in template else 4  # the template starts on line 3 of the file
    assert str(info.value) == f"prompts/p.yaml:{line}: template: prompt p: {message}"


def test_a_template_nested_too_deeply_is_an_error_not_a_crash():
    with pytest.raises(TemplateError) as info:
        prompt_of("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert "the template nests too deeply to compile" in str(info.value)


def test_filters_and_globals_that_multiply_text_are_not_available():
    with pytest.raises(TemplateError) as info:
        prompt_of("{{ 'a'|urlize }}")
    assert "No filter named 'urlize'" in str(info.value)
    with pytest.raises(TemplateError) as info:
        prompt_of("{{ lipsum(1000000000) }}")
    assert "template uses undeclared variable 'lipsum'" in str(info.value)


def test_the_push_refuses_a_hostile_template_and_pushes_nothing(ws):
    folder = ws.root / "prompts"
    folder.mkdir()
    (folder / "good.yaml").write_text("name: good\ntemplate: hi\n")
    (folder / "bomb.yaml").write_text("name: bomb\ntemplate: '{{ 10 ** 100000 }}'\n")
    with pytest.raises(TemplateError) as info:
        ws.prompts.push_folder(folder)
    assert "bomb.yaml:2: template: prompt bomb: 10 ** 100000 would have about 332,192 bits" in str(info.value)
    assert ws.registry.list("prompt") == []


# -- at render: values come from variables, the error names prompt and version -------------------

BIG = "a" * 100_000


@pytest.mark.parametrize("template, variables, message", [
    ("{{ 'x' * n }}", {"n": 10**9}, "repeating 1 characters 1,000,000,000 times gives 1,000,000,000 characters"),
    ("{{ [1] * n }}", {"n": 10**9}, "repeating 1 items 1,000,000,000 times gives 1,000,000,000 items"),
    ("{{ n ** n }}", {"n": 10**4}, "10000 ** 10000 would have about 132,877 bits"),
    ("{{ n * n * n }}", {"n": 10**1000}, "the number would have 6,644 bits (limit 4,096)"),
    ("{{ f % 1 }}", {"f": "%999999999d"}, "the formatted text would be about 1,000,000,044 characters"),
    ("{{ '%*d' % (n, 1) }}", {"n": 10**9}, "the formatted text would be about 1,000,000,056 characters"),
    ("{{ f|format(1) }}", {"f": "%999999999d"}, "the formatted text would be about 1,000,000,048 characters"),
    ("{{ '{:{w}}'.format(1, w=n) }}", {"n": 10**9}, "format width 1000000000... is over the limit of 1,000,000"),
    ("{{ f.format(1) }}", {"f": "{:999999999}"}, "the formatted text would be about 1,000,000,011 characters"),
    ("{{ f.format_map({'a': 1}) }}", {"f": "{a:999999999}"}, "the formatted text would be about 1,000,000,012"),
    ("{{ ('{0}' * 20).format(s) }}", {"s": BIG}, "the formatted text would be about 1,000,320 characters"),
    ("{{ '%s' * 1000 % ((s,) * 1000) }}", {"s": BIG}, "the formatted text would be about 1,0"),
    ("{{ s.center(n) }}", {"s": "a", "n": 10**9}, "width 1,000,000,000 is over the limit of 1,000,000"),
    ("{{ s.ljust(n) }}", {"s": "a", "n": 10**9}, "width 1,000,000,000 is over the limit of 1,000,000"),
    ("{{ s|indent(n, true) }}", {"s": "a", "n": 10**9}, "indent width 1,000,000,000 is over the limit"),
    ("{{ s.replace('a', s) }}", {"s": BIG}, "the replaced text would be about 10,000,000,000 characters"),
    ("{{ s|replace('a', s) }}", {"s": BIG}, "the replaced text would be about 10,000,000,000 characters"),
    ("{{ s.expandtabs(n) }}", {"s": "\t" * 10, "n": 10**8}, "the expanded text would be about 1,000,000,010"),
    ("{{ s.translate({97: s}) }}", {"s": "a" * 10_000}, "the translated text would be about 100,000,000"),
    ("{{ s|wordwrap(1, wrapstring=s) }}", {"s": "a" * 10_000}, "the wrapped text would be about 100,020,000"),
    ("{{ ([s] * 100000)|join }}", {"s": BIG}, "the joined text would be about 10,000,000,000 characters"),
    ("{{ s.join([s] * 100000) }}", {"s": BIG}, "the joined text would be about 19,999,900,000 characters"),
    ("{{ [s] * 100000 }}", {"s": BIG}, "the printed value would be about 1,000,018 characters"),
    ("{{ {'a': [s] * 100000}|string }}", {"s": "a" * 100}, "the input of |string would be about 1,000,096"),
    ("{{ s ~ s ~ s }}", {"s": "a" * 600_000}, "the joined text would be about 1,200,000 characters"),
    ("{{ s + s }}", {"s": "a" * 600_000}, "the joined text would be about 1,200,000 characters"),
    ("{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     {}, "the joined text would be about 1,048,576 characters"),
    ("{{ range(10)|batch(n, 'x')|list }}", {"n": 10**9}, "|batch(1,000,000,000) is over the limit of 100,000"),
    ("{{ range(10)|slice(n)|list }}", {"n": 10**9}, "|slice(1,000,000,000) is over the limit of 100,000 items"),
    ("{{ x|tojson(indent=n) }}", {"x": [1], "n": 10**8}, "|tojson indent 100,000,000 is over 16"),
    ("{% for i in range(100000) %}{{ s }}{% endfor %}", {"s": "a" * 100},
     "the rendered text is over the limit of 1,000,000 characters"),
    ("{% for i in range(n) %}{% for j in range(n) %}{% endfor %}{% endfor %}", {"n": 100_000},
     "the template ran more than 1,000,000 loop iterations and calls"),
    ("{% for i in range(n) %}{% for j in range(n) if false %}{% endfor %}{% endfor %}", {"n": 100_000},
     "the template ran more than 1,000,000 loop iterations and calls"),
    ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(n) }}", {"n": 1},
     "render failed: macros or loops recurse too deeply"),
    ("{% for x in t recursive %}{{ loop(range(100000)) }}{% endfor %}", {"t": [1]},
     "render failed: macros or loops recurse too deeply"),
])
def test_render_bounds_name_the_prompt_and_version(template, variables, message):
    prompt = prompt_of(template, variables)
    with pytest.raises(TemplateError) as info:
        prompt.render(**variables)
    assert str(info.value).startswith(f"prompt p@3: {message}")


def test_steps_count_loop_iterations_and_calls():
    spec, _ = load_prompt_spec("p.yaml", text="name: p\ntemplate: '{% for i in range(n) %}{{ i }}{% endfor %}'\n"
                                              "variables: {n: int}\n")
    prompt = CompiledPrompt(spec, "p@1", limits=RenderLimits(max_steps=12))
    assert prompt.render({"n": 10}) == "0123456789"  # 1 call (range) + 10 iterations
    with pytest.raises(TemplateError) as info:
        prompt.render({"n": 12})
    assert str(info.value) == ("prompt p@1: the template ran more than 12 loop iterations and calls "
                               "(loop over less data, or do the work before rendering)")


def test_render_time_is_bounded():
    spec, _ = load_prompt_spec("p.yaml", text="name: p\ntemplate: '{% for i in range(3) %}{{ i }}{% endfor %}'\n")
    assert CompiledPrompt(spec, "p@1").render({}) == "012"
    out_of_time = CompiledPrompt(spec, "p@1", limits=RenderLimits(max_seconds=0))
    with pytest.raises(TemplateError) as info:
        out_of_time.render({})
    assert str(info.value) == ("prompt p@1: rendering took longer than 0 s "
                               "(loop over less data, or do the work before rendering)")


def test_large_but_reasonable_prompts_still_render():
    docs = [{"text": "x" * 10_000, "source": f"d{i}.md"} for i in range(50)]
    prompt = prompt_of("{% for d in docs %}[{{ loop.index }}] {{ d.text }} ({{ d.source }})\n{% endfor %}"
                       "{{ '%5.1f' % score }} {{ '{:>6}'.format(n) }} {{ 2 ** 64 }} {{ (['-'] * 3)|join }}",
                       {"docs": docs, "score": 0.0, "n": 0})
    out = prompt.render(docs=docs, score=0.25, n=7)
    assert len(out) > 500_000
    assert out.endswith("  0.2      7 18446744073709551616 ---")


# -- strict undefined: every use is an error, not "Undefined" in the text -------------------------

@pytest.mark.parametrize("template", [
    "{{ [d.nokey] }}", "{{ (d.nokey,) }}", "{{ d.nokey, 1 }}", "{{ {'a': d.nokey} }}", "{{ {d.nokey: 1} }}",
    "{{ [d.nokey]|length }}", "{% set t = [d.nokey] %}{{ t|length }}", "{{ d.nokey ~ 'a' }}", "{{ 'a' + d.nokey }}",
    "{{ d.nokey * 2 }}", "{{ 'a'|replace('a', d.nokey) }}", "{{ 'x'|default(d.nokey) }}", "{{ dict(a=d.nokey) }}",
    "{{ 'a'.upper(d.nokey) }}", "{{ [1]|map(attribute='nokey')|list }}", "{{ d.nokey is sameas 1 }}",
    "{{ 1 is sameas d.nokey }}", "{{ 'x' in [d.nokey] }}", "{{ 1 if d.nokey else 2 }}", "{{ d.nokey|pprint }}",
])
def test_any_use_of_an_undefined_value_is_an_error(template):
    prompt = prompt_of(template + "{{ d }}", {"d": {"a": 1}})
    with pytest.raises(TemplateError) as info:
        prompt.render(d={"a": 1})
    assert str(info.value) in ("prompt p@3: render failed: 'dict object' has no attribute 'nokey'",
                               "prompt p@3: render failed: 'int object' has no attribute 'nokey'")


def test_only_defined_and_default_may_look_at_an_undefined_value():
    prompt = prompt_of("{{ d.nokey is defined }} {{ d.nokey is undefined }} {{ d.nokey|default('z') }} "
                       "{{ d.get('nokey') }}", {"d": {"a": 1}})
    assert prompt.render(d={"a": 1}) == "False True z None"


def test_range_and_sum_of_lists_are_bounded():
    prompt = prompt_of("{{ range(n)|list|length }}", {"n": 0})
    assert prompt.render(n=100_000) == "100000"
    with pytest.raises(TemplateError) as info:
        prompt.render(n=100_001)
    assert str(info.value) == "prompt p@3: range() of 100,001 items is over the limit of 100,000 (loop over fewer items)"
    summed = prompt_of("{{ (rows|map('list'))|sum(start=[])|length }}", {"rows": []})
    assert summed.render(rows=[[1, 2], [3]]) == "3"  # a generator input is still summed whole
    with pytest.raises(TemplateError) as info:
        summed.render(rows=[[1] * 1000] * 1000)
    assert str(info.value).startswith("prompt p@3: the summed list would have 1,000,000 items (limit 100,000)")
