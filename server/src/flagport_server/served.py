"""What one applied snapshot serves, built once beside it
(docs/adr/0018-served-snapshot-and-stats-pump.md).

:meth:`Runtime.apply <flagport_server.runtime.Runtime.apply>` builds one :class:`Served` per
applied snapshot and swaps it in with one reference assignment; the routes read
``runtime.served`` once per request and never write the app's state. Nothing in it changes
after it is built, except two memos that only ever hold what the snapshot determines: the
encoded OFREP answers (one per flag, variant and reason, encoded on first use) and the
encoded feed document (on the first ``GET /v1/snapshot``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import msgspec

from flagport.document import SnapshotFeed
from flagport.engine import CompiledSnapshot, ErrorCode, EvaluationResult, Reason, SnapshotDocument
from flagport.rollout.cohorts import cohort_metadata, cohort_of, plan_flag_of
from flagport.rollout.plan import Plan, PlanStatus
from flagport_server.stores.base import TokenRecord
from flagport_server.tickets import TicketOf, mint_ticket
from flagport_server.token_expiry import expiry_of
from flagport_server.wire import ofrep_v1 as wire

__all__ = ["CohortAnswers", "EncodedAnswers", "Served"]

_ERROR = Reason.ERROR
_NOT_FOUND = ErrorCode.FLAG_NOT_FOUND


#: Ticketed tails kept per snapshot at most (one per token and day: tokens are few).
_MAX_TICKETED_TAILS = 10_000


def _bulk_tail(event_stream: wire.EventStream | None, version: int) -> bytes:
    """What closes a bulk answer's ``flags`` and continues the object: the stream to follow
    (``None``: none, the client polls) and the snapshot version."""
    metadata = {"snapshotVersion": version}
    tail = wire.encode(
        {"eventStreams": [event_stream], "metadata": metadata}
        if event_stream is not None
        else {"metadata": metadata}
    )
    return b"]," + tail[1:]


class EncodedAnswers:
    """Encoded OFREP items for one snapshot, keyed by what determines them, and the tails
    that close a bulk answer (a ticketed one per token and day, made on first use)."""

    __slots__ = ("_ticketed", "_ticketed_stream", "bulk_tail", "items", "polling_tail", "version")

    def __init__(
        self,
        version: int,
        event_stream: wire.EventStream,
        ticketed_stream: Callable[[str], wire.EventStream] | None = None,
    ) -> None:
        self.version = version
        #: ``id(result)`` -> the result and its encoded item (:meth:`item`).
        self.items: dict[int, tuple[EvaluationResult, bytes]] = {}
        self.bulk_tail = _bulk_tail(event_stream, version)
        #: The tail while this worker takes no more streams: no ``eventStreams``, so the
        #: client polls.
        self.polling_tail = _bulk_tail(None, version)
        self._ticketed_stream = ticketed_stream
        self._ticketed: dict[TicketOf, bytes] = {}

    def ticketed_tail(self, ticket: TicketOf) -> bytes:
        """The tail advertising the stream with the ticket ``ticket`` describes
        (:mod:`flagport_server.tickets`)."""
        tail = self._ticketed.get(ticket)
        if tail is None:
            if self._ticketed_stream is None:
                return self.bulk_tail
            minted = mint_ticket(ticket.key, ticket.token_id, ticket.day, ticket.credential)
            stream = self._ticketed_stream(minted)
            tail = _bulk_tail(stream, self.version)
            if len(self._ticketed) >= _MAX_TICKETED_TAILS:
                self._ticketed.clear()
            self._ticketed[ticket] = tail
        return tail

    def item(self, result: EvaluationResult) -> bytes:
        """``result``'s encoded OFREP item. The memo is keyed by the result object: the
        engine shares one result per flag, variant, reason and error for as long as the
        snapshot lives (an int key is ~10x cheaper than a tuple of five fields with two
        enums, ten times per bulk of the portal's flags). The memo holds the result, so its
        id stays its own; a fresh result (an unknown key: unbounded) is encoded each time."""
        found = self.items.get(id(result))
        if found is not None and found[0] is result:
            return found[1]
        if result.reason is _ERROR:
            encoded = wire.encode(wire.failure_from_result(result))
        else:
            encoded = wire.encode(wire.success_from_result(result))
        if result.error_code is not _NOT_FOUND:
            self.items[id(result)] = (result, encoded)
        return encoded


class CohortAnswers:
    """The encoded answers of the flags that report for a running plan (docs/spec.md
    section 13, "Cohort metadata"): each carries the unit's cohort of its plan flag, so it
    depends on two results, the flag's and the plan flag's. Results are shared per snapshot
    (one object per flag, variant and reason), so the pair of their ids is a stable key, and
    the memo holds a handful of entries per flag."""

    __slots__ = ("_answers", "_cohorts", "_document", "_items", "plan_of")

    def __init__(self, answers: EncodedAnswers, document: SnapshotDocument, plans: frozenset[str]):
        self._answers = answers
        self._document = document
        #: Flag key -> the plan flag it reports for.
        self.plan_of: Mapping[str, str] = MappingProxyType(plan_flag_of(document.flags, plans))
        self._cohorts: dict[int, dict[str, str] | None] = {}
        self._items: dict[tuple[int, int], bytes] = {}

    def _metadata(self, plan_result: EvaluationResult) -> dict[str, str] | None:
        found = self._cohorts.get(id(plan_result), False)
        if found is not False:
            return found  # type: ignore[return-value]
        plan_key = plan_result.key
        cohort = cohort_of(plan_result, self._document.flags[plan_key])
        metadata = (
            None
            if cohort is None or plan_result.variant is None
            else cohort_metadata(plan_key, cohort, plan_result.variant)
        )
        self._cohorts[id(plan_result)] = metadata
        return metadata

    def item(self, result: EvaluationResult, plan_result: EvaluationResult) -> bytes:
        """``result``'s encoded answer, with the cohort ``plan_result`` puts the unit in."""
        memo_key = (id(result), id(plan_result))
        encoded = self._items.get(memo_key)
        if encoded is None:
            metadata = self._metadata(plan_result)
            if metadata is None or result.reason is _ERROR:
                encoded = self._answers.item(result)
            else:
                merged = {**(result.metadata or {}), **metadata}
                encoded = wire.encode(
                    wire.success_from_result(msgspec.structs.replace(result, metadata=merged))
                )
            self._items[memo_key] = encoded
        return encoded


class Served:
    """One applied snapshot and everything derived from it."""

    __slots__ = (
        "_feed_body",
        "answers",
        "applied_at",
        "cohorts",
        "feed",
        "plans",
        "retired_tokens",
        "running_plans",
        "snapshot",
        "snapshot_header",
        "store_id",
        "ticket_key",
        "token_expiry",
        "tokens",
        "unreadable_flags",
        "unreadable_segments",
        "version",
        "warnings",
    )

    def __init__(
        self,
        snapshot: CompiledSnapshot,
        *,
        feed: SnapshotDocument,
        store_id: str,
        applied_at: float,
        tokens: Mapping[str, TokenRecord],
        unreadable_flags: Mapping[str, str],
        unreadable_segments: Mapping[str, str],
        warnings: tuple[str, ...],
        event_stream: wire.EventStream,
        ticket_key: bytes | None = None,
        ticketed_stream: Callable[[str], wire.EventStream] | None = None,
        plans: Mapping[str, Plan] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        #: The ``X-Flagport-Snapshot`` header of every evaluation answer (docs/spec.md).
        self.snapshot_header = (b"x-flagport-snapshot", str(snapshot.version).encode())
        self.answers = EncodedAnswers(snapshot.version, event_stream, ticketed_stream)
        #: The server secret stream tickets are made and checked with (``None``: the store
        #: could make none; streams then need a token header).
        self.ticket_key = ticket_key
        #: What the SDK feed and exports carry (:func:`flagport_server.runtime.feed_document`).
        self.feed = feed
        self.store_id = store_id
        #: ``time.time()`` when the snapshot was applied.
        self.applied_at = applied_at
        #: Secret hash -> token record, as of this snapshot.
        self.tokens: Mapping[str, TokenRecord] = MappingProxyType(dict(tokens))
        #: Secret hash -> when the token stops working, for the tokens that expire: made
        #: once per snapshot, so checking an expiring token costs a lookup and a comparison.
        self.token_expiry: Mapping[str, float] = MappingProxyType(
            {h: e for h, t in tokens.items() if (e := expiry_of(t)) is not None}
        )
        #: Hash of a secret that a rotation replaced -> its token: refused with a 401 that
        #: says so (the refusal path only reads it).
        self.retired_tokens: Mapping[str, TokenRecord] = MappingProxyType(
            {h: t for t in tokens.values() for h in t.retired_hashes}
        )
        #: Stored flags and segments that cannot be read (key -> why).
        self.unreadable_flags: Mapping[str, str] = MappingProxyType(dict(unreadable_flags))
        self.unreadable_segments: Mapping[str, str] = MappingProxyType(dict(unreadable_segments))
        #: Rollout plans by flag key, as of this snapshot (every plan transition commits a
        #: new snapshot version): what ``/readyz``, ``/metrics`` and cohorts read.
        self.plans: Mapping[str, Plan] = MappingProxyType(dict(plans or {}))
        running = frozenset(k for k, p in self.plans.items() if p.status is PlanStatus.RUNNING)
        #: The plan flags of the running plans that this snapshot serves.
        self.running_plans = running & feed.flags.keys()
        #: The answers that report for a running plan (``None``: no plan runs).
        self.cohorts = CohortAnswers(self.answers, feed, running) if running else None
        #: What ``/readyz`` warns about this snapshot (broken flags, limits exceeded).
        self.warnings = warnings
        self._feed_body: bytes | None = None

    @property
    def feed_body(self) -> bytes:
        """The feed document as JSON, encoded on first use (``GET /v1/snapshot``): with the
        running plans' flags while a plan runs (in-process clients report for its cohorts)."""
        body = self._feed_body
        if body is None:
            feed = self.feed
            if self.running_plans:
                feed = SnapshotFeed(
                    bucketing=feed.bucketing,
                    flags=feed.flags,
                    segments=feed.segments,
                    version=feed.version,
                    rollouts=sorted(self.running_plans),
                )
            body = self._feed_body = msgspec.json.encode(feed)
        return body
