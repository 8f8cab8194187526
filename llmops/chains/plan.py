"""Stage 2 of a chain check: wiring against the prompts and chains it uses, and the run plan.

`ChainSpec` (stage 1) knows what one file can know alone. `check_chain` needs the referenced
prompts and chains, through a `resolve` callback so that both the folder being pushed and the
registry can answer, to check that every value a step reads exists and fits, every ref exists,
there is no cycle and every step output feeds something. Each step type checks itself
(`StepSpec.check`) with the helpers of `Planner`; the result is a `ChainPlan` (run order and
wiring) that the runner follows as is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmops.chains.spec import ChainSpec, StepSpec
from llmops.errors import SpecError
from llmops.prompts.spec import VariableSpec
from llmops.specfile import SourceMap, suggest

__all__ = ["ChainPlan", "Planner", "Resolver", "check_chain"]

#: resolve(kind, ref) -> the referenced spec (PromptSpec for "prompt", ChainSpec for "chain"),
#: any non-None object for other kinds ("index", "model", "adapter"), or None when it does not exist.
Resolver = Callable[[str, str], Any]

_TYPE_WORDS = {"documents": "a list of documents", "prompt": "a rendered prompt", "any": "any value"}


@dataclass(frozen=True)
class ChainPlan:
    """How to run a checked chain: steps in run order, and what each step reads.

    `wiring[step]` maps the step's parameter to a value name, e.g. `{"query": "question"}` for a
    retrieve step or `{variable: value}` for a prompt step.
    """

    order: tuple[str, ...]
    wiring: dict[str, dict[str, str]]
    output: str

    def producer(self, spec: ChainSpec, value: str) -> StepSpec | None:
        """The step whose output is `value` (None for a chain input)."""
        return next((s for s in spec.steps if s.out == value), None)


def _fits(value_type: str, wanted: str) -> bool:
    if value_type == "any" or wanted == "any" or value_type == wanted:
        return True
    return (wanted == "list" and value_type == "documents") or (wanted == "float" and value_type == "int")


class Planner:
    """What a step's `check` works with: the chain's values, their types, refs, and errors that name
    the step's line in the file. `step` and `index` are the step being checked."""

    def __init__(self, spec: ChainSpec, resolve: Resolver, where: SourceMap | None = None):
        self.spec, self._resolve, self.where = spec, resolve, where or SourceMap(None)
        self.value_type: dict[str, str] = {name: var.type for name, var in spec.inputs.items()}
        self.producer: dict[str, str] = {}
        for step in spec.steps:
            self.value_type[step.out] = step.output_type()
            self.producer[step.out] = step.name
        self.index = 0
        self.step: StepSpec = spec.steps[0]

    def error(self, loc: tuple[Any, ...], message: str, fix: str | None = None) -> SpecError:
        """A SpecError at field `loc` of the current step, naming the step."""
        return self.where.error(("steps", self.index) + loc, f"step '{self.step.name}': {message}", fix=fix)

    def need_value(self, loc: tuple[Any, ...], name: str) -> None:
        """Refuse reading a value that is neither a chain input nor another step's output."""
        own = self.step.out
        others = [v for v in self.value_type if v != own]
        if name not in self.value_type or name == own:
            close = suggest(name, others)
            fix = f"did you mean '{close}'?" if close else f"values: {', '.join(others)}"
            raise self.error(loc, f"reads '{name}', which is neither a chain input nor another step's output", fix)

    def describe(self, name: str) -> str:
        t = self.value_type[name]
        whose = f"output of step '{self.producer[name]}'" if name in self.producer else "chain input"
        return f"'{name}' ({whose}) is {_TYPE_WORDS.get(t, t)}"

    def read(self, param: str, accepts: tuple[str, ...]) -> dict[str, str]:
        """Wiring of a single-input step: its `input:` or the previous step's output, of a fitting type."""
        previous = self.spec.steps[self.index - 1].out if self.index > 0 else None
        source = getattr(self.step, "input", None) or previous
        if source is None:
            raise self.error((), "has no input and no step before it",
                             f"set `input:` to one of the chain inputs: {', '.join(self.spec.inputs) or '(none declared)'}")
        self.need_value(("input",), source)
        if not any(_fits(self.value_type[source], t) for t in accepts):
            raise self.error(("input",), f"needs {' or '.join(_TYPE_WORDS.get(t, t) for t in accepts)} "
                                         f"but {self.describe(source)}")
        return {param: source}

    def resolve(self, field: str) -> Any:
        """The asset named by the current step's ref field `field`, through the resolver."""
        kind, ref = next((k, r) for f, k, r in self.step.refs() if f == field)
        found = self._resolve(kind, ref)
        if found is None:
            raise self.error((field,), f"{kind} '{ref}' does not exist",
                             "push it first or fix the name (see `llmops assets list`)")
        return found

    def fill(self, what: str, label: str, wanted: dict[str, VariableSpec],
             mapping: dict[str, str]) -> dict[str, str]:
        """Wire named parameters (`wanted`) from `mapping` (under the step's `inputs:`) or by name."""
        own = self.step.out
        wiring: dict[str, str] = {}
        for key, value in mapping.items():
            if key not in wanted:
                close = suggest(key, list(wanted))
                fix = f"did you mean '{close}'?" if close else f"{what}s: {', '.join(wanted) or 'none'}"
                raise self.error(("inputs", key), f"maps '{key}', which is not a {what} of {label}", fix)
            self.need_value(("inputs", key), value)
            wiring[key] = value
        for key, var in wanted.items():
            if key not in wiring and key in self.value_type and key != own:
                wiring[key] = key
            if key not in wiring:
                if var.required:
                    raise self.error(("inputs",), f"{what} '{key}' of {label} is not supplied: "
                                                  f"no chain input or step output is named '{key}'",
                                     f"map it under inputs: ({key}: <value>) or declare a chain input '{key}'")
                continue
            if not _fits(self.value_type[wiring[key]], var.type):
                raise self.error(("inputs", key) if key in mapping else ("inputs",),
                                 f"{what} '{key}' of {label} is {var.type} but {self.describe(wiring[key])}",
                                 f"change the {what}'s type or feed it another value")
        return wiring

    def no_chain_cycle(self, field: str, sub: ChainSpec) -> None:
        """Refuse chain -> ... -> chain loops through any step's chain refs."""
        self._walk(sub, [self.spec.name], field)

    def _walk(self, chain: ChainSpec, stack: list[str], field: str) -> None:
        stack = stack + [chain.name]
        if chain.name in stack[:-1]:
            raise self.error((field,), "chains form a cycle: " + " -> ".join(stack[stack.index(chain.name):]))
        for step in chain.steps:
            for _, kind, ref in step.refs():
                if kind == "chain":
                    sub = self._resolve("chain", ref)
                    if isinstance(sub, ChainSpec):
                        self._walk(sub, stack, field)


def check_chain(spec: ChainSpec, resolve: Resolver, where: SourceMap | None = None) -> ChainPlan:
    """Stage 2: each step checks itself (refs exist, what it reads exists and fits); then no
    cycle, every step output feeds something and every required input is read."""
    plan = Planner(spec, resolve, where)
    wiring: dict[str, dict[str, str]] = {}
    for i, step in enumerate(spec.steps):
        plan.index, plan.step = i, step
        wiring[step.name] = step.check(plan)
    order = _run_order(spec, wiring, plan.producer, plan.where)
    consumed = {value for w in wiring.values() for value in w.values()}
    for i, step in enumerate(spec.steps):
        if step.out not in consumed and step.out != spec.final_output:
            raise plan.where.error(("steps", i), f"step '{step.name}': its output '{step.out}' feeds nothing",
                                   fix="read it in a later step, make it the chain's `output:`, or remove the step")
    for name, var in spec.inputs.items():
        if name not in consumed and var.required:
            raise plan.where.error(("inputs", name), f"chain input '{name}' is not read by any step",
                                   fix="wire it into a step, give it a default, or remove it")
    return ChainPlan(order=order, wiring=wiring, output=spec.final_output)


def _run_order(spec: ChainSpec, wiring: dict[str, dict[str, str]], producer: dict[str, str],
               where: SourceMap) -> tuple[str, ...]:
    """Steps in dependency order (listing order among equals); a cycle is an error naming it."""
    deps = {step.name: [producer[v] for v in wiring[step.name].values() if v in producer] for step in spec.steps}
    order: list[str] = []
    done: set[str] = set()
    pending = [s.name for s in spec.steps]
    while pending:
        ready = next((n for n in pending if all(d in done for d in deps[n])), None)
        if ready is None:
            cycle = _find_cycle(pending, deps)
            index = next(i for i, s in enumerate(spec.steps) if s.name == cycle[0])
            raise where.error(("steps", index), "steps form a cycle: " + " -> ".join(cycle),
                              fix="a step cannot read, directly or not, its own output")
        order.append(ready)
        done.add(ready)
        pending.remove(ready)
    return tuple(order)


def _find_cycle(pending: list[str], deps: dict[str, list[str]]) -> list[str]:
    """Walk from the first pending step along unfinished dependencies until a name repeats."""
    path = [pending[0]]
    while True:
        nxt = next(d for d in deps[path[-1]] if d in pending)
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
