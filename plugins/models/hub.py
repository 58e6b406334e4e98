"""Pretrained weights from the Hugging Face hub (timm's), asked for in bounded time: without
network, huggingface_hub retries each file with a backoff (about a minute, some 22 warning
lines) before it fails; here the hub is tried once, briefly, and when it cannot be reached the
weights are looked up in the local cache only, as ``HF_HUB_OFFLINE=1`` would."""

from __future__ import annotations

import logging
import os
import socket
from typing import Callable, TypeVar
from urllib.parse import urlsplit

from harness.errors import HarnessError, first_line

T = TypeVar("T")
PROBE_TIMEOUT = 3.0  # seconds the hub has to take a connection
PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def unreachable_hub() -> str | None:
    """Why the hub (``HF_ENDPOINT``, else huggingface.co) takes no connection, or None when it
    does, when offline mode is on already, or when a proxy is configured (a direct connection
    would not tell)."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or any(os.environ.get(name) for name in PROXIES):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except OSError as exc:
        return f"the Hugging Face hub at {host}:{port} cannot be reached: {exc.strerror or first_line(exc, 80)}"
    return None


def from_hub(load: Callable[[], T], what: str, advice: str) -> T:
    """``load()`` (a timm ``create_model(..., pretrained=True)``) with huggingface_hub's retry
    warnings held back and, where the hub cannot be reached, in offline mode; any failure is
    one line: ``cannot get pretrained weights of WHAT (why); ADVICE``."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    unreachable = unreachable_hub()
    hub_logger = logging.getLogger("huggingface_hub")
    level, offline = hub_logger.level, constants.HF_HUB_OFFLINE
    hub_logger.setLevel(logging.ERROR)
    if unreachable:
        constants.HF_HUB_OFFLINE = True  # the cache only (huggingface_hub reads it on every request)
    try:
        return load()
    except Exception as exc:
        missing = unreachable and isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled))
        why = f"{unreachable}, and they are not in the local cache" if missing else first_line(exc, 160)
        raise HarnessError(f"cannot get pretrained weights of {what} ({why}); {advice}") from None
    finally:
        hub_logger.setLevel(level)
        constants.HF_HUB_OFFLINE = offline
