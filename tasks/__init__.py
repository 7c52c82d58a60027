"""Celery task modules. Thin: load by id, call a service, return ids. Names: ``hnpal.<area>.<verb>``."""
