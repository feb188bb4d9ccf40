"""Events: the canonical event table, ingesting ESP exports into it, and machine/bot flags."""

from loopexp.events.config import BOT_RULES, IngestConfig
from loopexp.events.schema import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_COLUMNS

__all__ = ["BOT_RULES", "EVENT_SCHEMA", "EVENT_TYPES", "REQUIRED_COLUMNS", "IngestConfig"]
