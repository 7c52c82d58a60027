"""hnpal.jobs: the one enqueue path. Jobs go out after their transaction commits, never on rollback."""

from __future__ import annotations

import pytest

from hnpal import jobs
from hnpal.db.session import session_scope


def test_a_job_waits_for_the_commit_and_a_rollback_drops_it() -> None:
    with jobs.recording() as sent:
        with session_scope() as session:
            jobs.enqueue(session, jobs.CRAWL_POST, 1)
            assert sent == []  # the row it names may not be visible to a worker yet
        assert sent == [jobs.Job(jobs.CRAWL_POST, (1,))]
        with pytest.raises(RuntimeError), session_scope() as session:
            jobs.enqueue(session, jobs.CRAWL_POST, 2)
            raise RuntimeError("the transaction fails")
        assert [job.args for job in sent] == [(1,)]
        jobs.enqueue(None, jobs.INGEST_COMMENTS, 3, countdown=5)  # no transaction: at once
        jobs.enqueue(None, jobs.DIGESTS_SEND, 4, waited_on=True)
    assert sent[1:] == [
        jobs.Job(jobs.INGEST_COMMENTS, (3,), countdown=5),
        jobs.Job(jobs.DIGESTS_SEND, (4,), priority=0),
    ]


def test_a_batch_collects_in_order_and_sends_when_told() -> None:
    batch = jobs.Batch()
    batch.enqueue(jobs.MEMORY_EXTRACT, 7)
    batch.enqueue(jobs.DISCUSSIONS_REPLY, 8, 2)
    with jobs.recording() as sent:
        assert sent == [] and len(batch) == 2
        batch.send()
    assert batch.names() == [jobs.MEMORY_EXTRACT, jobs.DISCUSSIONS_REPLY]
    assert [(job.name, job.args) for job in sent] == [(jobs.MEMORY_EXTRACT, (7,)), (jobs.DISCUSSIONS_REPLY, (8, 2))]


def test_recording_ends_with_its_block() -> None:
    with jobs.recording() as outer:
        with jobs.recording() as inner:
            jobs.enqueue(None, jobs.CRAWL_POST, 1)
        jobs.enqueue(None, jobs.CRAWL_POST, 2)
    assert [job.args for job in inner] == [(1,)] and [job.args for job in outer] == [(2,)]
