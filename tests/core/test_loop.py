"""The event loop choice (config key ``event_loop``, identity.loop)."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref

import pytest

from identity.config import load_settings
from identity.errors import ConfigError
from identity.loop import loop_factory, loop_name, run, settle_heap


async def _kind() -> str:
    return loop_name(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_when_installed() -> None:
    assert run(_kind()) == "uvloop"
    assert run(_kind(), "uvloop") == "uvloop"


def test_asyncio_runs_on_the_standard_loop() -> None:
    assert loop_factory("asyncio") is None
    assert run(_kind(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop → ImportError
    assert loop_factory("auto") is None
    assert run(_kind()) == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        run(_kind(), "uvloop")


async def test_the_tests_run_on_the_service_loop() -> None:
    assert await _kind() == "uvloop"


def test_settle_heap_collects_then_freezes_what_is_left() -> None:
    class Cycle:
        me: object = None

    gc.disable()  # no automatic collection in between: only settle_heap's own
    try:
        garbage = Cycle()
        garbage.me = garbage
        dead = weakref.ref(garbage)
        del garbage
        kept = [Cycle() for _ in range(100)]
        assert dead() is not None and gc.get_freeze_count() == 0
        frozen, elapsed = settle_heap()
        assert dead() is None  # collected first, not frozen
        assert frozen == gc.get_freeze_count() >= len(kept) and elapsed >= 0
    finally:
        gc.unfreeze()
        gc.enable()


def test_event_loop_key_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_CONFIG", raising=False)
    assert load_settings().event_loop == "auto"
    monkeypatch.setenv("IDENTITY_EVENT_LOOP", "asyncio")
    assert load_settings().event_loop == "asyncio"
    monkeypatch.setenv("IDENTITY_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="event_loop"):
        load_settings()
