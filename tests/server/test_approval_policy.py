"""The one rule of what reduces a flag's exposure (``approval_policy.reduces_exposure``) and
what a policy blocks: fixed cases, and properties checked against the engine itself: a
change the rule calls reducing never serves an on variant to a unit the flag did not serve
one before."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from flagport.engine import Flag, Rule, SnapshotDocument, compile_snapshot
from flagport.engine.models import Condition, Segment
from flagport.rollout.plan import Plan
from flagport_server.approval_policy import (
    blocked_changes,
    guarding_policy,
    mark_break_glass,
    reduces_exposure,
)
from flagport_server.stores.base import ApprovalPolicy, AuditEntry, Mutation, StoreState

UNITS = [f"user-{i}" for i in range(300)]
BASE = Flag(enabled=True, percentage=50.0, tags=["payments"], version=3)


def _policy(kind: str, target: str) -> ApprovalPolicy:
    return ApprovalPolicy(
        id=f"{kind}:{target}", kind=kind, target=target, created_at="t", created_by="alice"
    )  # type: ignore[arg-type]


def test_fixed_cases() -> None:
    off = msgspec.structs.replace(BASE, enabled=False)
    assert reduces_exposure(BASE, off)  # disable, kill
    assert reduces_exposure(BASE, msgspec.structs.replace(BASE, percentage=10.0))
    assert reduces_exposure(BASE, msgspec.structs.replace(BASE, version=4, updated_at="x"))
    assert reduces_exposure(None, Flag())  # a new flag is disabled
    assert not reduces_exposure(off, BASE)  # enable
    assert not reduces_exposure(BASE, msgspec.structs.replace(BASE, percentage=60.0))
    assert not reduces_exposure(off, msgspec.structs.replace(off, percentage=0.0, enabled=True))
    assert not reduces_exposure(BASE, None)  # a deletion hands the flag to code defaults
    assert not reduces_exposure(None, BASE)
    assert not reduces_exposure(BASE, msgspec.structs.replace(BASE, targets={"on": ["u1"]}))
    assert not reduces_exposure(BASE, msgspec.structs.replace(BASE, tags=[]))  # leaves policy
    assert not reduces_exposure(
        BASE, msgspec.structs.replace(BASE, percentage=10.0, variants={"on": 1, "off": 0})
    )


def _served_on(flag: Flag) -> set[str]:
    snapshot = compile_snapshot(SnapshotDocument(flags={"f": flag}, segments={}, version=1))
    on = set()
    for unit in UNITS:
        result = snapshot.evaluate("f", {"targetingKey": unit}, 0.0)
        if result.variant is not None and result.variant != flag.off_variant:
            on.add(unit)
    return on


_percentages = st.integers(min_value=0, max_value=100_000).map(lambda p: p / 1000)
_flags = st.builds(
    Flag,
    enabled=st.booleans(),
    percentage=_percentages,
    targets=st.sampled_from([{}, {"on": ["user-1", "user-2"]}, {"off": ["user-3"]}]),
    rules=st.sampled_from(
        [
            [],
            [
                Rule(
                    conditions=[Condition(attribute="targetingKey", op="eq", values=["user-9"])],
                    variant="on",
                )
            ],
        ]
    ),
)


@settings(max_examples=60, deadline=None)
@given(before=_flags, after=_flags, lower=_percentages, disable=st.booleans())
def test_a_reducing_change_never_serves_more(
    before: Flag, after: Flag, lower: float, disable: bool
) -> None:
    # Random pairs are rarely reducing: also try the reducing edits of ``before``.
    edited = msgspec.structs.replace(
        before,
        enabled=before.enabled and not disable,
        percentage=min(before.percentage, lower),
    )
    for candidate in (after, edited):
        if reduces_exposure(before, candidate):
            assert _served_on(candidate) <= _served_on(before)
    assert reduces_exposure(before, edited)


@settings(max_examples=60, deadline=None)
@given(a=_flags, b=_flags, c=_flags)
def test_reducing_is_transitive_and_raising_back_is_not(a: Flag, b: Flag, c: Flag) -> None:
    if reduces_exposure(a, b) and reduces_exposure(b, c):
        assert reduces_exposure(a, c)
    if reduces_exposure(a, b) and not reduces_exposure(b, a):
        assert _served_on(b) <= _served_on(a)


def _state(flags: dict[str, Flag], plans: dict[str, Plan] | None = None) -> StoreState:
    return StoreState(
        store_id="s",
        document=SnapshotDocument(flags=flags, segments={}, version=1),
        plans=plans or {},
    )


def test_what_a_policy_blocks() -> None:
    uses = Rule(
        conditions=[Condition(attribute="x", op="in_segment", values=["staff"])], variant="on"
    )
    guarded = msgspec.structs.replace(BASE, rules=[uses])
    free = Flag(enabled=False, version=1)
    state = _state({"checkout": guarded, "banner": free})
    by_tag, by_key = [_policy("tag", "payments")], [_policy("flag", "banner")]

    def put(key: str, flag: Flag | None) -> Mutation:
        return Mutation("flag", key, "put" if flag else "delete", flag, 3)

    raise_it = msgspec.structs.replace(guarded, percentage=80.0)
    assert blocked_changes(state, [put("checkout", raise_it)], by_tag) == [
        "flag 'checkout' (policy tag:payments)"
    ]
    assert blocked_changes(state, [put("checkout", raise_it)], []) == []
    assert blocked_changes(state, [put("checkout", raise_it)], by_key) == []
    lower = msgspec.structs.replace(guarded, percentage=5.0)
    assert blocked_changes(state, [put("checkout", lower)], by_tag) == []
    assert blocked_changes(state, [put("checkout", None)], by_tag)  # delete
    enable_banner = msgspec.structs.replace(free, enabled=True)
    assert blocked_changes(state, [put("banner", enable_banner)], by_key)
    # Tagging a flag into a policy is itself guarded only if it widens; untagging is guarded.
    untag = msgspec.structs.replace(guarded, tags=[])
    assert blocked_changes(state, [put("checkout", untag)], by_tag)
    segment = Mutation("segment", "staff", "put", Segment(included=["u"]), None)
    assert blocked_changes(state, [segment], by_tag) == [
        "segment 'staff', used by flag 'checkout' (policy tag:payments)"
    ]
    assert guarding_policy(by_tag, "other", free) is None


def test_break_glass_marks_changes_of_guarded_flags_only() -> None:
    state = _state({"checkout": BASE, "banner": Flag(version=1)})
    entries = [
        AuditEntry(actor="bob", action="disable", key="checkout", at="t", before={}, after={}),
        AuditEntry(actor="bob", action="disable", key="banner", at="t", before={}, after={}),
        AuditEntry(actor="bob", action="create", key="checkout", at="t", after={}),
    ]
    marked = mark_break_glass(state, entries, [_policy("tag", "payments")])
    assert [e.break_glass for e in marked] == [True, False, False]
    # Older servers read the entry: the field is only written when set.
    assert b"break_glass" not in msgspec.json.encode(marked[1])
