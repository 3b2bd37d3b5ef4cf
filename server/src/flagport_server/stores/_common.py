"""Helpers every store backend shares, so SQLite and Redis agree on the small rules of the
contract: how guards compare, how audit timestamps and limits are read, how bodies encode.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal, TypeVar

import msgspec

from flagport import InvalidDocumentError
from flagport.engine import (
    Flag,
    Segment,
    SnapshotDocument,
    TolerantDecoder,
    check_flag_limits,
    check_segment_limits,
    validate_key,
)
from flagport.rollout import RolloutError
from flagport.rollout.outcomes import Totals
from flagport.rollout.plan import Plan, decode_plan
from flagport_server.errors import InvalidInput, StoreError, VersionConflict
from flagport_server.stores.base import (
    ApprovalPolicy,
    AuditEntry,
    AuditQuery,
    ChangeRequest,
    Mutation,
    StoreState,
    TokenRecord,
    migrated_token,
)

__all__ = [
    "MAX_AUDIT_LIMIT",
    "audit_limit",
    "check_guard",
    "check_mutation",
    "check_schema_version",
    "decode_audit",
    "decode_each",
    "decode_policy",
    "decode_request",
    "decode_token",
    "decode_totals",
    "encode",
    "mutation_version",
    "parse_timestamp",
    "read_state",
    "token_taken",
]

log = logging.getLogger("flagport.server")

#: Upper bound of one audit page, whatever the caller asks for: one query must stay cheap.
MAX_AUDIT_LIMIT: Final = 1000

_T = TypeVar("_T")
_encoder = msgspec.json.Encoder()
# A newer server sharing the store may have written fields this one does not know: they are
# ignored, never a reason to serve the flag in error (docs/adr/0011-upgrades.md).
_flag_decoder = TolerantDecoder(Flag)
_segment_decoder = TolerantDecoder(Segment)
_audit_decoder = msgspec.json.Decoder(AuditEntry)
_token_decoder = msgspec.json.Decoder(TokenRecord)
_policy_decoder = msgspec.json.Decoder(ApprovalPolicy)
_request_decoder = msgspec.json.Decoder(ChangeRequest)


def encode(value: Any) -> str:
    """JSON text of a Struct. Text, not bytes, so the stored rows stay readable with the
    ``sqlite3`` shell and ``redis-cli``; msgspec keeps floats as floats (``1.0``)."""
    return _encoder.encode(value).decode()


def decode_audit(body: str | bytes, entry_id: str) -> AuditEntry:
    """A stored audit entry. :raises StoreError: naming the entry when it cannot be read."""
    return _decode_record(_audit_decoder, body, "audit entry", entry_id)


def decode_token(body: str | bytes, token_id: str) -> TokenRecord:
    """A stored token, in today's scope model (a token stored before the four scopes is
    migrated as it is read). :raises StoreError: naming the token when it cannot be read."""
    return migrated_token(_decode_record(_token_decoder, body, "token", token_id))


def decode_policy(body: str | bytes, policy_id: str) -> ApprovalPolicy:
    """A stored approval policy. :raises StoreError: naming it when it cannot be read."""
    return _decode_record(_policy_decoder, body, "approval policy", policy_id)


def decode_request(body: str | bytes, request_id: str) -> ChangeRequest:
    """A stored change request. :raises StoreError: naming it when it cannot be read."""
    return _decode_record(_request_decoder, body, "change request", request_id)


def decode_each(
    rows: Iterable[tuple[str, str | bytes]], decode: Callable[[str | bytes, str], _T]
) -> list[_T]:
    """The records of ``(id, body)`` rows that can be read, in order: a bad one is left out
    (and logged) rather than hiding every other."""
    found: list[_T] = []
    for id_, body in rows:
        try:
            found.append(decode(body, str(id_)))
        except StoreError as error:
            log.warning("%s", error)
    return found


def _decode_record(decoder: msgspec.json.Decoder[_T], body: str | bytes, what: str, key: str) -> _T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as error:
        raise StoreError(f"stored {what} {key!r} cannot be read: {error}") from error


_totals_decoder = msgspec.json.Decoder(Totals)


def decode_totals(body: str | bytes, where: str) -> Totals:
    """Stored outcome totals. :raises StoreError: naming the row when they cannot be read."""
    return _decode_record(_totals_decoder, body, "outcome totals", where)


def mutation_version(mutation: Mutation) -> int:
    """The version a put stores (its value's; 0 for a delete)."""
    value = mutation.value
    return value.version if isinstance(value, Flag | Segment | Plan) else 0


def read_state(
    store_id: str,
    version: int,
    flags: Iterable[tuple[str, str | bytes]],
    segments: Iterable[tuple[str, str | bytes]],
    plans: Iterable[tuple[str, str | bytes]] = (),
) -> StoreState:
    """The stored configuration from ``(key, body)`` rows, read leniently: a body that
    cannot be decoded is named in the state's ``unreadable_*`` instead of failing the load
    (one bad record must not take every other flag, and the kill switch, with it). Fields
    this server does not know (a newer one wrote them) are ignored. Limits are not checked
    here: they apply when something is committed."""
    good_flags, bad_flags = _decode_each(flags, _flag_decoder)
    good_segments, bad_segments = _decode_each(segments, _segment_decoder)
    good_plans, bad_plans = _decode_plans(plans)
    document = SnapshotDocument(flags=good_flags, segments=good_segments, version=version)
    return StoreState(
        store_id=store_id,
        document=document,
        unreadable_flags=bad_flags,
        unreadable_segments=bad_segments,
        plans=good_plans,
        unreadable_plans=bad_plans,
    )


def read_plans(rows: Iterable[tuple[str, str | bytes]]) -> dict[str, Plan]:
    """The plans of ``(key, body)`` rows that can be read (see :func:`read_state`)."""
    return _decode_plans(rows)[0]


def _decode_plans(
    rows: Iterable[tuple[str, str | bytes]],
) -> tuple[dict[str, Plan], dict[str, str]]:
    """Plans by flag key; one that cannot be read (or of a newer format) is named instead:
    its flag keeps being served, the plan is not driven."""
    good: dict[str, Plan] = {}
    bad: dict[str, str] = {}
    for key, body in sorted(rows):
        try:
            good[key] = decode_plan(body if isinstance(body, bytes) else body.encode())
        except (msgspec.DecodeError, RolloutError, UnicodeError) as error:
            bad[key] = str(error)
    return good, bad


def _decode_each(
    rows: Iterable[tuple[str, str | bytes]], decoder: TolerantDecoder[_T]
) -> tuple[dict[str, _T], dict[str, str]]:
    """(decoded by key, in key order; why each undecodable one failed)."""
    good: dict[str, _T] = {}
    bad: dict[str, str] = {}
    for key, body in sorted(rows):
        # A key outside the grammar could be neither changed nor killed (every commit checks
        # it): named, as an undecodable body is.
        problem = _key_problem(key)
        if problem is not None:
            bad[key] = problem
            continue
        try:
            good[key] = decoder.decode(body)
        except (msgspec.DecodeError, UnicodeError) as error:
            # UnicodeError: a byte that is not UTF-8 in a Redis value (see the connection's
            # ``encoding_errors``).
            bad[key] = str(error)
    return good, bad


@functools.lru_cache(maxsize=1 << 16)
def _key_problem(key: str) -> str | None:
    """Why ``key`` is outside the key grammar, or None. Remembered: the keys of a store
    change rarely and every reload reads them all (the check costs ~0.6 us a key, ~9 ms a
    load of 15,000 flags; a remembered answer ~0.1 us)."""
    try:
        validate_key(key, "key")
    except InvalidDocumentError as error:
        return str(error)
    return None


def check_schema_version(store: str, stored: int, known: int) -> None:
    """Refuse a store whose layout is newer than this server knows (``stored > known``).

    A newer Flagport raises the schema version when it changes the layout in a way an older
    server would misread or overwrite. An older server must then stop using the store rather
    than guess: it keeps serving the snapshot it has and says what to do. ``store`` names
    the store (``SQLite store /path``, ``Redis store redis://host/0``).
    """
    if stored > known:
        raise StoreError(
            f"{store}: schema version {stored} was written by a newer Flagport (this one knows "
            f"{known}); upgrade this server to the release that wrote it (README: Upgrading)"
        )


def token_taken(token: TokenRecord, what: Literal["id", "name"]) -> str:
    """Why ``add_token`` refused ``token`` (both backends say it alike)."""
    if what == "name":
        return (
            f"a token named {token.name!r} already exists (names are unique, whatever their "
            "case, revoked tokens' too: an audit entry's actor names one token); choose "
            "another name"
        )
    return f"a token with id {token.id!r} or the same secret exists"


def check_mutation(mutation: Mutation) -> None:
    """Reject a malformed mutation, or a value over a limit, before anything is written."""
    expected_type = {"flag": Flag, "segment": Segment, "plan": Plan}[mutation.kind]
    if mutation.op == "put" and not isinstance(mutation.value, expected_type):
        raise InvalidInput(
            f"put of {mutation.kind} {mutation.key!r} needs a {expected_type.__name__} value",
            path="value",
        )
    try:
        validate_key(mutation.key, "$.key")
        if isinstance(mutation.value, Flag):
            if mutation.kill_switch:
                if mutation.value.enabled:
                    raise InvalidDocumentError(
                        "a kill-switch change must leave the flag disabled", "$.enabled"
                    )
            else:
                check_flag_limits(mutation.key, mutation.value)
        elif isinstance(mutation.value, Segment):
            check_segment_limits(mutation.key, mutation.value)
        elif isinstance(mutation.value, Plan) and mutation.value.spec.key != mutation.key:
            raise InvalidDocumentError(
                f"the plan of {mutation.value.spec.key!r} cannot be stored as {mutation.key!r}",
                "$.key",
            )
    except InvalidDocumentError as error:
        raise InvalidInput.from_document(error) from None
    if mutation.op == "delete" and mutation.value is not None:
        raise InvalidInput(f"delete of {mutation.kind} {mutation.key!r} takes no value")
    if mutation.expected_version is not None and mutation.expected_version < -1:
        raise InvalidInput(
            f"expected_version of {mutation.kind} {mutation.key!r} must be >= -1",
            path="expected_version",
        )


def check_guard(mutation: Mutation, actual: int | None) -> None:
    """Raise :class:`VersionConflict` unless ``actual`` (``None``: absent) satisfies the
    mutation's compare-and-set guard (``-1``: any; ``None``: must be absent; else equal)."""
    expected = mutation.expected_version
    if expected == -1:
        return
    if expected is None:
        if actual is not None:
            raise VersionConflict(mutation.kind, mutation.key, None, actual)
        return
    if actual != expected:
        raise VersionConflict(mutation.kind, mutation.key, expected, actual)


def parse_timestamp(value: str, path: str) -> float:
    """Seconds since the epoch for an ISO-8601 string. Audit filters compare instants, not
    strings: ``...T10:00:00Z`` and ``...T12:00:00+02:00`` are the same moment. A value
    without an offset is UTC, the only zone Flagport writes."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an ISO-8601 timestamp", path=path) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def audit_limit(query: AuditQuery) -> int:
    """The page size to use: at least 1, at most :data:`MAX_AUDIT_LIMIT`."""
    if query.limit < 1:
        raise InvalidInput("limit must be at least 1", path="limit")
    return min(query.limit, MAX_AUDIT_LIMIT)
