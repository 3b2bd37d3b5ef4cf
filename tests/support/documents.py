"""Documents for the tests of document loading: a YAML alias bomb and a realistic large
configuration."""

from __future__ import annotations

from typing import Any

__all__ = ["alias_bomb", "realistic_flags"]


def alias_bomb(depth: int = 9) -> str:
    """A "billion laughs" flags document of ~600 bytes, valid but for its aliases: the ``on``
    variant of flag ``bomb`` is an object whose last list holds, through ``depth`` levels of
    ten aliases each, 10**depth strings. PyYAML composes it cheaply (an alias shares its
    node); converting, compiling or encoding it expands it. The first anchor is on line 8,
    column 13."""
    lines = [
        "bucketing: 1",
        "flags:",
        "  bomb:",
        "    enabled: true",
        "    variants:",
        "      off: false",
        "      on:",
        "        l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for level in range(1, depth):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"        l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def realistic_flags(count: int) -> dict[str, Any]:
    """A configuration of ``count`` flags shaped like a large real one: release parents with
    a hundred children each, a description, owner and two tags on every flag, targets on a
    quarter, a two-condition rule on another quarter, string variants with weights on one in
    eight."""
    teams = ("web", "mobile", "payments", "search", "platform", "growth", "security", "data")
    flags: dict[str, Any] = {}
    for n in range(count):
        team = teams[n % len(teams)]
        release = f"{team}.release-{n // 100:03d}"
        key = release if n % 100 == 0 else f"{release}.change-{n:05d}"
        flag: dict[str, Any] = {
            "description": (
                f"Change {n} of the {team} team's release {n // 100}; "
                f"remove once rolled out (PORTAL-{10000 + n})"
            ),
            "owner": f"{team}-team",
            "tags": [team, f"release-2026-{n % 12 + 1:02d}"],
            "enabled": n % 3 != 0,
            "percentage": (n * 7) % 101,
        }
        if n % 4 == 0:
            flag["targets"] = {"on": [f"user-{n}", f"user-{n + 1}"], "off": [f"qa-{n}"]}
        elif n % 4 == 1:
            flag["rules"] = [
                {
                    "name": "enterprise beta",
                    "percentage": 50,
                    "conditions": [
                        {"attribute": "plan", "op": "in", "values": ["enterprise", "business"]},
                        {"attribute": "country", "op": "in", "values": ["FR", "DE", "NL"]},
                    ],
                }
            ]
        elif n % 8 == 2:
            flag["variants"] = {"control": "classic", "treatment": "compact", "off": "classic"}
            flag["on_variant"] = "treatment"
            flag["weights"] = {"control": 1, "treatment": 1}
        flags[key] = flag
    return {"bucketing": 1, "flags": flags}
