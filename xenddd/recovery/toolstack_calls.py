"""Toolstack calls that take seconds (start, attach, detach) run on worker threads, never on the loop.

A libvirt start of a driver domain can take seconds, a detach as long; run on the reconciler's thread, one
domain's call would hold every other domain's recovery, and a restart would wait for the detaches before
it. Here each call runs on a worker; the reconciler submits it under a key, goes on, and takes the result
on a later pass (the worker's `wake` puts a hint on the daemon's queue when the call returns).

Nothing here is remembered across a daemon restart, and nothing needs to be: every destructive call's
intent is saved before it is submitted, and a call lost with its daemon is judged again from what the
toolstack shows (the recovery's steps are idempotent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from xenddd.errors import XendddError

log = logging.getLogger(__name__)

SLOW_CALL = 1.0  # seconds; a call that takes longer is logged with its duration


@dataclass(frozen=True)
class CallResult:
    """What a finished call returned, or the toolstack error it raised."""

    value: Any = None
    error: XendddError | None = None


@dataclass
class _Running:
    what: str
    since: float | None = None  # when a worker took it up (None: still queued in its lane)


class ToolstackCalls:
    """Calls run in lanes (e.g. one per driver domain for its devices, one for its start), each with at
    most `workers` at once; a lane's further calls queue, so submitting a whole recovery's attaches at
    once costs no pass per device, and one lane's queue never delays another's calls."""

    def __init__(
        self, wake: Callable[[], None], workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._wake = wake
        self._clock = clock
        self._workers = max(1, workers)
        self._lanes: dict[Hashable, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Running] = {}
        self._done: dict[Hashable, CallResult | BaseException] = {}

    @property
    def workers(self) -> int:
        """How many calls of one lane run at once."""
        return self._workers

    def submit(self, key: Hashable, what: str, call: Callable[[], Any], lane: Hashable = None) -> None:
        """Run `call` on a worker of `lane`; `what` names it in `oldest()`. A key is used once until taken."""
        with self._lock:
            if key in self._running or key in self._done:
                raise RuntimeError(f"a toolstack call for {key!r} is already under way")
            self._running[key] = _Running(what)
            pool = self._lanes.get(lane)
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="xenddd-toolstack")
                self._lanes[lane] = pool
        pool.submit(self._run, key, call)

    def busy(self, key: Hashable) -> bool:
        """Submitted and not yet taken (running, or finished and waiting to be taken)."""
        with self._lock:
            return key in self._running or key in self._done

    def take(self, key: Hashable) -> CallResult | None:
        """The result of a finished call (forgetting it), or None while it runs or if there is none.

        An unexpected exception (a bug, not a toolstack refusal) is raised here, on the reconciler's
        thread, as it would have been had the call run there.
        """
        with self._lock:
            outcome = self._done.pop(key, None)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def keys(self, belongs: Callable[[Hashable], bool]) -> list[Hashable]:
        """Keys of the calls submitted and not yet taken for which `belongs(key)` holds."""
        with self._lock:
            return [k for k in (*self._running, *self._done) if belongs(k)]

    def oldest(self) -> tuple[str, float] | None:
        """The call running longest (queued ones wait for their lane, not for the toolstack) and for how
        many seconds: what a watchdog should look at."""
        with self._lock:
            started = [(r.since, r.what) for r in self._running.values() if r.since is not None]
        if not started:
            return None
        since, what = min(started)
        return what, self._clock() - since

    def close(self) -> None:
        """Stop taking calls; running ones finish on their own (a toolstack call cannot be interrupted)."""
        with self._lock:
            lanes = list(self._lanes.values())
        for pool in lanes:
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, key: Hashable, call: Callable[[], Any]) -> None:
        with self._lock:
            running = self._running[key]
            running.since = started = self._clock()
        outcome: CallResult | BaseException
        try:
            outcome = CallResult(value=call())
        except XendddError as exc:
            outcome = CallResult(error=exc)
        except Exception as exc:  # thread boundary: handed to the reconciler's thread by take()
            outcome = exc
        took = self._clock() - started
        # where a recovery's time goes, in the journal (every call's with debug logging)
        log.log(logging.INFO if took >= SLOW_CALL else logging.DEBUG, "%s took %.1f s", running.what, took)
        with self._lock:
            self._running.pop(key, None)
            self._done[key] = outcome
        self._wake()
