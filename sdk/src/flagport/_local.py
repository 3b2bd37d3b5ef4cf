"""``flagport.LocalClient``: evaluate in process from the server's snapshot, kept current by
the change stream.

A background thread fetches ``GET /v1/snapshot`` (revalidated by ETag), compiles it with the
engine and swaps the compiled snapshot in as one immutable object: evaluations read one
attribute and never lock. The thread then listens on ``GET /v1/stream`` (SSE) and re-fetches
on every ``refetchEvaluation`` event. When the stream drops it reconnects with exponential
backoff and ``Last-Event-ID``, and re-fetches the snapshot after every reconnect (an event
may have been missed). A server without the stream is polled instead.

Evaluations are counted in process by the SDK's evaluation tally (:mod:`flagport.tally`,
the server counts with it too) and a second background thread reports them to
``POST /v1/exposures`` every ``report_interval`` seconds and at :meth:`close`, so the
server's adoption stats include in-process evaluations. An evaluation never waits for it.

Without a server (:meth:`LocalClient.from_flags`, :meth:`LocalClient.from_file`: tests,
scripts) there are no threads and no I/O: the client serves its document, which
:meth:`LocalClient.set` changes. Local overrides (``FLAGPORT_OVERRIDES``,
:mod:`flagport.overrides`) answer the keys they name, ahead of the snapshot.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ClassVar, NamedTuple

import httpx
import msgspec

from flagport._connection import KEEPALIVE_EXPIRY, auth_headers, split_url
from flagport._exceptions import ClientError, FlagportError
from flagport._types import ClientStatus, FlagDetails, details_from_result, served_on
from flagport.engine import (
    CompiledFlag,
    CompiledSnapshot,
    ErrorCode,
    EvaluationResult,
    Reason,
    SnapshotDocument,
    compile_snapshot,
)
from flagport.exposures import ExposureItem, encode_batch, exposure_batches, exposure_items
from flagport.overrides import Overrides, check_values, fixed_document, overrides_from_environment
from flagport.reporting import ReportsOutcomes, note_read
from flagport.rollout.cohorts import cohort_metadata, cohort_of, plan_flag_of
from flagport.tally import Counted, EvaluationTally

__all__ = ["LocalClient"]

logger = logging.getLogger("flagport")

_EMPTY: Mapping[str, Any] = {}
_STREAM_UNSUPPORTED = (404, 405, 501)
#: Units kept per flag and variant while the server cannot be reached.
_MAX_HELD_UNITS = 100_000
StatusListener = Callable[[ClientStatus], None]
ChangeListener = Callable[[int], None]
Bootstrap = str | os.PathLike[str] | SnapshotDocument | Mapping[str, Any]


def _client_error(key: str, code: ErrorCode, message: str) -> EvaluationResult:
    """An error result made by the client, not the engine (nothing was evaluated)."""
    return EvaluationResult(
        key=key,
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=code,
        error_message=message,
    )


#: Memoised cohort answers per snapshot: a handful per flag, as results are shared; the bound
#: holds whatever an engine change might make of that.
_MAX_COHORT_RESULTS = 100_000


class _CohortResult(NamedTuple):
    answer: EvaluationResult
    result: EvaluationResult
    plan_result: EvaluationResult


class _Loaded:
    """One compiled snapshot and what the client derived from it (immutable but for the
    memo of cohort results, which only grows, a handful of entries per flag)."""

    __slots__ = ("_cohort_results", "etag", "plan_of", "snapshot", "source", "timed")

    def __init__(
        self,
        snapshot: CompiledSnapshot,
        etag: str | None,
        source: str,
        rollouts: list[str] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.etag = etag
        self.source = source  # "server" | "bootstrap" | "fixed" (no server)
        self.timed = snapshot.clock_keys
        #: Flag key -> the plan flag its answers report for (docs/spec.md section 13,
        #: "Cohort metadata"): empty unless the server's snapshot names running plans.
        self.plan_of: Mapping[str, str] = (
            plan_flag_of(snapshot.document.flags, rollouts) if rollouts else {}
        )
        self._cohort_results: dict[tuple[int, int], _CohortResult] = {}

    def with_cohort(self, result: EvaluationResult, context: Mapping[str, Any]) -> EvaluationResult:
        """``result`` (of a flag that reports for a plan) with the cohort its plan flag puts
        the unit in, in its metadata, as the server's answer carries it; ``result`` itself
        when the unit is in neither cohort. Shared per (result, plan result), as results are."""
        plan_key = self.plan_of[result.key]
        if result.error_code is not None or plan_key not in self.snapshot:
            return result
        plan_result = self.snapshot.evaluate(plan_key, context, time.time())
        memo_key = (id(result), id(plan_result))
        memo = self._cohort_results.get(memo_key)
        if memo is not None:
            return memo.answer
        cohort = cohort_of(plan_result, self.snapshot.document.flags[plan_key])
        if cohort is None or plan_result.variant is None:
            answer = result
        else:
            metadata = cohort_metadata(plan_key, cohort, plan_result.variant)
            answer = msgspec.structs.replace(
                result, metadata={**(result.metadata or {}), **metadata}
            )
        if len(self._cohort_results) < _MAX_COHORT_RESULTS:
            # The pair is kept alive with its answer: an id is only unique while its object
            # lives.
            self._cohort_results[memo_key] = _CohortResult(answer, result, plan_result)
        return answer


class _StreamUnsupported(Exception):
    pass


class _Failure(Exception):
    pass


class LocalClient(ReportsOutcomes):
    """Evaluate flags in process, from a snapshot kept current by the server's change stream.

    ::

        flags = flagport.LocalClient("http://127.0.0.1:8787", token="fpe_...",
                                     bootstrap="flags.yaml")
        flags.is_enabled("ui-improvements", {"targetingKey": "42"})

    The constructor waits up to ``start_timeout`` seconds for the first snapshot. If the
    server cannot be reached, ``bootstrap`` (a snapshot document file in JSON or YAML, a
    document or a mapping) is served until it can; without one, the callers' defaults.
    Evaluations are plain synchronous calls that never block, never raise and never do I/O:
    safe from threads and from async code. ``status`` and ``snapshot_age`` say how current
    the answers are.

    ``local_overrides`` (default true) reads a developer's ``FLAGPORT_OVERRIDES``
    (:mod:`flagport.overrides`; ignored under ``FLAGPORT_ENV=production``); a setting that
    cannot be parsed raises :class:`~flagport.InvalidDocumentError` here. For a client
    without a server see :meth:`from_flags` and :meth:`from_file`.
    """

    #: Distinct unknown keys a client without a server counts for :meth:`evaluated` (a
    #: long-lived ``from_file`` client asked for keys taken from its input must not grow).
    MAX_UNKNOWN_KEYS: ClassVar[int] = 1000

    _http: httpx.Client
    _thread: threading.Thread | None
    _reporter: threading.Thread | None

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        bootstrap: Bootstrap | None = None,
        start_timeout: float = 3.0,
        timeout: float = 5.0,
        stream: bool = True,
        poll_interval: float = 30.0,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        stream_read_timeout: float = 45.0,
        log_interval: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        report_exposures: bool = True,
        report_interval: float = 5.0,
        local_overrides: bool = True,
    ) -> None:
        base_url, uds = split_url(url)
        self._init_state(url, bootstrap, log_interval, local_overrides)
        self._serverless = False
        self._poll_interval = poll_interval
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
        self._use_stream = stream
        self._http = httpx.Client(
            base_url=base_url,
            headers=auth_headers(token),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            transport=transport
            if transport is not None
            else httpx.HTTPTransport(
                uds=uds, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY)
            ),
            verify=not base_url.startswith("http://"),
        )
        self._tally = EvaluationTally(self._bucket_by)
        #: The tally's dict (never replaced), read by the hot path without an attribute hop.
        self._tallies = self._tally.by_result
        self._report_interval = report_interval
        self._thread = thread = threading.Thread(
            target=self._run, name=f"flagport-local {url}", daemon=True
        )
        thread.start()
        if report_exposures:
            self._reporter = reporter = threading.Thread(
                target=self._report_loop, name=f"flagport-exposures {url}", daemon=True
            )
            reporter.start()
        if start_timeout > 0:
            self._first_attempt.wait(start_timeout)

    def _init_state(
        self, url: str, bootstrap: Bootstrap | None, log_interval: float, local_overrides: bool
    ) -> None:
        """The state every client has, with or without a server."""
        self.url = url
        self._bootstrap = bootstrap
        self._log_interval = log_interval
        self._overrides: Overrides | None = (
            overrides_from_environment() if local_overrides else None
        )
        #: True for a client without a server (no ``_http``, no threads).
        self._serverless = True
        self._thread = None
        self._reporter = None
        #: key -> compiled flag for flags that do not read the clock: the hot path.
        self._flags: dict[str, CompiledFlag] = {}
        self._loaded: _Loaded | None = None
        self._status = ClientStatus.NOT_READY
        self._confirmed_at: float | None = None
        self._status_listeners: list[StatusListener] = []
        self._change_listeners: list[ChangeListener] = []
        self._stop = threading.Event()
        self._first_attempt = threading.Event()
        self._response: httpx.Response | None = None
        self._last_log = -1e9
        self.last_error: str | None = None
        self._report_lock = threading.Lock()
        self._fixed_lock = threading.Lock()
        #: Reads of keys the snapshot lacks, by key: counted without a server only (for
        #: :meth:`evaluated`), where the keys are a test's code's own.
        self._unknown_reads: Counter[str] = Counter()
        self._unknown_lock = threading.Lock()

    # -- without a server ---------------------------------------------------------------

    @classmethod
    def from_flags(cls, values: Mapping[str, Any] | None = None) -> LocalClient:
        """A client without a server that serves fixed values to everyone, evaluated by the
        engine (docs/spec.md, "Fixed flag values and local overrides")::

            flags = LocalClient.from_flags({"ui-improvements": True, "checkout": "variant-b"})

        ``false`` is a flag that is off; any other JSON value a flag that is on and serves
        it. A bad key or value raises :class:`~flagport.InvalidDocumentError` naming it.
        Change the flags with :meth:`set`; :meth:`evaluated` says which flags the code read.
        ``FLAGPORT_OVERRIDES`` is not read: a test's flags are the test's."""
        return cls._fixed(fixed_document(check_values(values or {})), None, "fixed:flags")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalClient:
        """A client without a server that serves a snapshot document file (``flags export``,
        JSON or YAML), exactly as a server would serve it; :meth:`set` fixes flags on top.
        A file that cannot be read or parsed raises :class:`~flagport.InvalidDocumentError`
        naming it (and the line). ``FLAGPORT_OVERRIDES`` is not read."""
        from flagport.document import read_bootstrap

        document, mtime = read_bootstrap(path)
        return cls._fixed(document, mtime, f"file:{os.fspath(path)}")

    @classmethod
    def _fixed(cls, document: SnapshotDocument, mtime: float | None, name: str) -> LocalClient:
        client = cls.__new__(cls)
        client._init_state(name, None, 30.0, local_overrides=False)
        client._report_interval = 0.0
        # Units are not collected (no bucket_by): without a server nothing drains them.
        client._tally = EvaluationTally(lambda key: None)
        client._tallies = client._tally.by_result
        client._install(_Loaded(compile_snapshot(document), None, "fixed"))
        client._confirmed_at = mtime if mtime is not None else time.time()
        client._set_status(ClientStatus.READY)
        client._first_attempt.set()
        return client

    def set(self, key: str, value: Any) -> None:
        """Fix flag ``key`` to serve ``value`` (``false``: off), replacing its definition;
        only on a client without a server (:meth:`from_flags`, :meth:`from_file`)."""
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        """Fix several flags at once, as :meth:`set` does (one new snapshot)."""
        loaded = self._loaded
        if not self._serverless or loaded is None:
            raise ClientError(
                "set() and update() change the flags of a client without a server only "
                "(LocalClient.from_flags or LocalClient.from_file)"
            )
        checked = check_values(values)
        with self._fixed_lock:
            loaded = self._loaded or loaded
            document = fixed_document(checked, loaded.snapshot.document)
            document = msgspec.structs.replace(document, version=document.version + 1)
            self._install(_Loaded(compile_snapshot(document), None, "fixed"))

    def evaluated(self) -> dict[str, int]:
        """How many times each flag was read (``is_enabled``, ``evaluate``, ``details``,
        ``value``, and once per flag by ``all``) since the client was made, keys it does not
        know included (the first :attr:`MAX_UNKNOWN_KEYS` of them); only on a client without
        a server, whose counts no report takes::

            assert flagport_flags.evaluated().get("ui-improvements") == 1
            assert "legacy-checkout" not in flagport_flags.evaluated()

        What a test asserts with the PHP bridge's ``Flagport::assertEvaluated``, but for
        ``all``: it counts a read of every flag here (as a server counts a bulk evaluation),
        none on the PHP fake."""
        if not self._serverless:
            raise ClientError(
                "evaluated() counts the reads of a client without a server only "
                "(LocalClient.from_flags or LocalClient.from_file); a client with one "
                "reports its evaluations to the server"
            )
        reads: Counter[str] = Counter(self._unknown_reads)
        for tally in list(self._tally.by_result.values()):
            total = tally.total()
            if total:
                reads[tally.result.key] += total
        return dict(reads)

    # -- evaluations (hot path: no locks, no I/O) -------------------------------------

    def is_enabled(
        self, key: str, context: Mapping[str, Any] | None = None, default: bool = False
    ) -> bool:
        """Whether ``key`` is on for ``context``: a plain on/off flag's value; any other flag
        is on unless it serves its off variant. ``default`` on any error."""
        flag = self._flags.get(key)
        if flag is None:
            return self._is_enabled_slow(key, context, default)
        if context is None:
            context = _EMPTY
        result = flag.evaluate(context)
        tally = self._tallies.get(id(result))
        if tally is None:
            self._tally.count(result, context)
        else:
            # EvaluationTally.count, inlined: this is the hot path, budgeted at 2.5x a bare
            # engine call.
            next(tally.calls)
            by = tally.bucket_by
            if by is not None:
                unit = context.get(by)
                if unit.__class__ is str or unit.__class__ is int:
                    tally.units.add(unit)
        if result.error_code is None:
            value = result.value
            metadata = result.metadata
            if metadata is None:
                if value is True or value is False:
                    return value  # a plain on/off flag, not gated: served_on, inlined
            else:
                note_read(metadata)
            return served_on(value, metadata, default)
        return default

    def _is_enabled_slow(self, key: str, context: Mapping[str, Any] | None, default: bool) -> bool:
        details = self.details(key, None, context)
        return default if details.is_error else served_on(details.value, details.metadata, default)

    def evaluate(self, key: str, context: Mapping[str, Any] | None = None) -> EvaluationResult:
        """The engine's result for ``key`` and ``context``, counted as an exposure exactly as
        :meth:`is_enabled` counts it (unknown keys are not). Results are shared objects, one
        per flag, variant and reason of a snapshot, so a caller may cache what it derives
        from one by its identity. An error result says why nothing was served:
        ``PROVIDER_NOT_READY`` before the first snapshot, ``INVALID_CONTEXT`` for a context
        the engine cannot read; the engine's own errors as it gives them. A key the local
        overrides name is answered from them (not counted: the server never served it)."""
        overrides = self._overrides
        if overrides is not None and key in overrides:
            return overrides.result(key, _EMPTY if context is None else context)
        loaded = self._loaded
        if loaded is None:
            return _client_error(key, ErrorCode.PROVIDER_NOT_READY, self._not_ready_message())
        context = _EMPTY if context is None else context
        flag = self._flags.get(key)
        try:
            if flag is not None:
                result = flag.evaluate(context)
            else:
                result = loaded.snapshot.evaluate(key, context, time.time())
        except Exception as error:  # the engine never raises; a bad context type might
            return _client_error(key, ErrorCode.INVALID_CONTEXT, repr(error))
        if key in loaded.plan_of:
            result = loaded.with_cohort(result, context)
        if result.error_code is not ErrorCode.FLAG_NOT_FOUND:
            self._tally.count(result, context)
            if result.metadata is not None:
                note_read(result.metadata)
        elif self._serverless:
            self._note_unknown_read(key)
        return result

    def _note_unknown_read(self, key: str) -> None:
        with self._unknown_lock:  # ``+=`` is a read then a write: atomic only by the GIL's grace
            reads = self._unknown_reads
            if key in reads or len(reads) < self.MAX_UNKNOWN_KEYS:
                reads[key] += 1

    def details(
        self, key: str, default: Any, context: Mapping[str, Any] | None = None
    ) -> FlagDetails:
        """Evaluate ``key``: value (or ``default``), variant, reason, error code, staleness."""
        result = self.evaluate(key, context)
        if result.error_code is ErrorCode.PROVIDER_NOT_READY or (
            self._overrides is not None and key in self._overrides
        ):
            return details_from_result(result, default)  # not from the snapshot: never stale
        return details_from_result(result, default, self._status is not ClientStatus.READY)

    def value(self, key: str, default: Any, context: Mapping[str, Any] | None = None) -> Any:
        """The flag's value for ``context``, or ``default`` (also when the types differ)."""
        return self.details(key, default, context).value

    def all(self, context: Mapping[str, Any] | None = None) -> dict[str, FlagDetails]:
        """Every flag for ``context`` (values as served; errors per flag), the local
        overrides' keys answered from them."""
        loaded = self._loaded
        overrides = self._overrides
        context = _EMPTY if context is None else context
        answers: dict[str, FlagDetails] = {}
        if loaded is not None:
            stale = self._status is not ClientStatus.READY
            try:
                results = loaded.snapshot.evaluate_all(context, time.time())
            except Exception:
                results = {}
            count = self._tally.count
            for key, result in results.items():
                if overrides is None or key not in overrides:
                    count(result, context)
                    answers[key] = details_from_result(result, None, stale)
        if overrides is not None:
            try:
                fixed = overrides.results(context)
            except Exception:
                fixed = {}
            for key, result in fixed.items():
                answers[key] = details_from_result(result, None)
        return answers

    # -- state ------------------------------------------------------------------------

    @property
    def status(self) -> ClientStatus:
        """NOT_READY before the first answer, READY while current, STALE while serving an
        old snapshot (or the bootstrap) because the server is unreachable, ERROR with nothing
        to serve."""
        return self._status

    @property
    def version(self) -> int | None:
        """The version of the snapshot being served (None before the first one)."""
        loaded = self._loaded
        return loaded.snapshot.version if loaded is not None else None

    @property
    def snapshot(self) -> CompiledSnapshot | None:
        """The compiled snapshot being served."""
        loaded = self._loaded
        return loaded.snapshot if loaded is not None else None

    @property
    def snapshot_age(self) -> float | None:
        """Seconds since the server last confirmed the snapshot current (a fetch, an event
        or a keep-alive on the stream); for a bootstrap file, since it was written."""
        confirmed = self._confirmed_at
        return None if confirmed is None else max(0.0, time.time() - confirmed)

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Block until the client is READY (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while self._status is not ClientStatus.READY:
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(0.005)
        return True

    def on_status(self, listener: StatusListener) -> None:
        """Call ``listener(status)`` on every status change (from the background thread)."""
        self._status_listeners.append(listener)

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(version)`` after every new snapshot (from the background thread)."""
        self._change_listeners.append(listener)

    def close(self) -> None:
        """Stop the background threads, report the last exposures and outcomes and close
        the connections."""
        self._stop.set()
        self._interrupt_stream()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._reporter is not None:
            self._reporter.join(2.0)
            self.report_exposures()
        self._close_outcomes()
        if not self._serverless:
            self._http.close()

    def _outcomes_http(self) -> httpx.Client:
        if not self._serverless:
            return self._http
        # Without a server no answer names a plan cohort, so nothing is ever counted to
        # post; should anything be, it goes nowhere (no network).
        return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(204)))

    # -- exposures (counted on the evaluation path, reported from a background thread) ---

    def _bucket_by(self, key: str) -> str | None:
        loaded = self._loaded
        compiled = loaded.snapshot.flag(key) if loaded is not None else None
        return compiled.bucket_by if compiled is not None else None

    def _report_loop(self) -> None:
        while not self._stop.wait(self._report_interval):
            try:
                self.report_exposures()
            except Exception as error:  # never let the thread die
                self._log(f"exposures not reported: {error!r}")

    def report_exposures(self) -> int:
        """Send the evaluations counted since the last report to ``POST /v1/exposures``
        now (the background thread does it every ``report_interval`` seconds). Returns the
        number of evaluations the server counted; what could not be sent is kept. Without a
        server nothing is sent: the counts stay for :meth:`evaluated`."""
        if self._serverless:
            return 0
        with self._report_lock:
            return self._report()

    def _report(self) -> int:
        # Errors are not exposures: their counts are taken and dropped.
        taken = self._tally.take()
        counted = [c for c in taken if c.result.error_code is None and c.result.variant is not None]
        items: list[ExposureItem] = []
        # items[i] reports (part of) counted[owners[i]].
        owners: list[int] = []
        for index, evaluations_of in enumerate(counted):
            result = evaluations_of.result
            parts = exposure_items(
                result.key, result.variant or "", evaluations_of.evaluations, evaluations_of.units
            )
            items += parts
            owners += [index] * len(parts)
        if not items:
            return 0
        sent = delivered = 0
        try:
            for batch in exposure_batches(items):
                response = self._http.post(
                    "/v1/exposures",
                    content=encode_batch(batch),
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 200:
                    raise _Failure(f"POST /v1/exposures answered HTTP {response.status_code}")
                sent += int(response.json().get("evaluations", 0))
                delivered += len(batch)
        except (httpx.HTTPError, _Failure, ValueError) as error:
            # What was not acknowledged is kept for the next report (a bounded number of
            # units).
            undelivered = [
                Counted(counted[owner].tally, item.count, [str(unit) for unit in item.units])
                for owner, item in zip(owners[delivered:], items[delivered:], strict=True)
            ]
            self._tally.give_back(undelivered, _MAX_HELD_UNITS)
            self._log(f"exposures not reported (kept for the next report): {error}")
        return sent

    def _interrupt_stream(self) -> None:
        """Wake the thread blocked reading the stream: closing the response from this thread
        does not, shutting the socket down does."""
        response = self._response
        if response is None:
            return
        try:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # pragma: no cover - already closed
            pass

    def __enter__(self) -> LocalClient:
        if self._stop.is_set():
            raise ClientError("the client is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- background thread ------------------------------------------------------------

    def _not_ready_message(self) -> str:
        if self.last_error:
            return f"no snapshot yet: {self.last_error}"
        return "no snapshot yet"

    def _set_status(self, status: ClientStatus) -> None:
        if status is self._status:
            return
        self._status = status
        for listener in list(self._status_listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("flagport: a status listener failed")

    def _install(self, loaded: _Loaded) -> None:
        # Swap order: the full state first, then the hot-path dict (each one atomic).
        self._loaded = loaded
        snapshot = loaded.snapshot
        flags: dict[str, CompiledFlag] = {}
        # Flags that read the clock, report for a running plan, or are overridden take the
        # full path.
        overridden = self._overrides.values if self._overrides is not None else _EMPTY
        for key in snapshot:
            if key not in loaded.timed and key not in loaded.plan_of and key not in overridden:
                compiled = snapshot.flag(key)
                if compiled is not None:
                    flags[key] = compiled
        self._flags = flags
        for listener in list(self._change_listeners):
            try:
                listener(snapshot.version)
            except Exception:
                logger.exception("flagport: a change listener failed")

    def _log(self, message: str) -> None:
        """Log an error at most once per ``log_interval`` (an outage is one line, not one
        per retry)."""
        now = time.monotonic()
        if now - self._last_log >= self._log_interval:
            self._last_log = now
            logger.warning("flagport: %s", message)

    def _fetch(self) -> None:
        """Fetch the snapshot (conditional on the ETag of a server snapshot)."""
        loaded = self._loaded
        headers = {}
        if loaded is not None and loaded.etag and loaded.source == "server":
            headers["If-None-Match"] = loaded.etag
        try:
            response = self._http.get("/v1/snapshot", headers=headers)
        except httpx.HTTPError as error:
            raise _Failure(f"cannot reach {self.url}: {type(error).__name__}: {error}") from None
        if response.status_code == 304 and loaded is not None:
            self._confirmed_at = time.time()
            return
        if response.status_code != 200:
            raise _Failure(f"GET /v1/snapshot answered HTTP {response.status_code}")
        from flagport.document import decode_snapshot

        try:
            document = decode_snapshot(response.content)
            snapshot = compile_snapshot(document)
        except FlagportError as error:
            raise _Failure(str(error)) from None
        etag = response.headers.get("etag")
        self._install(_Loaded(snapshot, etag, "server", document.rollouts))
        self._confirmed_at = time.time()
        if snapshot.problems:
            self._log(f"snapshot {snapshot.version}: {len(snapshot.problems)} invalid flag(s)")

    def _load_bootstrap(self) -> None:
        if self._bootstrap is None or self._loaded is not None:
            return
        from flagport.document import read_bootstrap

        try:
            document, mtime = read_bootstrap(self._bootstrap)
            snapshot = compile_snapshot(document)
        except FlagportError as error:
            self._log(f"bootstrap unusable: {error}")
            return
        self._install(_Loaded(snapshot, None, "bootstrap"))
        self._confirmed_at = mtime if mtime is not None else time.time()

    def _failed(self, message: str) -> None:
        self.last_error = message
        self._log(message)
        if self._loaded is None:
            self._load_bootstrap()
        self._set_status(ClientStatus.STALE if self._loaded is not None else ClientStatus.ERROR)

    def _run(self) -> None:
        backoff = self._initial_backoff
        while not self._stop.is_set():
            try:
                self._fetch()
            except _Failure as error:
                self._failed(str(error))
                self._first_attempt.set()
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            except Exception as error:  # never let the thread die
                self._failed(f"unexpected error: {error!r}")
                self._first_attempt.set()
                self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self.last_error = None
            self._set_status(ClientStatus.READY)
            self._first_attempt.set()
            if not self._use_stream:
                self._sleep(self._poll_interval)
                continue
            try:
                if self._listen():
                    backoff = self._initial_backoff
            except _StreamUnsupported:
                self._log("the server has no change stream; polling instead")
                self._use_stream = False
                continue
            except Exception as error:
                if self._stop.is_set():
                    break
                self.last_error = f"change stream: {type(error).__name__}: {error}"
            self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _sleep(self, seconds: float) -> None:
        # Jitter spreads the reconnects of many clients after a server restart.
        self._stop.wait(seconds * (0.8 + 0.4 * random.random()))

    def _listen(self) -> bool:
        """Follow the change stream until it ends. True if it was connected."""
        loaded = self._loaded
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if loaded is not None and loaded.source == "server":
            headers["Last-Event-ID"] = str(loaded.snapshot.version)
        with self._http.stream(
            "GET", "/v1/stream", headers=headers, timeout=self._stream_timeout
        ) as response:
            if response.status_code in _STREAM_UNSUPPORTED:
                raise _StreamUnsupported
            if response.status_code != 200:
                raise _Failure(f"GET /v1/stream answered HTTP {response.status_code}")
            self._response = response
            try:
                # A change between the fetch and the connection would be missed otherwise.
                self._fetch()
                self._set_status(ClientStatus.READY)
                data: list[str] = []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        break
                    self._confirmed_at = time.time()
                    if not line:
                        if data:
                            self._on_event("\n".join(data))
                            data = []
                    elif line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
            finally:
                self._response = None
        return True

    def _on_event(self, data: str) -> None:
        try:
            event = msgspec.json.decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(event, dict) or event.get("type") != "refetchEvaluation":
            return  # clients route on type and ignore the others
        loaded = self._loaded
        if loaded is not None and loaded.source == "server":
            etag = event.get("etag")
            if etag is not None and f'"{etag}"' == loaded.etag:
                return
        self._fetch()
