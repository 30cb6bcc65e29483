"""`powerbert ensemble / report / predict`: commands over finished experiments."""

from __future__ import annotations
