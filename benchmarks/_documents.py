"""Large configurations for the benchmarks: flags of the shapes a large portal grows."""

from __future__ import annotations

from typing import Any

__all__ = ["area_flags"]


def area_flags(areas: int, *, experiments: bool = True) -> dict[str, Any]:
    """A document of ``areas`` product areas, each a 50 % rollout with a child, a 10 % split
    with its own salt and a rule on the plan, and with ``experiments`` a weighted experiment
    behind the area (5 flags per area, 4 without)."""
    flags: dict[str, Any] = {}
    for i in range(areas):
        flags[f"area-{i}"] = {"enabled": True, "percentage": 50}
        flags[f"area-{i}.child"] = {"enabled": True}
        flags[f"area-{i}.split"] = {"enabled": True, "percentage": 10, "salt": f"area-{i}"}
        flags[f"rules-{i}"] = {
            "enabled": True,
            "percentage": 0,
            "rules": [
                {
                    "conditions": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                    "variant": "on",
                }
            ],
        }
        if experiments:
            flags[f"exp-{i}"] = {
                "enabled": True,
                "variants": {"a": 1, "b": 2, "off": 0},
                "on_variant": "a",
                "weights": {"a": 1, "b": 1},
                "prerequisites": [{"key": f"area-{i}"}],
            }
    return {"bucketing": 1, "flags": flags}
