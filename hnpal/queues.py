"""The Celery queues and the bulk priority. Each task names its queue (and, for bulk work, its priority)
on its own decorator in ``tasks/``; workers are started per queue (``hnpal up``, docker-compose)."""

from __future__ import annotations

DEFAULT = "default"  # quick database jobs: sweeps, dispatchers, schedules, privacy, operations
CRAWL = "crawl"  # page downloads and extraction
CONTENT = "content"  # the RocksDB writer: exactly one process consumes it
LLM = "llm"  # model calls: summaries, discussion answers, memory extraction
TELEGRAM = "telegram"  # update handling and sends
QUEUES = (DEFAULT, CRAWL, CONTENT, LLM, TELEGRAM)

# What a user waits on (an update's handling, a discussion answer) goes ahead of bulk work sharing its
# queue (digest sends on `telegram`; summaries and memory extraction on `llm`): kombu's Redis transport
# keeps a list per priority level and a worker takes from the lowest number first; a message without a
# priority is 0. Bulk tasks declare BULK_PRIORITY (their retries keep it), so a button press during a
# digest run of thousands waits for a free worker thread, not for the run.
BULK_PRIORITY = 6
WAITED_ON = 0  # the priority of bulk work a user asked for and waits on (a /digest during a digest run)
