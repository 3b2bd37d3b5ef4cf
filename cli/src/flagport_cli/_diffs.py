"""How a configuration change is shown (``flags import``, ``diff`` and ``promote``): the keys
added (+), changed (~, with each field server value -> new value) and removed (-)."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["diff_is_empty", "field_changes", "print_diff"]


def print_diff(diff: dict[str, Any], details: dict[str, list[str]]) -> None:
    for kind in ("flags", "segments"):
        part = diff.get(kind) or {}
        singular = kind[:-1]
        for key in part.get("added", []):
            click.echo(f"+ {singular} {key}")
        for key in part.get("changed", []):
            click.echo(f"~ {singular} {key}")
            for line in details.get(f"{kind}/{key}", []):
                click.echo(f"    {line}")
        for key in part.get("removed", []):
            click.echo(f"- {singular} {key}")


def diff_is_empty(diff: dict[str, Any]) -> bool:
    return not any(diff.get(kind, {}).get(part) for kind in diff for part in diff[kind])


def field_changes(local: dict[str, Any], remote: dict[str, Any]) -> dict[str, list[str]]:
    """For each flag and segment of ``local`` (a document as JSON builtins) that differs from
    ``remote``'s, the fields that differ, ``name: remote -> local``."""
    import msgspec

    from flagport.engine import Flag, Segment

    # Exports omit fields at their defaults: compare with the defaults filled in.
    defaults = {
        kind: {
            field.encode_name: msgspec.to_builtins(
                field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
            )
            for field in msgspec.structs.fields(model)
        }
        for kind, model in (("flags", Flag), ("segments", Segment))
    }
    details: dict[str, list[str]] = {}
    for kind in ("flags", "segments"):
        for key, file_value in local.get(kind, {}).items():
            before = remote.get(kind, {}).get(key)
            if before is None or before == file_value:
                continue
            before, after = {**defaults[kind], **before}, {**defaults[kind], **file_value}
            lines = []
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    old = json.dumps(before.get(name), ensure_ascii=False)
                    new = json.dumps(after.get(name), ensure_ascii=False)
                    lines.append(f"{name}: {old} -> {new}")
            details[f"{kind}/{key}"] = lines
    return details
