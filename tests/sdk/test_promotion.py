"""What a promotion copies and what it leaves (flagport.promotion): definitions and the segments
they use, never the target's state unless asked; versions from the target; the refusals."""

from __future__ import annotations

import pytest

from flagport.engine import Condition, Flag, Operator, Prerequisite, Rule, Segment, SnapshotDocument
from flagport.promotion import PromotionError, promoted_keys, promotion_document

BETA = Rule(
    conditions=[Condition(attribute="", op=Operator.IN_SEGMENT, values=["beta"])], variant="on"
)


def _source() -> SnapshotDocument:
    return SnapshotDocument(
        flags={
            "checkout": Flag(
                enabled=True,
                percentage=100.0,
                description="new checkout",
                tags=["release"],
                targets={"on": ["qa-1"]},
                rules=[BETA],
                salt="checkout-v2",
                version=7,
            ),
            "search": Flag(enabled=True, percentage=50.0, tags=["release"], version=3),
            "addon": Flag(prerequisites=[Prerequisite(key="checkout")], version=1),
            "orphan": Flag(prerequisites=[Prerequisite(key="nowhere")], version=1),
        },
        segments={"beta": Segment(included=["c-1", "c-2"], version=4)},
    )


def _target() -> SnapshotDocument:
    return SnapshotDocument(
        flags={"checkout": Flag(enabled=True, percentage=10.0, description="old", version=12)},
        segments={"beta": Segment(included=["c-9"], version=2)},
    )


def test_definitions_are_copied_and_the_targets_state_is_kept() -> None:
    promoted = promotion_document(_source(), _target(), ["checkout"])
    flag = promoted.flags["checkout"]
    assert (flag.enabled, flag.percentage) == (True, 10.0)  # the target's state
    assert flag.description == "new checkout"
    assert flag.rules == [BETA]
    assert flag.targets == {"on": ["qa-1"]}
    assert flag.salt == "checkout-v2"
    assert flag.version == 12  # the target's version: the import is guarded by it
    assert promoted.segments["beta"].included == ["c-1", "c-2"]
    assert promoted.segments["beta"].version == 2


def test_a_new_flag_lands_disabled_unless_state_is_copied() -> None:
    new = promotion_document(_source(), _target(), ["search"]).flags["search"]
    assert (new.enabled, new.percentage, new.version) == (False, 0.0, 0)
    copied = promotion_document(_source(), _target(), ["search", "checkout"], with_state=True)
    assert (copied.flags["search"].enabled, copied.flags["search"].percentage) == (True, 50.0)
    assert copied.flags["checkout"].percentage == 100.0


def test_the_flags_to_promote_by_key_and_tag() -> None:
    source = _source()
    assert promoted_keys(source, ["addon"], "release", source_name="staging") == [
        "addon",
        "checkout",
        "search",
    ]
    with pytest.raises(PromotionError, match="flag 'nope' does not exist in staging"):
        promoted_keys(source, ["nope"], None, source_name="staging")
    with pytest.raises(PromotionError, match="no flag of staging has the tag 'x'"):
        promoted_keys(source, [], "x", source_name="staging")
    with pytest.raises(PromotionError, match="name the flags"):
        promoted_keys(source, [], None, source_name="staging")


def test_what_the_target_would_lack_is_refused() -> None:
    source, target = _source(), _target()
    # A prerequisite promoted with it or present on the target is fine.
    promotion_document(source, target, ["addon"])
    with pytest.raises(PromotionError, match=r"'orphan' needs flag 'nowhere'.*promote it too"):
        promotion_document(source, target, ["orphan"], target_name="production")
    no_segment = SnapshotDocument(flags=source.flags, segments={})
    with pytest.raises(PromotionError, match="uses segment 'beta', which staging does not"):
        promotion_document(no_segment, target, ["checkout"], source_name="staging")
    other_bucketing = SnapshotDocument(bucketing=2, flags=target.flags)
    with pytest.raises(PromotionError, match="buckets with version"):
        promotion_document(source, other_bucketing, ["search"])
