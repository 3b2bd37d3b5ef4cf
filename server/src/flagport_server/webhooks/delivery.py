"""Delivery: the store's one driver (the worker holding the rollout lease) sends each
webhook the audit entries past its cursor, in id order, one task per webhook, so a slow or
silent receiver holds up only its own deliveries, never a decision, a change or an
evaluation (docs/adr/0028-webhooks-over-the-audit-log.md).

- **At least once.** The entry is committed with the change; a webhook's cursor moves past
  it only once it is delivered (a 2xx answer), dead, or not wanted (events, tag). A driver
  that dies between the answer and the cursor write sends the entry again: receivers drop
  repeats by ``X-Flagport-Delivery`` (the audit id).
- **In order, with backoff.** A failed entry is retried (exponential backoff with jitter)
  before any later one; once ``webhook_retry_for`` seconds have passed since the change, a
  failure makes it dead (a dead letter) and the next entry goes.
- **Daily notices.** The lease holder also runs the check for newly stale flags
  (``stale_check``), which writes the ``flag.stale`` notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Final

from flagport_server.errors import StoreError
from flagport_server.settings import Settings
from flagport_server.stores.base import AuditEntry, Store
from flagport_server.stores.webhook_records import WebhookDelivery, WebhookRecord
from flagport_server.webhooks.events import event_of, wanted
from flagport_server.webhooks.payloads import body_of, headers
from flagport_server.webhooks.urls import url_hint

if TYPE_CHECKING:  # httpx takes a while to import: only a worker that delivers loads it
    import httpx

__all__ = ["SendResult", "WebhookDeliverer", "backoff", "send"]

log = logging.getLogger("flagport.server.webhooks")

#: Entries read per round trip.
_BATCH: Final = 100
#: Even without a change, each webhook is looked at this often (repairs a missed wake-up).
_LOOK_EVERY: Final = 5.0
#: The webhook list is read again at least this often (and at every new snapshot version:
#: adding or removing one commits an audit entry).
_REFRESH_EVERY: Final = 10.0
_MAX_ERROR: Final = 200


class SendResult:
    """One attempt's outcome: the HTTP status (None: no answer) and, if it failed, why."""

    __slots__ = ("error", "status")

    def __init__(self, status: int | None, error: str | None) -> None:
        self.status = status
        self.error = error

    @property
    def delivered(self) -> bool:
        return self.error is None


def backoff(attempts: int, settings: Settings, jitter: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: the first delay doubled
    per failure, capped, times ``jitter`` in [0.5, 1] (retries of many webhooks spread)."""
    doubled = settings.webhook_backoff * 2.0 ** min(attempts - 1, 60)
    return float(min(doubled, settings.webhook_backoff_max) * (0.5 + jitter / 2))


async def send(
    client: httpx.AsyncClient,
    record: WebhookRecord,
    entry: AuditEntry,
    event: str,
    dashboard: str | None,
    deadline_s: float,
) -> SendResult:
    """POST ``entry`` to ``record`` once, within ``deadline_s`` in all (the client's
    timeouts bound each read: a receiver trickling its answer's head would hold the
    webhook's deliveries). The answer's body is never read (a receiver cannot make the
    server hold a large one); redirects are not followed."""
    import httpx

    body = body_of(record, entry, event, dashboard)
    sent_headers = headers(record, event, entry.id, int(time.time()), body)
    try:
        async with (
            asyncio.timeout(deadline_s),
            client.stream("POST", record.url, content=body, headers=sent_headers) as answer,
        ):
            status = answer.status_code
    except (httpx.TimeoutException, TimeoutError):
        return SendResult(None, "no answer in time")
    except (httpx.HTTPError, OSError) as error:
        return SendResult(None, _error_text(error))
    if 200 <= status < 300:
        return SendResult(status, None)
    if 300 <= status < 400:
        return SendResult(status, f"HTTP {status} (redirects are not followed)")
    return SendResult(status, f"HTTP {status}")


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    printable = "".join(c if c.isprintable() else " " for c in text)
    return printable[:_MAX_ERROR]


def new_client(timeout: float) -> httpx.AsyncClient:
    """The HTTP client deliveries share."""
    import httpx

    return httpx.AsyncClient(timeout=timeout, follow_redirects=False)


def entry_time(entry: AuditEntry) -> float:
    """When the change was made (epoch seconds)."""
    moment = dt.datetime.fromisoformat(entry.at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class WebhookDeliverer:
    """The lease holder's deliveries: :meth:`wanted` says whether there is anything to
    deliver (so the driver keeps the lease without a live plan), :meth:`dispatch` starts a
    task per webhook that is due. ``version`` is the worker's served snapshot version (each
    commit, hence each audit entry, makes a new one); ``dashboard`` the public URL Slack
    messages link to; ``clock`` the time (injected in tests)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        version: Callable[[], int],
        dashboard: str | None = None,
        stale_check: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        client: httpx.AsyncClient | None = None,
        on_attempt: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        #: Told each attempt's result (``delivered``, ``failed``, ``dead``): the metrics.
        self._on_attempt = on_attempt or (lambda _result: None)
        self.settings = settings
        self.dashboard = dashboard
        self.clock = clock
        self._version = version
        #: The check for newly stale flags (``StatsService.write_stale_notices``), run
        #: every ``stale_check_interval`` while this worker delivers.
        self.stale_check = stale_check
        self._jitter = jitter
        self._client = client
        self._hooks: list[WebhookRecord] = []
        self._hooks_version: int | None = None
        self._hooks_read_at = -math.inf
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Webhooks woken while their task ran: it goes round again.
        self._again: set[str] = set()
        self._looked: dict[str, tuple[int, float]] = {}
        #: When each webhook's head entry may be tried again.
        self._retry_at: dict[str, float] = {}
        self._stale_due: float | None = None
        self._stale_task: asyncio.Task[None] | None = None
        self._holding: Callable[[], bool] = lambda: True

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client(self.settings.webhook_timeout)
        return self._client

    @property
    def active(self) -> bool:
        """Whether webhooks were configured when the list was last read."""
        return bool(self._hooks)

    async def wanted(self, now: float) -> bool:
        """Whether any webhook is configured (the list is read again at each new snapshot
        version, and every :data:`_REFRESH_EVERY` seconds)."""
        version = self._version()
        if version != self._hooks_version or now - self._hooks_read_at >= _REFRESH_EVERY:
            self._hooks = await self.store.webhooks()
            self._hooks_version = version
            self._hooks_read_at = now
        return bool(self._hooks)

    def dispatch(self, now: float, holding: Callable[[], bool]) -> None:
        """Start a delivery task for each webhook that is due (a new snapshot version since
        it was last looked at, a retry due, or :data:`_LOOK_EVERY` passed), unless one runs
        (then it goes round again); and the stale check when it is due. ``holding``: whether
        this worker still holds the lease (a task stops once it does not)."""
        self._holding = holding
        version = self._version()
        ids = {hook.id for hook in self._hooks}
        for hook in self._hooks:
            looked = self._looked.get(hook.id)
            retry = self._retry_at.get(hook.id)
            due = (
                looked is None
                or looked[0] != version
                or now - looked[1] >= _LOOK_EVERY
                or (retry is not None and now >= retry)
            )
            if not due:
                continue
            self._looked[hook.id] = (version, now)
            if hook.id in self._tasks:
                self._again.add(hook.id)
                continue
            task = asyncio.get_running_loop().create_task(self._run(hook))
            self._tasks[hook.id] = task
            task.add_done_callback(partial(self._finished, hook.id))
        for gone in [key for key in self._looked if key not in ids]:
            self._looked.pop(gone, None)
            self._retry_at.pop(gone, None)
        if self.stale_check is not None:
            if self._stale_due is None:
                self._stale_due = now  # at once when a worker starts delivering
            if now >= self._stale_due and self._stale_task is None:
                self._stale_due = now + self.settings.stale_check_interval
                self._stale_task = asyncio.get_running_loop().create_task(self._check_stale())

    def _finished(self, webhook_id: str, _task: object) -> None:
        self._tasks.pop(webhook_id, None)

    async def _check_stale(self) -> None:
        try:
            if self.stale_check is not None:
                await self.stale_check()
        except Exception:
            log.exception("the check for stale flags failed")
        finally:
            self._stale_task = None

    async def _run(self, hook: WebhookRecord) -> None:
        while True:
            self._again.discard(hook.id)
            try:
                retry = await self.deliver(hook)
            except (StoreError, OSError) as error:
                log.warning("webhook %s: delivery round failed: %s", hook.id, error)
                return
            except Exception:
                log.exception("webhook %s: delivery round failed", hook.id)
                return
            if retry is None:
                self._retry_at.pop(hook.id, None)
            else:
                self._retry_at[hook.id] = retry
                wait = retry - self.clock()
                if wait < _LOOK_EVERY and self._holding():
                    # A retry due soon is kept to its time, not to the driver's next round.
                    await asyncio.sleep(max(0.0, wait))
                    self._again.add(hook.id)
            if hook.id not in self._again or not self._holding():
                return

    async def deliver(self, hook: WebhookRecord) -> float | None:
        """Send ``hook`` what its cursor has not passed, in order, while this worker holds
        the lease; when the head entry waits for a retry, the time it is due."""
        cursor = await self.store.webhook_cursor(hook.id)
        if cursor is None:
            return None  # removed
        head = True
        while self._holding():
            entries = await self.store.audit_after(cursor, _BATCH)
            skipped: int | None = None
            for entry in entries:
                event = event_of(entry)
                if not wanted(hook, entry, event):
                    skipped = entry.id
                    continue
                retry = await self._attempt(hook, entry, event, head, skipped)
                head, skipped = False, None
                if retry is not None:
                    return retry if retry > 0 else None
                cursor = entry.id
                if not self._holding():
                    return None
            if skipped is not None:
                if not await self.store.record_delivery(hook.id, None, skipped):
                    return None
                cursor = skipped
            if len(entries) < _BATCH:
                return None
        return None

    async def _attempt(
        self,
        hook: WebhookRecord,
        entry: AuditEntry,
        event: str,
        head: bool,
        skipped: int | None,
    ) -> float | None:
        """Try ``entry`` once (if due). None: the cursor moved past it; a time: the head
        waits for a retry then; 0: the webhook is gone."""
        now = self.clock()
        state = await self.store.delivery(hook.id, entry.id) if head else None
        if state is not None and state.status != "pending":
            # Delivered or dead already (a redelivery): only the cursor had not moved.
            moved = await self.store.record_delivery(hook.id, None, entry.id)
            return None if moved else 0.0
        if state is not None and state.next_try_at is not None and state.next_try_at > now:
            if skipped is not None:
                await self.store.record_delivery(hook.id, None, skipped)
            return state.next_try_at
        result = await send(
            self.client, hook, entry, event, self.dashboard, self.settings.webhook_timeout
        )
        now = self.clock()
        attempts = (state.attempts if state is not None else 0) + 1
        first = state.first_try_at if state is not None else now
        if result.delivered:
            self._on_attempt("delivered")
            done = WebhookDelivery(
                webhook_id=hook.id,
                audit_id=entry.id,
                event=event,
                status="delivered",
                attempts=attempts,
                first_try_at=first,
                last_try_at=now,
                last_status=result.status,
            )
            return None if await self.store.record_delivery(hook.id, done, entry.id) else 0.0
        if now - entry_time(entry) >= self.settings.webhook_retry_for:
            self._on_attempt("dead")
            log.warning(
                "webhook %s (%s): audit entry %s is a dead letter after %d attempts: %s",
                hook.id,
                url_hint(hook.url),
                entry.id,
                attempts,
                result.error,
            )
            dead = WebhookDelivery(
                webhook_id=hook.id,
                audit_id=entry.id,
                event=event,
                status="dead",
                attempts=attempts,
                first_try_at=first,
                last_try_at=now,
                last_status=result.status,
                last_error=result.error,
            )
            return None if await self.store.record_delivery(hook.id, dead, entry.id) else 0.0
        self._on_attempt("failed")
        retry_at = now + backoff(attempts, self.settings, self._jitter())
        pending = WebhookDelivery(
            webhook_id=hook.id,
            audit_id=entry.id,
            event=event,
            status="pending",
            attempts=attempts,
            first_try_at=first,
            last_try_at=now,
            next_try_at=retry_at,
            last_status=result.status,
            last_error=result.error,
        )
        if not await self.store.record_delivery(hook.id, pending, skipped):
            return 0.0
        return retry_at

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *([self._stale_task] if self._stale_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
