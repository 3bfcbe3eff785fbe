"""Exceptions shared by the whole library."""
from __future__ import annotations


class InversionError(ValueError):
    """Invalid input to an inversion: the message names the problem and what is valid.

    A *failed* inversion of valid input is not an exception; it comes back with
    ``converged=False`` in its :class:`~nninvert_lib.InversionResult`.
    """


class DataWarning(UserWarning):
    """The data in use is not the full MNIST (for example the 5,000-digit subset)."""


class CheckpointWarning(UserWarning):
    """A cached checkpoint could not be used and the model is being retrained."""


class InsufficientMemoryError(MemoryError):
    """A model would have to be trained here, and this machine's memory cannot hold the
    training (raised by :func:`~nninvert_lib.load_model` before training starts)."""
