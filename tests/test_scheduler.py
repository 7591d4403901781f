"""The scheduler: cached work never waits behind running work, a newer selection supersedes the running one, and
cancellation reaches into long loops (calibration batches, the accuracy pass, search rounds). Ordered with events,
never with sleeps or timings."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from workbench import Workbench
from workbench.errors import Cancelled
from workbench.jobs import CancelToken, Progress
from workbench.precision.plan import PrecisionPlan
from workbench.scheduler import Scheduler, execute_all

WAIT = 60  # seconds an event may take to be set before the test fails (a hang, not a timing assert)


@pytest.fixture()
def scheduler():
    scheduler = Scheduler(name="test")
    yield scheduler
    scheduler.close()


def _blocking(started: threading.Event, release: threading.Event, log: list):
    """Work that says it started, then polls its token until released, like a measurement between steps."""
    def work(ticket):
        started.set()
        while not release.wait(0.01):
            ticket.cancel.check()
        ticket.cancel.check()
        log.append(ticket.label)
        return ticket.label
    return work


def test_cached_work_is_answered_on_the_calling_thread_while_other_work_runs(scheduler):
    started, release, log = threading.Event(), threading.Event(), []
    running = scheduler.submit(_blocking(started, release, log), label="int8", group="other")
    assert started.wait(WAIT)
    caller = threading.current_thread()
    cached = scheduler.submit(lambda ticket: threading.current_thread(), label="fp32", cached=True)
    assert cached.done and cached.result() is caller  # answered before submit returned, on this thread
    assert not running.done and scheduler.running is running  # the measurement is still going
    release.set()
    assert running.result(timeout=WAIT) == "int8"


def test_a_newer_selection_cancels_the_running_one(scheduler):
    started, release, log = threading.Event(), threading.Event(), []
    first = scheduler.submit(_blocking(started, release, log), label="int8")
    assert started.wait(WAIT)
    second = scheduler.submit(lambda ticket: ticket.label, label="fp16")
    assert first.cancel.cancelled and not second.cancel.cancelled
    with pytest.raises(Cancelled):
        first.result(timeout=WAIT)  # it stopped at its next check, without being released
    assert second.result(timeout=WAIT) == "fp16"
    assert log == []


def test_queued_work_superseded_before_it_starts_never_runs(scheduler):
    started, release, log = threading.Event(), threading.Event(), []
    blocker = scheduler.submit(_blocking(started, release, log), label="search", group="search")
    assert started.wait(WAIT)
    ran = []
    older = scheduler.submit(lambda ticket: ran.append("fp16"), label="fp16")
    newer = scheduler.submit(lambda ticket: ran.append("int8"), label="int8")
    assert not blocker.cancel.cancelled  # another group: a selection does not supersede the search
    release.set()
    assert blocker.result(timeout=WAIT) == "search"
    newer.result(timeout=WAIT)
    with pytest.raises(Cancelled):
        older.result(timeout=WAIT)
    assert ran == ["int8"]


def test_progress_of_superseded_work_is_dropped(scheduler):
    seen = []
    started, release = threading.Event(), threading.Event()

    def work(ticket):
        ticket.report(Progress("int8", "precision", 0, 2))
        started.set()
        assert release.wait(WAIT)
        ticket.report(Progress("int8", "build", 1, 2))  # after it was superseded
        ticket.cancel.check()

    first = scheduler.submit(work, label="int8", on_progress=seen.append)
    assert started.wait(WAIT)
    scheduler.submit(lambda ticket: None, label="fp32", cached=True)
    release.set()
    with pytest.raises(Cancelled):
        first.result(timeout=WAIT)
    assert [p.step for p in seen] == ["precision"] and first.progress.step == "precision"


def test_failures_reach_the_future_and_the_worker_goes_on(scheduler):
    def fail(ticket):
        raise ValueError("broken")

    failed = scheduler.submit(fail, label="bad", group=None)
    fine = scheduler.submit(lambda ticket: 42, label="good", group=None)
    with pytest.raises(ValueError, match="broken"):
        failed.result(timeout=WAIT)
    assert fine.result(timeout=WAIT) == 42 and scheduler.pending() == []


# ---- cancellation inside the long loops of real work --------------------------------------------------------
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Workbench("digits-cnn", cache_dir=tmp_path_factory.mktemp("cache"), progress=False, eval_limit=64)


def test_the_accuracy_pass_stops_between_batches(session):
    from workbench.session import _run_all

    token, batches = CancelToken(), []

    class Engine:
        def run(self, feeds):
            batches.append(len(batches))
            if len(batches) == 2:
                token.cancel()
            return [np.zeros((len(next(iter(feeds.values()))), 10), np.float32)]

    with pytest.raises(Cancelled):
        _run_all(Engine(), session.eval.arrays, 8, session._to_feeds, cancel=token)
    assert len(batches) == 2  # of 8 batches: it stopped at the next check


def test_calibration_stops_between_batches_and_caches_no_ranges(session, monkeypatch):
    from workbench.precision import calibrate

    calibrate.clear_cache()
    token = CancelToken()
    job = session.prepare(PrecisionPlan("int8", method="minmax"), batch=8, runs=2)
    checks = []
    check, extremes = calibrate.check_cancel, calibrate._extremes

    def counted_check(cancel):  # once before every calibration batch
        checks.append(1)
        check(cancel)

    def cancelling_extremes(values):  # while the first batch is reduced, the person cancels
        token.cancel()
        return extremes(values)

    monkeypatch.setattr(calibrate, "check_cancel", counted_check)
    monkeypatch.setattr(calibrate, "_extremes", cancelling_extremes)
    with pytest.raises(Cancelled):
        session.execute(job, cancel=token)
    batches = len(calibrate.calibration_batches(job.calibration, session.model.inputs))
    assert batches > 2 and len(checks) == 2  # the second batch never started
    assert not session.is_cached(job)
    assert not list(session.cache.directory.rglob("calibration-*"))  # no ranges of a cancelled calibration


def test_a_search_reports_progress_over_the_whole_search_and_stops_when_cancelled(session):
    token, seen = CancelToken(), []

    def on_progress(progress: Progress):
        seen.append(progress)
        if progress.job.startswith("search: configuration 2 of"):
            token.cancel()  # as the Cancel button would, while the second configuration runs

    with pytest.raises(Cancelled):
        session.tune("int8", max_drop=0.0, metric="cosine", budget=4, batch=8, runs=2, drift=True,
                     cancel=token, on_progress=on_progress)
    searched = [p for p in seen if p.job.startswith("search: configuration")]
    assert searched[0].job.startswith("search: configuration 1 of 4")
    assert {p.total for p in searched} == {searched[0].total} and searched[0].total >= 4 * 5
    done = [p.done for p in searched]
    assert done == sorted(done) and done[-1] >= searched[0].total // 4  # one bar over the search, never restarting
    assert not seen[-1].job.startswith("search: configuration 3")  # stopped inside configuration 2


def test_a_sweep_answers_cached_jobs_first_and_reports_failures(session):
    cached = session.prepare(PrecisionPlan("fp32"), batch=4, runs=2)
    session.execute(cached)
    new = session.prepare(PrecisionPlan("fp16"), batch=4, runs=2)
    order = []
    outcomes = execute_all([(session, new), (session, cached)],
                           on_done=lambda _s, job, outcome: order.append(job.key))
    assert order == [cached.key, new.key]  # the cached one first, though listed second
    assert [o.cache_key for o in outcomes] == [new.key, cached.key]  # results in task order
