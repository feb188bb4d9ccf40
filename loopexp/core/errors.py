"""The root of every error loopexp raises on purpose.

Every loopexp exception derives from :class:`LoopexpError`, so a caller (a notebook, a scheduler,
the
CLI) can tell "loopexp refused this input, with a message saying what to do" from a bug with
one ``except``. Each stage keeps its own subclasses beside the code that raises them; the concrete
classes also derive from the built-in they always were (``ValueError`` for bad input,
``RuntimeError`` for a state of the world), so existing ``except ValueError`` keeps working.

The CLI maps these classes to exit codes (see ``loopexp.cli.errors``).
"""

from __future__ import annotations


class LoopexpError(Exception):
    """Base of every exception loopexp raises deliberately."""


class InputError(LoopexpError, ValueError):
    """Input loopexp cannot use (a file, a field, a value); the message says which and why."""


class EventsError(InputError):
    """Events or assignment inputs that cannot be measured (missing file, column, type, key)."""


class ConfigError(InputError):
    """A setting (``LOOPEXP_*`` variable or spec field) that loopexp cannot use."""


class StateError(LoopexpError, RuntimeError):
    """The world is not in a state to proceed (a store unreachable, a lock held, a run missing)."""
