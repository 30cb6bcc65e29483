"""The one exception the store raises: a one-line message a front end can print as it is."""

from __future__ import annotations


class StoreError(Exception):
    """Something about runs.db that a person has to act on (a bad path, a missing row, ...)."""
