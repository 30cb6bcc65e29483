"""Run each side of a benchmark in a process of its own and drive them in lock-step.

Process-wide settings (threads, the allocator tuning PowerBERT applies before training) would
otherwise leak from one side into the other: the reference must run as plain code would, in a
process nobody tuned. Only one side computes at a time (the parent waits for each answer), so
the sides never compete for the cores, and interleaving them step by step means a burst of
load from elsewhere hits both alike.

A side is a class with `__init__(**spec)` and methods the parent calls by name; `Sides`
starts them, calls methods round-robin and collects what they return.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import traceback
from typing import Any


def _serve(conn, module: str, cls: str, spec: dict) -> None:
    try:
        side = getattr(importlib.import_module(module), cls)(**spec)
        conn.send(("ok", None))
    except BaseException:  # noqa: BLE001 - the parent reports it
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        method, args = conn.recv()
        if method is None:
            return
        try:
            conn.send(("ok", getattr(side, method)(*args)))
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


class SideError(RuntimeError):
    pass


class Side:
    def __init__(self, name: str, module: str, cls: str, spec: dict):
        self.name = name
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, module, cls, spec), daemon=True)
        self.process.start()
        self._answer()

    def _answer(self) -> Any:
        status, value = self.conn.recv()
        if status == "error":
            raise SideError(f"side '{self.name}' failed:\n{value}")
        return value

    def call(self, method: str, *args) -> Any:
        self.conn.send((method, args))
        return self._answer()

    def close(self) -> None:
        try:
            self.conn.send((None, ()))
        except OSError:
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


class Sides:
    """Start the named sides one after another (so their set-up does not overlap)."""

    def __init__(self, specs: dict[str, tuple[str, str, dict]]):
        self.sides: dict[str, Side] = {}
        try:
            for name, (module, cls, spec) in specs.items():
                self.sides[name] = Side(name, module, cls, spec)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Sides:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for side in self.sides.values():
            side.close()

    def each(self, method: str, *args, reverse: bool = False) -> dict[str, Any]:
        names = list(self.sides)[::-1] if reverse else list(self.sides)
        return {name: self.sides[name].call(method, *args) for name in names}
