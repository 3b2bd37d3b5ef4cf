"""What a webhook receives: the body (JSON, or a Slack message) and the headers that carry
the audit id (the idempotency key) and the signature.

Signature: ``X-Flagport-Signature: sha256=<hex>``, the HMAC-SHA256 with the webhook's secret
of ``<X-Flagport-Timestamp> + "." + <body>`` (the README has a 5-line check)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final
from urllib.parse import quote

import msgspec

from flagport_server.audit import change_summary
from flagport_server.stores.base import AuditEntry
from flagport_server.stores.webhook_records import WebhookRecord

__all__ = [
    "SIGNATURE_HEADER",
    "SLACK_MAX_BLOCKS",
    "SLACK_MAX_SECTION",
    "TIMESTAMP_HEADER",
    "body_of",
    "headers",
    "json_payload",
    "sign",
    "slack_payload",
    "summary_of",
]

SIGNATURE_HEADER: Final = "X-Flagport-Signature"
TIMESTAMP_HEADER: Final = "X-Flagport-Timestamp"
#: Slack's limits: a section's text is at most 3,000 characters, a message 50 blocks.
SLACK_MAX_SECTION: Final = 3000
SLACK_MAX_BLOCKS: Final = 50
#: The top-level ``text`` (notifications, clients without blocks) is kept short too.
_SLACK_MAX_TEXT: Final = 3000
_TRUNCATED: Final = "… (truncated: the whole entry is in the audit log)"
#: Lines of evidence shown in a Slack message at most (each its own block).
_EVIDENCE_LINES: Final = 20


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def headers(
    record: WebhookRecord, event: str, audit_id: int, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every delivery's headers. ``X-Flagport-Delivery`` (and ``Idempotency-Key``) is the
    audit id: a retried delivery carries the same one, so a receiver can drop repeats."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "Flagport-Webhook/1",
        "X-Flagport-Event": event,
        "X-Flagport-Delivery": str(audit_id),
        "Idempotency-Key": str(audit_id),
        "X-Flagport-Webhook": record.id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(record.secret, timestamp, body),
    }


def summary_of(entry: AuditEntry) -> str:
    """One line saying what changed: the audit log's own summary of a flag's state change
    where there is one (``off -> on, 10 % -> 50 %``), else the action."""
    summary = change_summary(entry)
    return f"{entry.action}: {summary}" if summary else entry.action


def json_payload(entry: AuditEntry, event: str) -> dict[str, Any]:
    """The JSON body: the whole audit entry (fields added to entries later come along), with
    ``event``, ``actor`` as ``{name, token_id}`` and a one-line ``summary``."""
    body: dict[str, Any] = msgspec.to_builtins(entry)
    body.pop("token_id", None)
    body["actor"] = {"name": entry.actor, "token_id": entry.token_id}
    return {"event": event, "summary": summary_of(entry), **body}


def body_of(record: WebhookRecord, entry: AuditEntry, event: str, dashboard: str | None) -> bytes:
    """The bytes sent to ``record`` for ``entry``, in its format."""
    if record.format == "slack":
        return msgspec.json.encode(slack_payload(entry, event, dashboard))
    return msgspec.json.encode(json_payload(entry, event))


def slack_payload(entry: AuditEntry, event: str, dashboard: str | None) -> dict[str, Any]:
    """A Slack message (Block Kit, with a plain ``text`` fallback): the event, the key, what
    changed, who and why, the evidence of an automatic action, and a link to the flag in the
    dashboard when one is configured (``dashboard``: the server's public URL). Within Slack's
    limits: each section at most :data:`SLACK_MAX_SECTION` characters, at most
    :data:`SLACK_MAX_BLOCKS` blocks; what is cut says so."""
    headline = f"*{_escape(event)}* `{_escape(entry.key)}`: {_escape(summary_of(entry))}"
    details = [f"by *{_escape(entry.actor)}*"]
    if entry.reason:
        details.append(f"reason: {_escape(entry.reason)}")
    link = _flag_link(entry, dashboard)
    if link is not None:
        details.append(f"<{link}|open in Flagport>")
    blocks: list[dict[str, Any]] = [_section(headline), _context(" · ".join(details))]
    for line in _evidence_lines(entry.evidence):
        blocks.append(_section(_escape(line)))
    if len(blocks) > SLACK_MAX_BLOCKS:
        blocks = [*blocks[: SLACK_MAX_BLOCKS - 1], _section(_TRUNCATED)]
    text = _cut(f"{event} {entry.key}: {summary_of(entry)} (by {entry.actor})", _SLACK_MAX_TEXT)
    return {"text": text, "blocks": blocks}


def _flag_link(entry: AuditEntry, dashboard: str | None) -> str | None:
    if dashboard is None or entry.kind not in ("flag", "notice"):
        return None
    return f"{dashboard.rstrip('/')}/ui/flags?q={quote(entry.key, safe='')}"


def _evidence_lines(evidence: dict[str, Any] | None) -> list[str]:
    if not evidence:
        return []
    lines = [f"{name}: {msgspec.json.encode(value).decode()}" for name, value in evidence.items()]
    if len(lines) > _EVIDENCE_LINES:
        lines = [*lines[:_EVIDENCE_LINES], f"… {len(lines) - _EVIDENCE_LINES} more"]
    return lines


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SLACK_MAX_SECTION)}}


def _context(text: str) -> dict[str, Any]:
    # A context element's text has the same 3,000-character limit.
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _cut(text, SLACK_MAX_SECTION)}],
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


def _escape(text: str) -> str:
    """Text as Slack shows it literally: its three control characters escaped, so a key or a
    reason can never make a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
