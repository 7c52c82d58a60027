"""Discussions: one multi-turn conversation about one post."""
