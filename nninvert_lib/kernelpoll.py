"""Wait for Jupyter kernel messages in short slices, for headless notebook runs.

nbclient (used by papermill, Jupyter Book's execution and
:func:`nninvert_lib.assignments.grade_notebook`) waits for a cell's reply with a
single ``get_msg(timeout=<cell limit>)``: one asyncio poll of the kernel's shell
socket. Twice, while the test suite ran the chapters headless on a loaded
2-core machine, an ipywidgets explorer cell (chapters 5 and 7) sat until the
cell limit with the kernel idle and no output recorded. The likeliest cause is
a lost wake-up of the edge-triggered ZeroMQ socket (nbclient issue 312 reports
the same symptom with widgets). A fresh poll reads the socket's state again, so
waiting in slices of a few seconds turns such a loss into a few seconds' delay;
the overall limit is unchanged.

:func:`sliced_channel_polls` applies this to
``jupyter_client.channels.AsyncZMQSocketChannel.get_msg`` for the current
process, as a context manager or (``install()``) for good.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from queue import Empty
from time import monotonic

#: seconds of one poll while waiting for a kernel message
POLL_SLICE_S: float = 5.0

_ORIGINAL = None


def _sliced(original, slice_s: float):
    async def get_msg(self, timeout: float | None = None):
        if timeout is not None and timeout <= slice_s:
            return await original(self, timeout)
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = slice_s if deadline is None else deadline - monotonic()
            try:
                return await original(self, max(0.0, min(slice_s, left)))
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    get_msg.__wrapped__ = original
    return get_msg


def install(slice_s: float = POLL_SLICE_S) -> None:
    """Make every asynchronous kernel channel of this process poll in ``slice_s`` slices.

    Idempotent; :func:`uninstall` restores the original method.

    Raises:
        ValueError: ``slice_s <= 0``.
    """
    global _ORIGINAL
    if not slice_s > 0:
        raise ValueError(f"slice_s must be > 0 seconds, got {slice_s!r}")
    from jupyter_client.channels import AsyncZMQSocketChannel

    if _ORIGINAL is None:
        _ORIGINAL = AsyncZMQSocketChannel.get_msg
    AsyncZMQSocketChannel.get_msg = _sliced(_ORIGINAL, float(slice_s))


def uninstall() -> None:
    """Restore ``AsyncZMQSocketChannel.get_msg`` as it was before :func:`install`."""
    global _ORIGINAL
    if _ORIGINAL is None:
        return
    from jupyter_client.channels import AsyncZMQSocketChannel

    AsyncZMQSocketChannel.get_msg = _ORIGINAL
    _ORIGINAL = None


@contextlib.contextmanager
def sliced_channel_polls(slice_s: float = POLL_SLICE_S) -> Iterator[None]:
    """Within the block, kernel channels poll in ``slice_s`` slices (see the module
    docstring); what was installed before is restored afterwards."""
    global _ORIGINAL
    from jupyter_client.channels import AsyncZMQSocketChannel

    before, original_before = AsyncZMQSocketChannel.get_msg, _ORIGINAL
    install(slice_s)
    try:
        yield
    finally:
        AsyncZMQSocketChannel.get_msg, _ORIGINAL = before, original_before
