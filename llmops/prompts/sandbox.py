"""The environment every prompt template runs in: Jinja2's immutable sandbox, strict about undefined
values, with a bounded cost per render.

Why: a template is user input, in a spec anyone may share, rendered by the CLI and by chains.
Jinja2's sandbox stops templates reaching Python internals, but not their cost: `{{ 10 ** 100000 }}` (which Jinja2 folds at
compile time), `{{ 'y' * 30000000 }}`, `'%999999999d' % 1`, nested `range(100000)` loops, a macro
that calls itself twice. So every operation that can grow a value is checked *before* it runs
(the limits and checks are in llmops.prompts.limits):

- numbers: `**` and `*` may not make an int over `max_int_bits`;
- text: `*`, `+`, `~`, `%`, `.format`, string methods (`center`, `replace`, `join`, ...) and filters
  may not build a string over `max_text` characters, and the rendered output is cut off at that size;
- sequences: `*` and `+` may not make a list over `max_items` (Jinja2's own `range` limit);
- time: loop iterations and calls together are counted (`max_steps`) and the clock is checked on each
  (`max_seconds`), so nested loops, filters inside loops and recursive macros all stop.

Constant expressions are checked when a prompt is pushed (`LimitExceeded.lineno` points at the line);
the rest when it renders. An undefined value is an error wherever it is used: printed, inside a list,
tuple or dict literal, as an argument of a call, filter or test, or joined with `~`; only
`is defined`, `is undefined` and `|default` may look at one.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.visitor import NodeTransformer

from llmops.prompts.limits import (DEFAULT_LIMITS, GROWING_METHODS, LimitExceeded, check_format_string, check_printf,
                                   check_str_method, check_text, check_width, checked_binop, current_budget,
                                   current_limits, printf_size, replace_size, spec_width, step, text_size, too_long)

__all__ = ["PromptEnvironment"]


class _BoundedFormatter(SandboxedFormatter):
    """`str.format` with each field's width and value measured before it is formatted."""

    def __init__(self, env: Any):
        super().__init__(env)
        self._total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        limit = current_limits().max_text
        self._total += spec_width(format_spec) + text_size(value, limit) + 32
        if self._total > limit:
            raise too_long("the formatted text", self._total, limit)
        return super().format_field(value, format_spec)


# -- filters ----------------------------------------------------------------------------------------

# Filters that turn their input into text: a container input is measured first.
_TEXT_FILTERS = frozenset({"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower",
                           "pprint", "replace", "safe", "string", "striptags", "title", "tojson", "trim",
                           "truncate", "upper", "urlencode", "wordcount", "wordwrap"})
# Filters with no place in a prompt that can multiply their input: refused at compile time.
_DROPPED_FILTERS = ("urlize", "xmlattr")


def _pre_check(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Argument checks of the filters whose output can outgrow their input by more than a constant."""
    limits = current_limits()
    value = args[0] if args else None
    rest = args[1:]

    def opt(i: int, key: str, default: Any) -> Any:
        return rest[i] if len(rest) > i else kwargs.get(key, default)

    if name in _TEXT_FILTERS and not isinstance(value, str):
        check_text(value, f"the input of |{name}")
    text = value if isinstance(value, str) else ""
    if name == "center":
        check_width(opt(0, "width", 80), "width")
    elif name == "indent":
        width = opt(0, "width", 4)
        width = len(width) if isinstance(width, str) else check_width(width, "indent width")
        size = len(text) + (text.count("\n") + 1) * max(width, 0)
        if size > limits.max_text:
            raise too_long("the indented text", size, limits.max_text)
    elif name == "wordwrap":
        width, wrap = opt(0, "width", 79), opt(2, "wrapstring", None) or "\n"
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
        size = len(text) + lines * len(wrap)
        if size > limits.max_text:
            raise too_long("the wrapped text", size, limits.max_text)
    elif name == "replace":
        old, new, count = opt(0, "old", ""), opt(1, "new", ""), opt(2, "count", None)
        if isinstance(old, str) and isinstance(new, str):
            size = replace_size(text, old, new, -1 if count is None else count)
            if size > limits.max_text:
                raise too_long("the replaced text", size, limits.max_text)
    elif name == "join":
        items = list(value) if value is not None else []
        sep = opt(0, "d", "")
        size = len(sep) * max(len(items) - 1, 0) + sum(text_size(i, limits.max_text) for i in items)
        if size > limits.max_text:
            raise too_long("the joined text", size, limits.max_text)
        args = (items,) + rest
    elif name == "format":
        check_printf(text, kwargs or rest)
    elif name in ("batch", "slice"):
        count = opt(0, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > limits.max_items:
            raise LimitExceeded(f"|{name}({count:,}) is over the limit of {limits.max_items:,} items",
                                "use a smaller count")
    elif name == "tojson":
        indent = opt(0, "indent", None)
        if isinstance(indent, int) and indent > 16:
            raise LimitExceeded(f"|tojson indent {indent:,} is over 16", "use an indent of 16 or less")
    elif name == "sum":
        start = opt(1, "start", 0)
        if isinstance(start, (list, tuple)):
            items = list(value)
            args = (items,) + rest
            size = len(start) + sum(len(i) for i in items if isinstance(i, (list, tuple)))
            if size > limits.max_items:
                raise LimitExceeded(f"the summed list would have {size:,} items (limit {limits.max_items:,})",
                                    "build a shorter list")
    return args, kwargs


def _guard_filter(name: str, func: Any) -> Any:
    """The filter with its arguments checked first and its text result measured after."""
    pass_arg = getattr(func, "jinja_pass_arg", None)
    skip = 0 if pass_arg is None else 1  # context, eval context or environment comes first

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        head, args = args[:skip], args[skip:]
        for arg in list(args[1:]) + list(kwargs.values()):
            if isinstance(arg, Undefined):
                arg._fail_with_undefined_error()
        args, kwargs = _pre_check(name, args, kwargs)
        result = func(*head, *args, **kwargs)
        if isinstance(result, str):
            check_text(result, f"the output of |{name}")
        return result

    return guarded


def _guard_test(name: str, func: Any) -> Any:
    """The test refusing an undefined value, except `defined` and `undefined`, which exist to look at one."""
    if name in ("defined", "undefined"):
        return func
    skip = 0 if getattr(func, "jinja_pass_arg", None) is None else 1

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for arg in list(args[skip:]) + list(kwargs.values()):
            if isinstance(arg, Undefined):
                arg._fail_with_undefined_error()
        return func(*args, **kwargs)

    return guarded


# -- the environment --------------------------------------------------------------------------------

class _StrictUndefined(StrictUndefined):
    """StrictUndefined that also refuses repr(), so `{{ [d.nokey] }}` fails instead of printing `[Undefined]`."""

    __slots__ = ()
    __repr__ = Undefined._fail_with_undefined_error


def _bounded_range(*args: int) -> range:
    """`range` limited to max_items (Jinja2's sandbox range, with an error that says the limit)."""
    numbers = range(*args)
    limit = current_limits().max_items
    if len(numbers) > limit:
        raise LimitExceeded(f"range() of {len(numbers):,} items is over the limit of {limit:,}", "loop over fewer items")
    return numbers


_SCALARS = frozenset({str, int, float, bool, type(None)})  # ints are bounded where they are built


def _finalize(value: Any) -> Any:
    if type(value) not in _SCALARS:
        check_text(value, "the printed value")
    return value


def _bounded_join(parts: Any) -> str:
    limit = current_limits().max_text
    out: list[str] = []
    append, total = out.append, 0
    for part in parts:  # counted as it comes: a loop cannot build gigabytes before the check
        total += len(part)
        if total > limit:
            raise LimitExceeded(f"the rendered text is over the limit of {limit:,} characters",
                                "render less text: loop over fewer items or pass shorter values")
        append(part)
    return "".join(out)


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with StrictUndefined, checked operators, filters and calls, and a bounded output."""

    intercepted_binops = frozenset({"+", "-", "*", "**", "%"})
    concat = staticmethod(_bounded_join)

    def __init__(self) -> None:
        super().__init__(undefined=_StrictUndefined, autoescape=False, finalize=_finalize)
        for name in _DROPPED_FILTERS:
            self.filters.pop(name, None)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.tests = {name: _guard_test(name, f) for name, f in self.tests.items()}
        self.globals.pop("lipsum", None)
        self.globals["range"] = _bounded_range

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        for value in (left, right):
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
        return checked_binop(operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        step()
        for arg in args + tuple(kwargs.values()):
            if isinstance(arg, Undefined):
                arg._fail_with_undefined_error()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's `loop(children)`
            args = (__self.bounded_iter(args[0]),) + args[1:]
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)) and getattr(__obj, "__name__", None) in GROWING_METHODS:
            args = check_str_method(owner, __obj.__name__, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):
            check_text(result, "the returned text")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None or not isinstance(value.__self__, str):
            return wrapper
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            check_format_string(fmt)
            return type(fmt)(_BoundedFormatter(self).vformat(fmt, args, kwargs))

        return functools.update_wrapper(bounded_format, value)

    # Called from templates through the nodes _Bounder adds (EnvironmentAttribute: never shadowed).
    def bounded_iter(self, iterable: Any) -> Any:
        budget = current_budget()
        if budget is None:
            yield from iterable
            return
        for item in iterable:
            budget.step()
            yield item

    def checked_literal(self, value: Any) -> Any:
        items = value.items() if isinstance(value, dict) else ((v,) for v in value)
        for pair in items:
            for item in pair:
                if isinstance(item, Undefined):
                    item._fail_with_undefined_error()
        return value

    def checked_concat(self, *values: Any) -> str:
        limit = current_limits().max_text
        total = 0
        for value in values:
            total += text_size(value, limit)
            if total > limit:
                raise too_long("the joined text", total, limit)
        return "".join(map(str, values))

    def compile_checked(self, ast: nodes.Template) -> Any:
        """`ast` with the bound checks added and constant expressions checked, compiled."""
        return self.from_string(_Bounder(self).visit(ast))


def _env_call(env: PromptEnvironment, name: str, *args: nodes.Expr, lineno: int) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), list(args), [], None, None)
    call.set_lineno(lineno)
    call.set_environment(env)
    return call


class _Bounder(NodeTransformer):
    """Rewrites a parsed template so that its loops count steps, its literals refuse undefined values,
    `~` measures what it joins; and evaluates constant expressions with the checked operators, so
    `{{ 10 ** 100000 }}` fails at push (with its line) instead of in Jinja2's constant folding."""

    def __init__(self, env: PromptEnvironment):
        self.env = env
        self.ctx = nodes.EvalContext(env)
        self.loop_product = 1

    def _const(self, node: nodes.Node) -> tuple[bool, Any]:
        try:
            return True, node.as_const(self.ctx)
        except nodes.Impossible as exc:
            if isinstance(exc.__cause__, LimitExceeded):
                raise LimitExceeded(exc.__cause__.message, exc.__cause__.fix, node.lineno) from None
            return False, None
        except LimitExceeded as exc:
            raise LimitExceeded(exc.message, exc.fix, node.lineno) from None
        except Exception:
            return False, None

    def visit_BinExpr(self, node: nodes.BinExpr) -> nodes.Node:
        self.generic_visit(node)
        if node.operator in self.env.intercepted_binops:
            if node.operator == "%" and isinstance(node.left, nodes.Const) and isinstance(node.left.value, str):
                try:
                    size = printf_size(node.left.value, ())
                except LimitExceeded as exc:
                    raise LimitExceeded(exc.message, exc.fix, node.lineno) from None
                if size > DEFAULT_LIMITS.max_text:
                    raise LimitExceeded(too_long("the formatted text", size, DEFAULT_LIMITS.max_text).message,
                                        "use a smaller width or precision", node.lineno)
            if isinstance(node.left, nodes.Const) and isinstance(node.right, nodes.Const):
                try:
                    value = checked_binop(node.operator, node.left.value, node.right.value)
                except LimitExceeded as exc:
                    raise LimitExceeded(exc.message, exc.fix, node.lineno) from None
                except Exception:
                    return node  # 1 / 0, 'a' - 1: Python's own error at render
                return nodes.Const.from_untrusted(value, lineno=node.lineno, environment=self.env)
        return node

    # NodeTransformer dispatches on the class name: Pow, Mul, Add, Sub, Mod are the BinExprs we check.
    visit_Pow = visit_Mul = visit_Add = visit_Sub = visit_Mod = visit_BinExpr

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        self.generic_visit(node)  # arguments: the guarded filter refuses an undefined one
        if node.node is not None:
            self._const(node)
        return node

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        self.generic_visit(node)
        target = node.node
        if (isinstance(target, nodes.Getattr) and target.attr in ("format", "format_map")
                and isinstance(target.node, nodes.Const) and isinstance(target.node.value, str)):
            try:
                check_format_string(target.node.value)
            except LimitExceeded as exc:
                raise LimitExceeded(exc.message, exc.fix, node.lineno) from None
        return node

    def _literal(self, node: nodes.Expr) -> nodes.Expr:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load" or self._const(node)[0]:
            return node
        return _env_call(self.env, "checked_literal", node, lineno=node.lineno)

    visit_List = visit_Tuple = visit_Dict = _literal

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        ok, value = self._const(node)
        if ok:
            if len(value) > DEFAULT_LIMITS.max_text:
                raise LimitExceeded(too_long("the joined text", len(value), DEFAULT_LIMITS.max_text).message,
                                    "build shorter text", node.lineno)
            return node
        return _env_call(self.env, "checked_concat", *node.nodes, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        count = self._static_length(node.iter)
        outer = self.loop_product
        self.loop_product *= count
        if self.loop_product > DEFAULT_LIMITS.max_steps:
            raise LimitExceeded(f"these nested loops would run {self.loop_product:,} times "
                                f"(limit {DEFAULT_LIMITS.max_steps:,})", "loop over less data", node.lineno)
        try:
            self.generic_visit(node)
        finally:
            self.loop_product = outer
        node.iter = _env_call(self.env, "bounded_iter", node.iter, lineno=node.lineno)
        return node

    def _static_length(self, node: nodes.Expr) -> int:
        """The length of `range(<constants>)`, else 1."""
        if (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range"
                and not node.kwargs and node.dyn_args is None and node.dyn_kwargs is None
                and all(isinstance(a, nodes.Const) and isinstance(a.value, int) for a in node.args)):
            try:
                n = len(range(*(a.value for a in node.args)))
            except (TypeError, ValueError, OverflowError):
                return 1
            if n > DEFAULT_LIMITS.max_items:
                raise LimitExceeded(f"range() of {n:,} items is over the limit of {DEFAULT_LIMITS.max_items:,}",
                                    "loop over fewer items", node.lineno)
            return max(n, 1)
        return 1

