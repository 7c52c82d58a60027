"""HN Pal: a Hacker News companion for Telegram, built as a Celery task pipeline.

``celery -A hnpal`` finds the Celery app in :mod:`hnpal.celery`.
"""

__version__ = "0.1.0"
