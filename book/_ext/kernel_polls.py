"""Sphinx glue: the book build waits for kernel messages in short slices.

As a Sphinx extension (``sphinx: local_extensions: {kernel_polls: book/_ext}`` in
``_config.yml``) it calls :func:`nninvert_lib.kernelpoll.install` before any
notebook is executed, so a lost wake-up of a kernel socket delays a cell by a
few seconds instead of holding it until the execution timeout (see that
module).
"""
from __future__ import annotations

from nninvert_lib.kernelpoll import install


def setup(app):
    install()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
