"""The restricted script engine: static checks, helpers, guarded globals and cost bounds.

Script tasks, pre/post scripts, conditions, timer expressions and task property expressions run
here, never in SpiffWorkflow's default engine (which runs full Python). Code is compiled with
RestrictedPython plus the checks of `check_source`, sees curated builtins and helper functions
only, and every engine run has an iteration, size and wall-clock budget (`start_run`).
"""
from __future__ import annotations

import ast
import functools
import math
import operator
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta, timezone

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_eval, compile_restricted_exec
from RestrictedPython.Guards import (full_write_guard, guarded_iter_unpack_sequence, guarded_unpack_sequence,
                                     safer_getattr_raise)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES, copy_locations
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment

from . import authz
from .errors import ScriptError, ScriptRefused

MAX_ITERATIONS = 200_000   # loop iterations + function calls per engine run
MAX_SIZE = 1_000_000       # items (or characters) of any one value a script builds or prints
MAX_INT_BITS = 100_000     # bits of any integer a script computes
BUDGET_SECONDS = 5.0       # wall-clock time of all scripts of one engine run
CHINA = timezone(timedelta(hours=8))  # Asia/Shanghai has kept +08:00 without DST since 1991

FORBIDDEN_NAMES = frozenset({
    "open", "__import__", "eval", "exec", "compile", "getattr", "setattr", "delattr", "type",
    "globals", "locals", "vars", "dir", "input", "breakpoint", "help", "memoryview", "object",
    "super", "classmethod", "staticmethod", "property", "__builtins__", "print", "printed"})
# str.format/format_map can walk attributes from inside the format string ('{0.__class__}'), and
# mro() leads from any type to `object`: refused statically too, with a hint.
FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map", "mro"}) | INSPECT_ATTRIBUTES
_STATEMENTS = {
    ast.Import: "`import` is not allowed", ast.ImportFrom: "`from ... import` is not allowed",
    ast.While: "`while` loops are not allowed", ast.ClassDef: "`class` definitions are not allowed",
    ast.Global: "`global` is not allowed", ast.Nonlocal: "`nonlocal` is not allowed",
    ast.Yield: "`yield` is not allowed", ast.YieldFrom: "`yield` is not allowed",
    ast.AsyncFunctionDef: "`async` is not allowed", ast.AsyncFor: "`async` is not allowed",
    ast.AsyncWith: "`async` is not allowed", ast.Await: "`await` is not allowed"}


# ---------------------------------------------------------------------- budgets
class Budget:
    """What the scripts of one engine run may still spend: iterations and wall-clock time."""

    def __init__(self, seconds: float = BUDGET_SECONDS, max_iterations: int = MAX_ITERATIONS):
        self.seconds, self.max_iterations = seconds, max_iterations
        self.deadline = time.monotonic() + seconds
        self.iterations = 0
        self.exceeded: str | None = None

    def _trip(self, message: str) -> None:
        # Remembered, so a script that swallows the error with a bare `except:` still fails.
        self.exceeded = self.exceeded or message
        raise ScriptError(self.exceeded)

    def check_clock(self) -> None:
        """Raise ScriptError once the budget is spent."""
        if self.exceeded:
            raise ScriptError(self.exceeded)
        if time.monotonic() > self.deadline:
            self._trip(f"script exceeded its time budget of {self.seconds:g} s")

    def step(self) -> None:
        """Count one loop iteration or function call."""
        self.iterations += 1
        if self.iterations > self.max_iterations:
            self._trip(f"script exceeded its iteration budget of {self.max_iterations}")
        self.check_clock()


_budget: ContextVar[Budget | None] = ContextVar("cleanaudit_script_budget", default=None)


class _Run:
    """The budget set by start_run; as a context manager it restores the previous one on exit."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self._token = _budget.set(budget)

    def __enter__(self) -> Budget:
        return self.budget

    def __exit__(self, *exc_info) -> None:
        _budget.reset(self._token)


def start_run(budget_seconds: float = BUDGET_SECONDS, max_iterations: int = MAX_ITERATIONS) -> _Run:
    """Give the scripts of the engine run that follows a fresh budget (this thread/context only)."""
    return _Run(Budget(budget_seconds, max_iterations))


def _current() -> Budget:
    return _budget.get() or Budget()


@contextmanager
def _script_scope():
    """Run one script under the current run's budget (a budget of its own without start_run)."""
    token = _budget.set(Budget()) if _budget.get() is None else None
    try:
        budget = _current()
        budget.check_clock()
        yield budget
        if budget.exceeded:
            raise ScriptError(budget.exceeded)
    finally:
        if token is not None:
            _budget.reset(token)


# ---------------------------------------------------------------------- size checks
def _check_size(n, what: str = "value") -> None:
    if isinstance(n, int) and n > MAX_SIZE:
        raise ScriptError(f"script tried to build a {what} of {n:,} items; the limit is {MAX_SIZE:,}")


def _check_bits(bits: float) -> None:
    if bits > MAX_INT_BITS:
        raise ScriptError(f"script tried to compute an integer of over {MAX_INT_BITS:,} bits")


def _check_spec(spec) -> None:
    """Refuse widths and precisions over the size limit in a format spec ('{:>1000000000}')."""
    for digits in re.findall(r"\d+", str(spec)):
        if len(digits) > 7 or int(digits) > MAX_SIZE:
            raise ScriptError(f"format width {digits} is over the limit of {MAX_SIZE:,}")


def _deep_size(value, limit: int = MAX_SIZE) -> int:
    """Items (characters for text) the value spells out when printed or stored, stopping past limit."""
    # Shared parts count each time they appear: `x = [x, x]` forty times prints 2**40 items.
    total, stack = 1, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total, children = total + len(item), ()
        elif isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        total += len(children)
        if total > limit:
            return total
        stack.extend(children)
    return total


_SEQUENCES = (str, bytes, bytearray, list, tuple)
_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d*)(?:\.(\*|\d*))?")


def _check_operation(op: str, left, right) -> None:
    """Refuse `*`, `+`, `%`, `**`, `<<` whose result would exceed the size limits."""
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(count, int) and count > 0:
                # Nested lists count whole: [[0] * 1000] * 1000 prints a million zeros.
                per_copy = _deep_size(seq) - 1 if isinstance(seq, (list, tuple)) else len(seq)
                _check_size(per_copy * count)
        if ints:
            _check_bits(left.bit_length() + right.bit_length())
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _check_size(len(left) + len(right))
    elif op == "**" and ints and right > 0 and abs(left) > 1:
        _check_bits(right * math.log2(abs(left)))
    elif op == "<<" and ints and left:
        _check_bits(left.bit_length() + right)
    elif op == "%" and isinstance(left, str):
        for width, precision in _PRINTF_FIELD.findall(left):
            if "*" in (width, precision):
                raise ScriptError("`*` widths in %-formatting are not allowed")
            _check_spec(f"{width} {precision}")
        _check_size(_deep_size(right), "text")


# ---------------------------------------------------------------------- guards
_OPERATORS = {"+": "add", "-": "sub", "*": "mul", "/": "truediv", "//": "floordiv", "%": "mod",
              "**": "pow", "<<": "lshift", ">>": "rshift", "&": "and_", "|": "or_", "^": "xor", "@": "matmul"}


def _binop(op: str, left, right):
    """`left op right` after the size checks (the policy rewrites `+ * % ** <<` into this)."""
    _check_operation(op, left, right)
    return getattr(operator, _OPERATORS[op])(left, right)


def _inplacevar(op: str, left, right):
    """`left op= right` (RestrictedPython's hook for augmented assignment) with the same checks."""
    _check_operation(op[:-1], left, right)
    return getattr(operator, "i" + _OPERATORS[op[:-1]].rstrip("_"))(left, right)


def _getiter(obj):
    """Iterate obj, counting every item against the run's iteration budget."""
    budget = _current()
    for item in obj:
        budget.step()
        yield item


def _tick() -> None:
    # Called on entry of every def and lambda: recursion runs no loop yet must spend the budget.
    _current().step()


# Methods whose result size the caller chooses, with the size each call would build.
_RESULT_SIZE = {
    "center": lambda s, width, *_: width, "ljust": lambda s, width, *_: width,
    "rjust": lambda s, width, *_: width, "zfill": lambda s, width: width,
    "expandtabs": lambda s, tabsize=8: len(s) * tabsize if isinstance(tabsize, int) else 0,
    "replace": lambda s, old, new, *_: len(s) + (len(s) + 1) * len(new),
    "join": lambda s, parts: len(s) * len(parts) + sum(len(p) for p in parts if isinstance(p, (str, bytes))),
    "extend": lambda s, items: len(s) + len(items),
}


def _getattr(obj, name: str):
    """Attribute access: RestrictedPython's safer_getattr, nothing on types, size-checked methods."""
    # Types lead to `object` (str.mro()) and their unbound methods dodge the checks below.
    if isinstance(obj, type):
        raise ScriptError(f"attribute `{name}` of a type is not available to scripts")
    method = safer_getattr_raise(obj, name)
    if name not in _RESULT_SIZE or not isinstance(obj, (str, bytes, bytearray, list)):
        return method

    def sized(*args, **kwargs):
        if name in ("join", "extend") and args:
            args = (list(args[0]),)  # a generator can be read once: measure what is passed on
        _check_size(_RESULT_SIZE[name](obj, *args, **kwargs))
        return method(*args, **kwargs)
    return sized


def _getitem(obj, key):
    return obj[key]


def _apply(function, *args, **kwargs):
    return function(*args, **kwargs)


# ---------------------------------------------------------------------- builtins
def _safe_range(*args):
    """range() of at most MAX_SIZE items (sum(), list() and friends iterate it unguarded)."""
    result = range(*args)
    _check_size(len(result), "range")
    return result


_CONVERSIONS = {-1: lambda value: value, ord("s"): str, ord("r"): repr, ord("a"): ascii}


def _format_value(value, conversion: int = -1, spec=""):
    """format(), and each `{value!conversion:spec}` of an f-string, refusing huge text."""
    _check_size(_deep_size(value), "text")
    _check_spec(spec)
    return format(_CONVERSIONS[conversion](value), spec)


def _safe_str(value="", *args):
    """str() refusing values that would print longer than the size limit."""
    _check_size(_deep_size(value), "text")
    return str(value, *args)


def _safe_sum(iterable, start=0):
    """sum() of numbers only: sum(lists, []) copies quadratically inside C."""
    if not isinstance(start, (int, float)):
        raise ScriptError("sum() only adds numbers")
    return sum(iterable, start)


def _safe_isinstance(obj, classinfo) -> bool:
    """isinstance() that understands the wrapped `str`."""
    real = {_safe_str: str}
    if isinstance(classinfo, tuple):
        return isinstance(obj, tuple(real.get(c, c) for c in classinfo))
    return isinstance(obj, real.get(classinfo, classinfo))


SAFE_BUILTINS = {
    "True": True, "False": False, "None": None,
    "abs": abs, "all": all, "any": any, "bool": bool, "dict": dict, "enumerate": enumerate, "float": float,
    "int": int, "len": len, "list": list, "max": max, "min": min, "round": round, "set": set,
    "sorted": sorted, "tuple": tuple, "zip": zip, "reversed": reversed, "divmod": divmod, "chr": chr,
    "ord": ord, "str": _safe_str, "repr": lambda value: _format_value(value, ord("r")),
    "format": lambda value, spec="": _format_value(value, -1, spec), "sum": _safe_sum,
    "range": _safe_range, "isinstance": _safe_isinstance,
    # Scripts may catch ordinary errors (a missing optional field, a bad number). A budget error
    # caught this way still fails the script: the budget remembers that it tripped.
    "Exception": Exception, "NameError": NameError, "KeyError": KeyError, "ValueError": ValueError,
    "TypeError": TypeError, "IndexError": IndexError, "ZeroDivisionError": ZeroDivisionError}


def guarded_globals() -> dict:
    """The names RestrictedPython's compiled code calls, plus the safe builtins."""
    return {"__builtins__": dict(SAFE_BUILTINS), "_getattr_": _getattr, "_getitem_": _getitem,
            "_getiter_": _getiter, "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence, "_write_": full_write_guard,
            "_inplacevar_": _inplacevar, "_apply_": _apply, "_binop_": _binop, "_tick_": _tick,
            "_format_value_": _format_value}


# ---------------------------------------------------------------------- compiling
class _Policy(RestrictingNodeTransformer):
    """RestrictedPython's policy, plus: size-checked operators and f-strings, ticks on calls."""

    _GUARDED_OPS = {ast.Add: "+", ast.Mult: "*", ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<"}

    @staticmethod
    def _call(name: str, where: ast.AST, *args: ast.expr) -> ast.Call:
        call = ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])
        copy_locations(call, where)
        return call

    def visit_BinOp(self, node):
        node = self.node_contents_visit(node)
        op = self._GUARDED_OPS.get(type(node.op))
        return node if op is None else self._call("_binop_", node, ast.Constant(op), node.left, node.right)

    def visit_FormattedValue(self, node):
        node = self.node_contents_visit(node)
        spec = node.format_spec or ast.Constant("")
        node.value = self._call("_format_value_", node.value, node.value, ast.Constant(node.conversion), spec)
        node.conversion, node.format_spec = -1, None
        return node

    def visit_FunctionDef(self, node):
        node = super().visit_FunctionDef(node)
        tick = ast.Expr(self._call("_tick_", node))
        copy_locations(tick, node)
        node.body.insert(0, tick)
        return node

    def visit_Lambda(self, node):
        node = super().visit_Lambda(node)
        node.body = ast.BoolOp(op=ast.Or(), values=[self._call("_tick_", node.body), node.body])
        copy_locations(node.body, node.body.values[1])
        return node


def _refusal(node: ast.AST) -> str | None:
    """Why the node is not allowed, or None."""
    if type(node) in _STATEMENTS:
        return _STATEMENTS[type(node)]
    if isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or (node.id.startswith("_") and node.id != "_")):
        return f"name `{node.id}` is not allowed"
    if isinstance(node, ast.Attribute) and (node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRIBUTES):
        hint = " (use an f-string)" if node.attr.startswith("format") else ""
        return f"attribute `{node.attr}` is not allowed{hint}"
    return None


@functools.lru_cache(maxsize=2048)
def _analyse(source: str, mode: str):
    """(compiled code or None, problems) for the source; cached by source text."""
    if mode not in ("exec", "eval"):
        raise ValueError(f"mode must be 'exec' or 'eval', got {mode!r}")
    source = source.strip() if mode == "eval" else source  # eval() ignores surrounding blanks too
    try:
        tree = ast.parse(source, mode=mode)
    except SyntaxError as exc:
        return None, (f"line {exc.lineno}: syntax error: {exc.msg}",)
    problems = sorted({(node.lineno, f"line {node.lineno}: {why}") for node in ast.walk(tree)
                       if (why := _refusal(node))})
    ours = {line for line, _ in problems}
    compile_restricted = compile_restricted_exec if mode == "exec" else compile_restricted_eval
    result = compile_restricted(source, filename="<string>", policy=_Policy)
    for error in result.errors:  # what RestrictedPython refuses beyond our own checks
        match = re.match(r"Line (\w+): (.*)", error)
        line = int(match.group(1)) if match and match.group(1).isdigit() else 0
        if line not in ours:
            problems.append((line, f"line {line}: {match.group(2) if match else error}"))
    return result.code, tuple(message for _, message in sorted(problems))


def check_source(source: str, mode: str) -> list[str]:
    """The problems that keep a script ("exec") or expression ("eval") from running; empty = fine."""
    return list(_analyse(source, mode)[1])


def _compiled(source: str, mode: str):
    code, problems = _analyse(source, mode)
    if problems:
        raise ScriptRefused("; ".join(problems))
    return code


# ---------------------------------------------------------------------- helpers
def prefecture_of(code) -> str:
    """The prefecture-level division of a six-digit code: its first four digits + "00"."""
    text = str(code)
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"division code must be six digits, got {code!r}")
    return text[:4] + "00"


def _clock_now() -> datetime:
    try:
        from . import clock
    except ImportError:
        return datetime.now(timezone.utc)
    return clock.now()


def _as_date_or_datetime(value) -> date:
    if isinstance(value, date):
        return value
    text = str(value).strip()
    return datetime.fromisoformat(text) if "T" in text or " " in text else date.fromisoformat(text)


def now() -> str:
    """The engine clock's current time, ISO 8601 with the +08:00 offset."""
    return _clock_now().astimezone(CHINA).isoformat()


def today() -> str:
    """The engine clock's current date in China, ISO 8601."""
    return _clock_now().astimezone(CHINA).date().isoformat()


def add_days(iso_date, n) -> str:
    """The ISO date (or datetime) n days later (earlier for negative n)."""
    return (_as_date_or_datetime(iso_date) + timedelta(days=int(n))).isoformat()


def parse_date(s) -> str:
    """A date given as ISO date/datetime, 2025/3/1, 2025.3.1 or 2025年3月1日, as an ISO date."""
    match = re.fullmatch(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?", str(s).strip())
    value = date(*map(int, match.groups())) if match else _as_date_or_datetime(s)
    if isinstance(value, datetime):
        value = value.astimezone(CHINA) if value.utcoffset() is not None else value
        return value.date().isoformat()
    return value.isoformat()


def due(start, period) -> str:
    """The statutory deadline `period` ("P30D", "P1M") after start, as an ISO datetime."""
    from . import deadlines  # imported late: deadlines loads the holiday calendar
    return deadlines.due(start, period).isoformat()


HELPERS = {"jurisdiction": authz.jurisdiction, "organisation": authz.organisation, "user": authz.user,
           "prefecture_of": prefecture_of, "due": due, "today": today, "now": now,
           "add_days": add_days, "parse_date": parse_date}


# ---------------------------------------------------------------------- the engine
_CONTAINERS = (dict, list, set)


def own_copy(value):
    """A deep copy of JSON-like data (dicts, lists, sets); other values are shared as they are."""
    kind = type(value)
    if kind is dict:
        return {k: own_copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if kind is list:
        return [own_copy(v) if type(v) in _CONTAINERS else v for v in value]
    if kind is set:
        return set(value)
    return value


class RestrictedEnvironment(TaskDataEnvironment):
    """SpiffWorkflow's task-data environment, compiling with RestrictedPython and guarded globals."""

    _allowed_names: set = set()  # helper names already checked (an environment is made per action)

    def __init__(self, helpers: dict | None = None):
        self.helpers = {**HELPERS, **(helpers or {})}
        allowed = RestrictedEnvironment._allowed_names
        for name in self.helpers:
            if name in allowed:
                continue
            if not name.isidentifier() or name.startswith("_") or name in SAFE_BUILTINS:
                raise ValueError(f"helper name {name!r} is not allowed")
            allowed.add(name)
        super().__init__(dict(self.helpers))

    def evaluate(self, expression, context, external_context=None):
        code = _compiled(expression, "eval")
        # Guards go last: task data must never replace them.
        scope = {**self.globals, **(external_context or {}), **context, **guarded_globals()}
        with _script_scope():
            result = eval(code, scope)
        _check_size(_deep_size(result), "result")
        return result

    def execute(self, script, context, external_context=None):
        code = _compiled(script, "exec")  # refused code never touches the task data
        self.check_for_overwrite(context, external_context or {})
        # SpiffWorkflow copies only the top level of a task's data into the next task: nested
        # lists and dicts are shared with the tasks that ran before. The script gets its own
        # copies, so that changing `rows[0]["v"]` changes this task's data only, not the data
        # earlier tasks recorded (and stored).
        for key, value in context.items():
            if type(value) in _CONTAINERS:
                context[key] = own_copy(value)
        context.update({**self.globals, **(external_context or {}), **guarded_globals()})
        try:
            with _script_scope():
                exec(code, context)
        finally:
            # Removes __builtins__, helpers, guards (all callable) and functions the script defined.
            self._remove_globals_and_functions_from_context(context, external_context)
        _check_size(_deep_size(context), "task data")  # it is stored and serialised next
        return True


class RestrictedScriptEngine(PythonScriptEngine):
    """SpiffWorkflow's script engine running everything in the restricted environment."""

    def __init__(self, helpers: dict | None = None):
        super().__init__(environment=RestrictedEnvironment(helpers))

    def evaluate_expression(self, expression: str, data: dict):
        """Evaluate an expression over data without a task (e.g. the `scope` property)."""
        return _evaluate(self.environment, expression, data)


def _evaluate(environment: RestrictedEnvironment, expression: str, data: dict):
    try:
        return environment.evaluate(expression, dict(data))
    except (ScriptError, ScriptRefused):
        raise
    except Exception as exc:
        raise ScriptError(f"error evaluating {expression!r}: {type(exc).__name__}: {exc}") from exc


def evaluate_expression(expression: str, data: dict, helpers: dict | None = None):
    """Evaluate a restricted expression over data with HELPERS plus helpers; failures raise ScriptError."""
    return _evaluate(RestrictedEnvironment(helpers), expression, data)
