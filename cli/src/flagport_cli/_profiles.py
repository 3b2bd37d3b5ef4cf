"""Profiles: named environments, each a server URL and a token (docs/spec.md, "Promotion").

One Flagport store is one environment; a profile names the server in front of it::

    # ~/.config/flagport/profiles.toml (or FLAGPORT_PROFILES), mode 0600
    [profiles.staging]
    url = "https://flagport.staging.internal"
    token = "..."

    [profiles.production]
    url = "https://flagport.internal"
    token = "..."

``flags --profile production list`` talks to that server with that token; ``flags promote
--from staging --to production`` reads both. The file holds tokens: it must be readable by
its owner only, or it is refused.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from flagport_cli._errors import UsageProblem

__all__ = ["PROFILES_ENV", "Profile", "load_profile", "profiles_path"]

PROFILES_ENV: Final = "FLAGPORT_PROFILES"
_FIELDS: Final = frozenset({"url", "token"})
#: Bytes read at most: a profiles file is a few lines.
_MAX_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str | None


def profiles_path() -> Path:
    """``FLAGPORT_PROFILES``, else ``$XDG_CONFIG_HOME/flagport/profiles.toml`` (``~/.config``)."""
    if explicit := os.environ.get(PROFILES_ENV):
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "flagport" / "profiles.toml"


def load_profile(name: str, path: Path | None = None) -> Profile:
    """The profile ``name`` of the profiles file, checked: the file is private to its owner,
    is TOML, and every profile has a ``url`` (http, https or unix) and only known fields.

    :raises UsageProblem: naming the file and the problem (exit 2)."""
    path = path or profiles_path()
    try:
        info = path.stat()
    except OSError as error:
        raise UsageProblem(
            f"profile {name!r}: cannot read the profiles file {path} "
            f"({error.strerror or error}); set {PROFILES_ENV} or create it"
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageProblem(
            f"the profiles file {path} holds tokens but others may read it "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}"
        )
    if info.st_size > _MAX_BYTES:
        raise UsageProblem(f"the profiles file {path} is larger than {_MAX_BYTES} bytes")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageProblem(f"the profiles file {path} is not valid TOML: {error}") from None
    profiles = document.get("profiles")
    if not isinstance(profiles, dict):
        raise UsageProblem(f"the profiles file {path} has no [profiles.<name>] tables")
    entry = profiles.get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(k for k, v in profiles.items() if isinstance(v, dict)))
        raise UsageProblem(f"no profile {name!r} in {path} (profiles: {known or 'none'})")
    where = f"{path}: [profiles.{name}]"
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise UsageProblem(
            f"{where} has unknown field(s) {', '.join(unknown)} (fields: url, token)"
        )
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "unix://")):
        raise UsageProblem(f"{where}: url must be an http://, https:// or unix:// URL")
    token = entry.get("token")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise UsageProblem(f"{where}: token must be a non-empty string")
    return Profile(name=name, url=url, token=token.strip() if token else None)
