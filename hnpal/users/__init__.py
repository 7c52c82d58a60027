"""Telegram users, their preferences and their bot state."""
