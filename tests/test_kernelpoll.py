"""Kernel channels polled in slices (nninvert_lib.kernelpoll)."""
from __future__ import annotations

import asyncio
from queue import Empty

import pytest
from jupyter_client.channels import AsyncZMQSocketChannel

from nninvert_lib import kernelpoll


class _Channel:
    """Stands in for a channel: its poll never sees the message that is there
    (a lost wake-up) until it is called again, like a fresh poll of the socket."""

    def __init__(self):
        self.calls: list[float | None] = []

    async def get_msg(self, timeout=None):
        self.calls.append(timeout)
        if len(self.calls) < 3:
            await asyncio.sleep(min(timeout, 0.01))
            raise Empty
        return {"msg": "reply"}


def _run(coro):
    return asyncio.run(coro)


def test_a_long_wait_is_polled_in_slices_and_returns_the_message():
    fake = _Channel()
    get_msg = kernelpoll._sliced(_Channel.get_msg, 0.01)
    assert _run(get_msg(fake, 600)) == {"msg": "reply"}
    assert fake.calls[:2] == [0.01, 0.01] and len(fake.calls) == 3


def test_the_overall_limit_still_raises_empty():
    class Never(_Channel):
        async def get_msg(self, timeout=None):
            self.calls.append(timeout)
            await asyncio.sleep(timeout)
            raise Empty

    fake = Never()
    get_msg = kernelpoll._sliced(Never.get_msg, 0.02)
    with pytest.raises(Empty):
        _run(get_msg(fake, 0.05))
    assert 2 <= len(fake.calls) <= 4 and max(fake.calls) <= 0.02


def test_install_and_the_context_manager_restore_the_original():
    original = AsyncZMQSocketChannel.get_msg
    with kernelpoll.sliced_channel_polls(1.0):
        assert AsyncZMQSocketChannel.get_msg is not original
        assert AsyncZMQSocketChannel.get_msg.__wrapped__ is original
    assert AsyncZMQSocketChannel.get_msg is original
    kernelpoll.install()
    kernelpoll.install()                      # idempotent: wraps the original once
    assert AsyncZMQSocketChannel.get_msg.__wrapped__ is original
    kernelpoll.uninstall()
    assert AsyncZMQSocketChannel.get_msg is original
    with pytest.raises(ValueError, match="slice_s"):
        kernelpoll.install(0)
