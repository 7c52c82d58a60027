"""Digest deliveries: one row per (user, post), reserved before sending."""
