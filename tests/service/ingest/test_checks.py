"""A model's check is held under a lease like a job (service/ingest/checks.py): one worker at
a time, taken again once its worker's lease ran out, sent again when its message was lost,
and the model invalid once MAX_ATTEMPTS checks never finished."""

from datetime import timedelta

import pytest
from sqlalchemy import update

from service.config import Settings
from service.db.sessions import session_scope
from service.db.tables import RegisteredModel, utcnow
from service.ingest import checks
from service.jobs.watchdog import run_watchdog
from tests.service.helpers import validating

READY = {"status": "ready", "parameters": 123, "output_shape": [10]}


@pytest.fixture
def model(clean_db) -> str:
    return validating(0)


def claim(model_id: str) -> RegisteredModel | None:
    with session_scope() as s:
        return checks.MODELS.claim(s, model_id, lease_s=60)


def lose_worker(model_id: str) -> None:
    """Its worker died: the lease runs out."""
    with session_scope() as s:
        s.execute(
            update(RegisteredModel)
            .where(RegisteredModel.id == model_id)
            .values(check_lease_until=utcnow() - timedelta(seconds=1))
        )


def row(model_id: str) -> RegisteredModel:
    with session_scope() as s:
        return s.get(RegisteredModel, model_id)  # type: ignore[return-value]


def waiting(longer_than_s: float = 10) -> str | None:
    with session_scope() as s:
        return checks.MODELS.waiting(s, longer_than_s)


def test_one_worker_holds_a_check_until_its_lease_runs_out(model):
    assert claim(model).check_attempts == 1
    assert claim(model) is None  # held
    with session_scope() as s:
        assert checks.MODELS.extend(s, model, lease_s=60)
    assert claim(model) is None
    lose_worker(model)
    assert claim(model).check_attempts == 2


def test_a_recorded_check_is_final_and_frees_the_lease(model):
    claim(model)
    with session_scope() as s:
        assert checks.MODELS.record(s, model, READY)
    with session_scope() as s:  # a repeated check of a decided model changes nothing
        assert not checks.MODELS.record(s, model, {"status": "invalid"})
        assert not checks.MODELS.extend(s, model, lease_s=60)
    decided = row(model)
    assert (decided.status, decided.parameters, decided.check_lease_until) == ("ready", 123, None)
    assert claim(model) is None and waiting() is None


def test_waiting_names_the_oldest_check_no_worker_holds(clean_db):
    assert waiting() is None
    newer, older, fresh = validating(30), validating(60), validating(0)
    assert waiting() == older
    claim(older)
    assert waiting() == newer  # held: not waiting
    claim(newer)
    assert waiting() is None  # `fresh` was uploaded 0 s ago: its message is on its way
    lose_worker(newer)
    assert waiting() == newer
    assert waiting(longer_than_s=0) in {newer, fresh}


def test_a_check_whose_workers_keep_dying_makes_the_model_invalid(model):
    for _ in range(checks.MAX_ATTEMPTS):
        assert claim(model) is not None
        lose_worker(model)
    assert claim(model) is None and waiting(0) is None
    assert run_watchdog(Settings(check_queue="t-never-consumed")) == 0
    lost = row(model)
    assert lost.status == "invalid" and "never finished" in lost.problems[0]


def test_a_check_still_held_after_its_last_attempt_is_left_to_finish(model):
    for _ in range(checks.MAX_ATTEMPTS):
        claim(model)
        lose_worker(model)
    with session_scope() as s:
        s.execute(
            update(RegisteredModel)
            .where(RegisteredModel.id == model)
            .values(check_lease_until=utcnow() + timedelta(seconds=60))
        )
        assert checks.MODELS.expire(s) == []
    assert row(model).status == "validating"
