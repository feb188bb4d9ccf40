"""Events: the canonical event table, reading it, and quarantining what cannot be used."""

from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS

__all__ = ["EVENT_SCHEMA", "EVENT_TYPES", "REQUIRED_COLUMNS"]
