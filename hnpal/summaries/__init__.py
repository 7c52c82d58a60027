"""Summaries: one per (post, style, variant), generated once and shared by every user."""
