"""Promotion between environments (``flags promote``; docs/spec.md, "Promotion"): the one
home of what a promotion copies and what it leaves.

A promotion copies flag *definitions* from one store (an environment) to another: variants,
weights, targets, rules, prerequisites, description, owner, tags, salt, and the segments the
rules use. It leaves each flag's *state* as the target has it (``enabled``, ``percentage``),
unless asked to copy it too; a flag new to the target lands disabled at 0 %. The result is a
merging import whose records carry the versions the target had when it was read, so the
target refuses it (412, naming the record) if anything promoted moved meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from flagport.engine import Flag, Segment, SnapshotDocument, segments_used

__all__ = ["PromotionError", "promoted_keys", "promotion_document"]


class PromotionError(ValueError):
    """A promotion that cannot be made as asked; the message names the flag or segment."""


def promoted_keys(
    source: SnapshotDocument, keys: Iterable[str], tag: str | None, *, source_name: str
) -> list[str]:
    """The flags to promote: ``keys`` (each must exist in ``source``) and, with ``tag``,
    every flag of ``source`` carrying it; sorted, without repeats."""
    chosen = set()
    for key in keys:
        if key not in source.flags:
            raise PromotionError(f"flag {key!r} does not exist in {source_name}")
        chosen.add(key)
    if tag is not None:
        tagged = {key for key, flag in source.flags.items() if tag in flag.tags}
        if not tagged:
            raise PromotionError(f"no flag of {source_name} has the tag {tag!r}")
        chosen |= tagged
    if not chosen:
        raise PromotionError("name the flags to promote (KEY... or --tag)")
    return sorted(chosen)


def promotion_document(
    source: SnapshotDocument,
    target: SnapshotDocument,
    keys: Iterable[str],
    *,
    with_state: bool = False,
    source_name: str = "the source",
    target_name: str = "the target",
) -> SnapshotDocument:
    """The merging import that promotes the flags ``keys`` of ``source`` onto ``target``
    (documents read with their versions). Raises :class:`PromotionError` for flags or
    segments ``source`` lacks, prerequisites the target would lack, or bucketing versions
    that differ (the same user would land in different buckets)."""
    if source.bucketing != target.bucketing:
        raise PromotionError(
            f"{source_name} buckets with version {source.bucketing} and {target_name} with "
            f"{target.bucketing}: a promoted rollout would reach other users"
        )
    keys = sorted(set(keys))
    flags: dict[str, Flag] = {}
    needed: set[str] = set()
    for key in keys:
        flag = source.flags.get(key)
        if flag is None:
            raise PromotionError(f"flag {key!r} does not exist in {source_name}")
        current = target.flags.get(key)
        if with_state:
            enabled, percentage = flag.enabled, flag.percentage
        elif current is not None:
            enabled, percentage = current.enabled, current.percentage
        else:
            enabled, percentage = False, 0.0
        flags[key] = msgspec.structs.replace(
            flag,
            enabled=enabled,
            percentage=percentage,
            version=current.version if current is not None else 0,
            created_at=None,
            updated_at=None,
        )
        needed |= segments_used(flag)
    for key, flag in flags.items():
        for prerequisite in flag.prerequisites:
            if prerequisite.key not in flags and prerequisite.key not in target.flags:
                raise PromotionError(
                    f"flag {key!r} needs flag {prerequisite.key!r}, which {target_name} does "
                    "not have: promote it too"
                )
    segments: dict[str, Segment] = {}
    for name in sorted(needed):
        segment = source.segments.get(name)
        if segment is None:
            users = ", ".join(repr(k) for k in keys if name in segments_used(flags[k]))
            raise PromotionError(
                f"flag {users} uses segment {name!r}, which {source_name} does not have"
            )
        current_segment = target.segments.get(name)
        segments[name] = msgspec.structs.replace(
            segment,
            version=current_segment.version if current_segment is not None else 0,
            updated_at=None,
        )
    return SnapshotDocument(bucketing=source.bucketing, flags=flags, segments=segments)
