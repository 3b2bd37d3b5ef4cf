"""Exposure reports (``POST /v1/exposures``), the one home of their shape and bounds: the
server refuses a batch or an item beyond them (:func:`exposure_batch_problem`,
:func:`exposure_item_problem`), and an in-process client splits what it counted within them
(:func:`exposure_items`, :func:`exposure_batches`), by items, units, evaluations *and* encoded
bytes, so that no batch it sends can be refused for its size (413) and then again at every
later report. ``flagport_server.wire.stats_v1`` imports it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

from flagport.engine.models import KEY_PATTERN, MAX_KEY_LENGTH

__all__ = [
    "MAX_EXPOSURE_BATCH_EVALUATIONS",
    "MAX_EXPOSURE_BODY",
    "MAX_EXPOSURE_COUNT",
    "MAX_EXPOSURE_ITEMS",
    "MAX_EXPOSURE_UNITS",
    "ExposureBatch",
    "ExposureItem",
    "ExposureRejection",
    "ExposureResponse",
    "encode_batch",
    "exposure_batch_problem",
    "exposure_batches",
    "exposure_item_problem",
    "exposure_items",
]

#: Bounds of one exposure batch: items, units per item, body bytes.
MAX_EXPOSURE_ITEMS: Final = 1000
MAX_EXPOSURE_UNITS: Final = 1000
MAX_EXPOSURE_BODY: Final = 1024 * 1024
#: Evaluations one item may report, and one batch: a client sends a few seconds' worth, and
#: splits more (``LocalClient`` does). Anyone holding an evaluation token can report
#: exposures, so these bound what one request can add to the stats (``flags stats`` shows the
#: reported part apart from what the server counted itself).
MAX_EXPOSURE_COUNT: Final = 1_000_000
MAX_EXPOSURE_BATCH_EVALUATIONS: Final = 10_000_000


class ExposureItem(msgspec.Struct, forbid_unknown_fields=True):
    """Evaluations an in-process client made of one flag and variant since its last report."""

    #: A flag key (a key that can name no flag is a broken client: the batch is refused).
    key: Annotated[str, msgspec.Meta(pattern=KEY_PATTERN, max_length=MAX_KEY_LENGTH)]
    variant: str
    count: Annotated[int, msgspec.Meta(description=f"0 to {MAX_EXPOSURE_COUNT:,}")]
    #: The units (``context[bucket_by]``) served that variant; at most 1000 per item.
    units: list[str | int] = []


class ExposureBatch(msgspec.Struct, forbid_unknown_fields=True):
    exposures: Annotated[
        list[ExposureItem],
        msgspec.Meta(
            description=f"At most {MAX_EXPOSURE_ITEMS:,} items and "
            f"{MAX_EXPOSURE_BATCH_EVALUATIONS:,} evaluations in all; the body at most 1 MiB."
        ),
    ]


def exposure_batch_problem(batch: ExposureBatch) -> str | None:
    """Why the whole batch is refused (400), if it is: too many items or evaluations."""
    items = batch.exposures
    if len(items) > MAX_EXPOSURE_ITEMS:
        return f"{len(items)} exposure items: at most {MAX_EXPOSURE_ITEMS} per batch (split it)"
    total = sum(item.count for item in items if exposure_item_problem(item) is None)
    if total > MAX_EXPOSURE_BATCH_EVALUATIONS:
        return (
            f"{total:,} evaluations in one batch: at most {MAX_EXPOSURE_BATCH_EVALUATIONS:,} "
            "(split it)"
        )
    return None


def exposure_item_problem(item: ExposureItem) -> str | None:
    """Why one item is rejected whatever the flags are (it is listed in ``rejected``)."""
    if item.count < 0:
        return f"count must be at least 0, got {item.count}"
    if item.count > MAX_EXPOSURE_COUNT:
        return f"count must be at most {MAX_EXPOSURE_COUNT:,}, got {item.count:,} (split it)"
    if len(item.units) > MAX_EXPOSURE_UNITS:
        return f"{len(item.units)} units: at most {MAX_EXPOSURE_UNITS} per item (split it)"
    return None


class ExposureRejection(msgspec.Struct):
    index: int
    key: str | None
    error: str


class ExposureResponse(msgspec.Struct):
    """``counted``: items added to the stats; ``rejected``: the others, each with why.
    The status is 200 whenever the batch itself is acceptable: check ``rejected``."""

    counted: int
    evaluations: int
    rejected: list[ExposureRejection]


_encode = msgspec.json.Encoder().encode
#: ``{"exposures":[`` and ``]}`` around the items, which are separated by commas.
_ENVELOPE_BYTES: Final = len(_encode(ExposureBatch(exposures=[])))


def encode_batch(items: Sequence[ExposureItem]) -> bytes:
    """The body of one ``POST /v1/exposures``."""
    return _encode(ExposureBatch(exposures=list(items)))


def exposure_items(
    key: str, variant: str, count: int, units: Sequence[str | int]
) -> list[ExposureItem]:
    """One flag and variant's report as items within the bounds: at most
    :data:`MAX_EXPOSURE_COUNT` evaluations and :data:`MAX_EXPOSURE_UNITS` units each, and each
    small enough to travel alone in a batch of at most :data:`MAX_EXPOSURE_BODY` bytes.
    Units are counted units (``flagport.tally.counted_unit``: at most 256 characters), so
    any one fits many times over."""
    budget = MAX_EXPOSURE_BODY - _ENVELOPE_BYTES
    # The item without units, with the widest count it can carry.
    bare = len(_encode(ExposureItem(key=key, variant=variant, count=MAX_EXPOSURE_COUNT)))
    groups: list[list[str | int]] = []
    group: list[str | int] = []
    size = bare
    for unit in units:
        cost = len(_encode(unit)) + (1 if group else 0)  # the comma before all but the first
        if group and (len(group) == MAX_EXPOSURE_UNITS or size + cost > budget):
            groups.append(group)
            group, size = [], bare
            cost -= 1
        group.append(unit)
        size += cost
    if group:
        groups.append(group)
    parts = max(len(groups), -(-count // MAX_EXPOSURE_COUNT), 1)
    return [
        ExposureItem(
            key=key,
            variant=variant,
            count=min(MAX_EXPOSURE_COUNT, max(0, count - part * MAX_EXPOSURE_COUNT)),
            units=groups[part] if part < len(groups) else [],
        )
        for part in range(parts)
    ]


def exposure_batches(items: Sequence[ExposureItem]) -> list[list[ExposureItem]]:
    """``items``, in order, grouped into batches within the bounds: at most
    :data:`MAX_EXPOSURE_ITEMS` items, :data:`MAX_EXPOSURE_BATCH_EVALUATIONS` evaluations and
    :data:`MAX_EXPOSURE_BODY` encoded bytes each (items from :func:`exposure_items` each fit
    alone)."""
    batches: list[list[ExposureItem]] = []
    batch: list[ExposureItem] = []
    evaluations = size = 0
    for item in items:
        cost = len(_encode(item)) + (1 if batch else 0)
        if batch and (
            len(batch) == MAX_EXPOSURE_ITEMS
            or evaluations + item.count > MAX_EXPOSURE_BATCH_EVALUATIONS
            or _ENVELOPE_BYTES + size + cost > MAX_EXPOSURE_BODY
        ):
            batches.append(batch)
            batch, evaluations, size = [], 0, 0
            cost -= 1
        batch.append(item)
        evaluations += item.count
        size += cost
    if batch:
        batches.append(batch)
    return batches
