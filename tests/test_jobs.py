"""The public job API: prepare -> is_cached -> execute, with progress and cancellation between steps."""
from __future__ import annotations

import pytest

from workbench import Workbench
from workbench.errors import Cancelled, InputSpecError
from workbench.jobs import CancelToken
from workbench.precision.plan import PrecisionPlan


@pytest.fixture()
def session(tmp_path):
    return Workbench("digits-cnn", cache_dir=tmp_path, progress=False, eval_limit=64)


def test_prepare_gives_the_key_run_uses_and_is_cached_follows_execute(session):
    job = session.prepare(PrecisionPlan("fp16"), batch=4, runs=3)
    assert session.prepare_run("fp16", batch=4, runs=3).key == job.key
    assert not session.is_cached(job)
    seen = []
    result = session.execute(job, progress=seen.append)
    assert session.is_cached(job)
    assert result.cache_key == job.key
    assert [p.step for p in seen] == ["precision", "build", "latency", "accuracy", "profile", "drift"]
    assert [p.done for p in seen] == list(range(6)) and {p.total for p in seen} == {6}
    assert all(p.job == job.label for p in seen)
    assert session.run(PrecisionPlan("fp16"), batch=4, runs=3).cache_key == job.key


def test_a_cancelled_job_raises_between_steps_and_caches_nothing(session):
    job = session.prepare(PrecisionPlan("fp16"), batch=4, runs=3)
    token = CancelToken()

    def cancel_at_latency(progress):
        if progress.step == "latency":
            token.cancel()

    with pytest.raises(Cancelled):
        session.execute(job, progress=cancel_at_latency, cancel=token)
    assert not session.is_cached(job)


def test_a_plan_and_plan_keywords_together_are_refused(session):
    with pytest.raises(InputSpecError, match="PrecisionPlan and plan keywords"):
        session.run(PrecisionPlan("int8"), method="entropy")
