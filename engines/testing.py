"""Helpers shared by the test suites: wait on a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

__all__ = ["async_wait_for", "metric_sum", "wait_for"]

T = TypeVar("T")


def _describe(what: str | Callable[[], str], condition: object) -> str:
    """``what`` at the deadline: a callable is called then, so it reports the state that failed
    the wait, not the state when the wait began."""
    if callable(what):
        try:
            return what()
        except Exception as exc:  # the description must never hide the timeout
            return f"<description failed: {exc!r}>"
    return what or str(condition)


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> T:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except AssertionError as exc:  # allow conditions written as assertions
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {_describe(what, condition)}{detail}"
            )
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str | Callable[[], str] = "",
) -> T:
    """The asyncio twin of :func:`wait_for`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = await condition()
            if value:
                return value
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f": {last_error}" if last_error else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {_describe(what, condition)}{detail}"
            )
        await asyncio.sleep(interval)


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples called ``name`` (with exactly these ``labels``, when given) in a
    Prometheus text exposition; 0 when there are none."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and (labels is None or sample.labels == dict(labels))
    )
