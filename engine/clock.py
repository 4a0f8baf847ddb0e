"""The injectable, thread-safe clock: a context variable holding an optional fixed "now"."""
from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta, timezone

_real_datetime = datetime

# Each thread (and each asyncio task) has its own context, so a fixed time set in one request or
# test never leaks into another; a fresh thread starts with the real time.
_fixed: ContextVar[datetime | None] = ContextVar("cleanaudit_clock_now", default=None)


def now() -> datetime:
    """The current time, aware and in UTC: the fixed time of this context, else the real time."""
    fixed = _fixed.get()
    return fixed if fixed is not None else _real_datetime.now(timezone.utc)


def is_fixed() -> bool:
    """True when this context runs on a fixed (fake) time."""
    return _fixed.get() is not None


def _checked(dt: datetime) -> datetime:
    """An aware datetime converted to UTC; naive datetimes and other types are refused."""
    if not isinstance(dt, _real_datetime):
        raise ValueError(f"the clock needs an aware datetime, got {dt!r}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"the clock refuses naive datetimes (no time zone): {dt.isoformat()}")
    return dt.astimezone(timezone.utc)


@contextmanager
def use_clock(dt: datetime) -> Iterator[datetime]:
    """Run the block with now() fixed at dt (this context/thread only); restores the previous clock."""
    token = _fixed.set(_checked(dt))
    try:
        yield _fixed.get()
    finally:
        _fixed.reset(token)


def set_now(dt: datetime) -> None:
    """Fix now() at dt for the rest of this context (thread) until reset()."""
    _fixed.set(_checked(dt))


def advance(delta: timedelta) -> datetime:
    """Move this context's fixed time forward by delta and return it (ValueError if not fixed)."""
    fixed = _fixed.get()
    if fixed is None:
        raise ValueError("advance() needs a fixed clock (use_clock or set_now first)")
    moved = fixed + delta
    _fixed.set(moved)
    return moved


def reset() -> None:
    """Return this context to the real time."""
    _fixed.set(None)


class _ClockDatetimeType(type):
    """Metaclass so that isinstance/issubclass against the patched name accept every datetime."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _real_datetime)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _real_datetime)


class ClockDatetime(_real_datetime, metaclass=_ClockDatetimeType):
    """Stand-in for `datetime` in SpiffWorkflow modules: now() reads our clock, all else is datetime."""

    def __new__(cls, *args, **kwargs):
        # Constructors (and fromisoformat/combine/..., which call cls(...) for subclasses) give
        # plain datetimes, so no instance of this class ever reaches task data or a serializer.
        return _real_datetime(*args, **kwargs)

    @classmethod
    def now(cls, tz=None):
        """Our clock's now, in tz (naive local time when tz is None, like datetime.now())."""
        current = now()
        if tz is None:
            return current.astimezone().replace(tzinfo=None)
        return current.astimezone(tz)

    @classmethod
    def today(cls):
        """Our clock's now as naive local time, like datetime.today()."""
        return cls.now()

    @classmethod
    def utcnow(cls):
        """Our clock's now as naive UTC, like datetime.utcnow()."""
        return now().replace(tzinfo=None)


# Modules of SpiffWorkflow 3.2 that ask for the current time through their module-level
# `datetime` name. Only the timer module does (datetime.now(timezone.utc) in TimeDate, Duration and
# Cycle timers, and for durations without a start); the serializer registry and the 1.2 migration
# import datetime but never read the time, and task.py's time.time() only stamps state changes.
PATCHED_MODULES = ("SpiffWorkflow.bpmn.specs.event_definitions.timer",)

_install_lock = threading.Lock()
_originals: dict[str, object] = {}


def install() -> None:
    """Make SpiffWorkflow's timers read this clock (idempotent, process-wide)."""
    with _install_lock:
        for name in PATCHED_MODULES:
            module = importlib.import_module(name)
            current = getattr(module, "datetime", None)
            if current is ClockDatetime:
                continue
            if current is not _real_datetime:
                raise RuntimeError(f"{name}.datetime is {current!r}, not datetime.datetime: SpiffWorkflow changed")
            _originals[name] = current
            module.datetime = ClockDatetime


def uninstall() -> None:
    """Undo install() (for tests)."""
    with _install_lock:
        for name, original in list(_originals.items()):
            setattr(importlib.import_module(name), "datetime", original)
            del _originals[name]


def installed() -> bool:
    """True when every patched SpiffWorkflow module reads this clock."""
    return all(getattr(importlib.import_module(n), "datetime", None) is ClockDatetime for n in PATCHED_MODULES)
