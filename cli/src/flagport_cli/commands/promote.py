"""``promote``: copy flag definitions from one environment to another (docs/spec.md,
"Promotion"; what is copied: :mod:`flagport.promotion`)."""

from __future__ import annotations

import json
from typing import Any

import click

from flagport_cli._app import (
    App,
    confirm_applied,
    json_option,
    pass_app,
    reason_option,
    wait_options,
)
from flagport_cli._diffs import diff_is_empty, field_changes, print_diff
from flagport_cli._errors import Refused, UsageProblem
from flagport_cli._output import echo_json
from flagport_cli._profiles import Profile, load_profile

__all__ = ["promote"]

_JSON = {"Content-Type": "application/json"}


def _api(profile: Profile) -> Any:
    from flagport_cli._http import Api, find_token

    return Api(profile.url, find_token(profile.token))


def _document(api: Any, name: str) -> Any:
    """``name``'s whole configuration, with versions (what the promotion is guarded by)."""
    from flagport import InvalidDocumentError
    from flagport.document import load_document

    response = api.send("GET", "/admin/v1/snapshot", params={"format": "json", "volatile": "true"})
    try:
        return load_document(response.content, "json", strict=False)
    except InvalidDocumentError as error:
        raise Refused(f"{name} sent a configuration this flags cannot read: {error}") from None


def _import(api: Any, body: bytes, *, dry_run: bool, reason: str | None) -> Any:
    params = {
        "dry_run": "true" if dry_run else "false",
        "prune": "false",
        "expect_versions": "true",
        "reason": reason,
    }
    return api.call("POST", "/admin/v1/snapshot", params=params, content=body, headers=_JSON)


@click.command()
@click.argument("keys", nargs=-1)
@click.option("--tag", help="Promote every flag of the source with this tag.")
@click.option("--from", "source", required=True, metavar="PROFILE", help="Copy from here.")
@click.option("--to", "target", required=True, metavar="PROFILE", help="Copy to here.")
@click.option("--dry-run", is_flag=True, help="Show the changes; apply nothing.")
@click.option(
    "--with-state",
    is_flag=True,
    help="Copy enabled and percentage too (otherwise the target's are kept; new flags land "
    "disabled at 0 %).",
)
@reason_option
@wait_options
@json_option
@pass_app
def promote(
    app: App,
    keys: tuple[str, ...],
    tag: str | None,
    source: str,
    target: str,
    dry_run: bool,
    with_state: bool,
    reason: str | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Copy flag definitions (variants, targets, rules, the segments they use) from one
    environment to another, as one merging import that fails if anything promoted changed
    on the target meanwhile."""
    from flagport.document import dump_document
    from flagport.promotion import PromotionError, promoted_keys, promotion_document

    if source == target:
        raise UsageProblem("--from and --to name the same profile")
    source_api, target_api = _api(load_profile(source)), _api(load_profile(target))
    try:
        source_document = _document(source_api, source)
        target_document = _document(target_api, target)
        try:
            chosen = promoted_keys(source_document, keys, tag, source_name=source)
            promoted = promotion_document(
                source_document,
                target_document,
                chosen,
                with_state=with_state,
                source_name=source,
                target_name=target,
            )
        except PromotionError as error:
            raise Refused(str(error)) from None
        body = dump_document(promoted, "json", volatile=True)
        planned = _import(target_api, body, dry_run=True, reason=reason)
        changes = planned["diff"]
        applied = None
        if not dry_run and not diff_is_empty(changes):
            # The same body: the versions it carries are the ones the diff was made against.
            applied = _import(target_api, body, dry_run=False, reason=reason)
        if app.json:
            echo_json({"flags": chosen, "dry_run": dry_run, "diff": changes, "applied": applied})
        else:
            what = (
                "definitions and state"
                if with_state
                else "definitions (the target keeps its state)"
            )
            click.echo(f"promote {len(chosen)} flag(s) from {source} to {target}: {what}")
            if diff_is_empty(changes):
                click.echo(f"no changes: {target} already has them")
            else:
                local = json.loads(dump_document(promoted, "json"))
                remote = json.loads(dump_document(target_document, "json"))
                print_diff(changes, field_changes(local, remote))
                if applied is None:
                    click.echo("dry run: nothing applied")
                else:
                    version = applied.get("snapshot_version")
                    click.echo(f"applied to {target} (snapshot version {version})")
        if applied is not None:
            version = applied.get("snapshot_version")
            confirm_applied(app, version, no_wait=no_wait, timeout=timeout, api=target_api)
    finally:
        source_api.close()
        target_api.close()
