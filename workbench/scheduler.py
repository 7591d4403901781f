"""One scheduler per explorer, app or script: which work runs when.

- A job whose answer is cached (`cached=True`, e.g. `Workbench.is_cached(job)`) runs at once on the calling thread:
  it never waits behind work in progress.
- Other work runs in submission order on one worker thread (engines already use every core; two measurements side
  by side would time each other).
- Submitting work of a `group` (default "selection") supersedes the earlier work of that group: its `CancelToken`
  is cancelled, so queued work never starts and running work stops at its next check (between steps and inside
  long loops: calibration batches, the accuracy pass, search rounds). A superseded ticket's progress is dropped.

`Ticket.future` resolves to the work's return value, or raises `Cancelled` for superseded or cancelled work.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .errors import Cancelled
from .jobs import CancelToken, Progress, ProgressCallback

SELECTION = "selection"  # the default group: what a person has picked; a newer pick supersedes the older one


class Ticket:
    """One piece of submitted work: its `label`, `group`, `cancel` token, `future` and latest `progress`."""

    def __init__(self, label: str, group: str | None, on_progress: ProgressCallback | None) -> None:
        self.label = label
        self.group = group
        self.cancel = CancelToken()
        self.future: Future = Future()
        self.progress: Progress | None = None
        self._on_progress = on_progress

    def report(self, progress: Progress) -> None:
        """Record `progress` and pass it on, unless this work was cancelled (superseded progress is not news)."""
        if self.cancel.cancelled:
            return
        self.progress = progress
        if self._on_progress is not None:
            self._on_progress(progress)

    @property
    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout=timeout)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancel.cancelled else "done" if self.done else "pending"
        return f"Ticket({self.label!r}, group={self.group!r}, {state})"


class Scheduler:
    """`submit(work, label=..., cached=...)` -> `Ticket`; `work(ticket)` does the job, calling `ticket.report(...)`
    with its progress and passing `ticket.cancel` to what it runs. `cancel(group)` stops a group's work;
    `close()` stops everything and ends the worker thread."""

    def __init__(self, *, name: str = "workbench") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-scheduler")
        self._lock = threading.Lock()
        self._open: list[Ticket] = []  # submitted, not finished
        self._running: Ticket | None = None

    def submit(self, work: Callable[[Ticket], Any], *, label: str, cached: bool = False,
               group: str | None = SELECTION, on_progress: ProgressCallback | None = None) -> Ticket:
        """Run `work(ticket)`: at once on this thread when `cached`, else on the worker after what is queued. Work
        of the same `group` submitted earlier is cancelled (None: supersede nothing)."""
        ticket = Ticket(label, group, on_progress)
        with self._lock:
            if group is not None:
                for other in self._open:
                    if other.group == group:
                        other.cancel.cancel()
            self._open.append(ticket)
        if cached:
            self._run(work, ticket, on_worker=False)
        else:
            self._executor.submit(self._run, work, ticket, on_worker=True)
        return ticket

    def cancel(self, group: str | None = None) -> int:
        """Cancel the open work of `group` (None: all of it); returns how many tickets were cancelled."""
        with self._lock:
            chosen = [t for t in self._open if group is None or t.group == group]
        for ticket in chosen:
            ticket.cancel.cancel()
        return len(chosen)

    @property
    def running(self) -> Ticket | None:
        """The ticket the worker thread is on (None when idle)."""
        return self._running

    def pending(self, group: str | None = None) -> list[Ticket]:
        """Open tickets (running or queued) of `group` (None: all), oldest first."""
        with self._lock:
            return [t for t in self._open if group is None or t.group == group]

    def close(self) -> None:
        """Cancel all work and let the worker thread end (it finishes the step it is in)."""
        self.cancel()
        self._executor.shutdown(wait=False, cancel_futures=False)

    def _run(self, work: Callable[[Ticket], Any], ticket: Ticket, *, on_worker: bool) -> None:
        if not ticket.future.set_running_or_notify_cancel():
            return
        if on_worker:
            self._running = ticket
        try:
            ticket.cancel.check()  # superseded while queued: never started
            ticket.future.set_result(work(ticket))
        except BaseException as exc:  # noqa: BLE001 - Cancelled or a failure: the submitter reads it from the future
            ticket.future.set_exception(exc)
        finally:
            if on_worker:
                self._running = None
            with self._lock:
                if ticket in self._open:
                    self._open.remove(ticket)


def execute_all(tasks, *, cancel: CancelToken | None = None, on_progress: ProgressCallback | None = None,
                on_done: Callable[[Any, Any, Any], None] | None = None) -> list:
    """Execute prepared jobs, `tasks` = [(workbench, job), ...], on a scheduler of their own: the cached ones are
    answered first (at once), then the others one by one in order. Returns, in task order, each job's RunResult or
    the exception it raised (the others go on); `on_done(workbench, job, outcome)` is called as each finishes.
    `cancel` stops the remaining work (`Cancelled` is raised)."""
    tasks = list(tasks)
    scheduler = Scheduler(name="workbench-sweep")
    outcomes: list[Any] = [None] * len(tasks)

    def work(index: int):
        session, job = tasks[index]
        return lambda ticket: session.execute(job, progress=ticket.report, cancel=cancel)

    try:
        cached = [session.is_cached(job) for session, job in tasks]
        order = sorted(range(len(tasks)), key=lambda i: not cached[i])  # stable: cached first, then task order
        tickets = {i: scheduler.submit(work(i), label=tasks[i][1].label, cached=cached[i], group=None,
                                       on_progress=on_progress) for i in order}
        for i in order:
            try:
                outcomes[i] = tickets[i].result()
            except Exception as exc:  # noqa: BLE001 - returned in place of the result
                outcomes[i] = exc
            if cancel is not None and cancel.cancelled:
                raise Cancelled("cancelled before every job finished")
            if on_done is not None:
                on_done(*tasks[i], outcomes[i])
    finally:
        scheduler.close()
    return outcomes
