"""Machine opens and bot clicks: the provider's flag where there is one, documented heuristics else.

Rules, tried in order (first match wins, its code goes to ``bot_reason``):

- ``provider_flag``: the provider says so (each adapter's docstring names the field it reads).
- ``scanner_user_agent``: the user agent names a link scanner / security gateway (opens, clicks).
- ``apple_proxy``: an open fetched by Apple Mail Privacy Protection's proxy: its bare
  ``Mozilla/5.0`` user agent or an Apple address (17.0.0.0/8).
- ``open_soon_after_delivery`` / ``click_soon_after_delivery``: within N seconds of the delivery
  of the same message to the same recipient: faster than a person reads.
- ``link_burst``: at least ``burst_min_links`` distinct links of one message clicked within
  ``burst_window_s`` seconds: a scanner following every link.

Flagged events stay in the table (``is_machine_open`` / ``is_bot_click`` true); the human metrics
leave them out and the raw ones keep them. Thresholds live in :class:`IngestConfig`.
"""

from __future__ import annotations

import re

from loopexp.core.sql import sql_string
from loopexp.events.config import IngestConfig


def flag_sql(source: str, config: IngestConfig) -> str:
    """Flag the opens and clicks of ``source``: final flags, ``bot_reason`` and ``rule``.

    ``source`` holds valid, deduplicated events with a ``who`` column (the recipient, hashed or
    not yet hashed): the rules need no hashed key, so they run before the key join.
    """
    on = set(config.rules)
    # (recipient, message) as one 64-bit hash: integer aggregates and joins, not string ones
    msg = "hash(who, coalesce(message_id, campaign_id, ''))"
    e_msg = "hash(e.who, coalesce(e.message_id, e.campaign_id, ''))"
    cases = []
    if "provider_flag" in on:
        cases.append(
            "WHEN (event_type = 'open' AND is_machine_open) OR (event_type = 'click' AND "
            "is_bot_click) THEN 'provider_flag'"
        )
    scanner = "FALSE"
    if "scanner_user_agent" in on and config.scanner_user_agents:
        pattern = "|".join(re.escape(s.lower()) for s in config.scanner_user_agents)
        scanner = f"regexp_matches(lower(user_agent), {sql_string(pattern)})"
        cases.append("WHEN e.is_scanner THEN 'scanner_user_agent'")
    if "apple_proxy" in on:
        tests = [f"user_agent = {sql_string(ua)}" for ua in config.apple_proxy_user_agents]
        tests += [
            f"starts_with(coalesce(ip, ''), {sql_string(p)})"
            for p in config.apple_proxy_ip_prefixes
        ]
        if tests:
            cases.append(f"WHEN event_type = 'open' AND ({' OR '.join(tests)}) THEN 'apple_proxy'")
    since = "epoch(e.ts) - epoch(d.delivered_at)"
    if "open_soon_after_delivery" in on:
        cases.append(
            f"WHEN event_type = 'open' AND {since} BETWEEN 0 AND {config.open_after_delivery_s} "
            "THEN 'open_soon_after_delivery'"
        )
    if "click_soon_after_delivery" in on:
        cases.append(
            f"WHEN event_type = 'click' AND {since} BETWEEN 0 AND {config.click_after_delivery_s} "
            "THEN 'click_soon_after_delivery'"
        )
    if "link_burst" in on:
        cases.append("WHEN event_type = 'click' AND b.msg IS NOT NULL THEN 'link_burst'")
    rule = f"CASE {' '.join(cases)} END" if cases else "NULL::VARCHAR"
    # Only opens and clicks go through the joins; every other event passes straight through.
    # The scanner pattern is matched once per distinct user agent (far fewer than events).
    return f"""
        WITH agents AS (
            SELECT user_agent, {scanner} AS is_scanner FROM (
                SELECT DISTINCT user_agent FROM {source}
                WHERE event_type IN ('open', 'click') AND user_agent IS NOT NULL)),
        deliveries AS (
            SELECT {msg} AS msg, min(ts) AS delivered_at
            FROM {source} WHERE event_type = 'delivered' GROUP BY ALL),
        bursts AS (
            SELECT {msg} AS msg FROM {source} WHERE event_type = 'click'
            GROUP BY ALL HAVING count(DISTINCT url) >= {config.burst_min_links}
                AND epoch(max(ts)) - epoch(min(ts)) <= {config.burst_window_s}),
        engaged AS (
            SELECT e.* EXCLUDE (is_scanner), {rule} AS rule
            FROM (SELECT * FROM {source} LEFT JOIN agents USING (user_agent)) e
            LEFT JOIN deliveries d ON d.msg = {e_msg}
            LEFT JOIN bursts b ON b.msg = {e_msg}
            WHERE e.event_type IN ('open', 'click'))
        SELECT * REPLACE (
            CASE WHEN event_type = 'open'
                THEN coalesce(rule IS NOT NULL OR is_machine_open, FALSE) END AS is_machine_open,
            CASE WHEN event_type = 'click'
                THEN coalesce(rule IS NOT NULL OR is_bot_click, FALSE) END AS is_bot_click,
            rule AS bot_reason)
        FROM engaged
        UNION ALL
        SELECT * REPLACE (NULL::BOOLEAN AS is_machine_open, NULL::BOOLEAN AS is_bot_click,
                          NULL::VARCHAR AS bot_reason), NULL::VARCHAR AS rule
        FROM {source} WHERE event_type NOT IN ('open', 'click')"""
