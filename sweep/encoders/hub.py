"""The Hugging Face hub, where timm's and open_clip's pretrained weights live: whether it answers,
and its offline mode (cache only) for a load that must not retry in vain."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Put huggingface_hub in offline mode (cache only) for the duration, when asked."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the hub (HF_ENDPOINT, default huggingface.co) answers a TCP connect on 443."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
