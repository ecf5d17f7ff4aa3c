"""Whether a backbone given by hub name may be looked up online, decided once and at once.

transformers retries an unreachable hub for every file it needs (config, tokenizer, weights),
which on a machine without network makes a bad name take minutes to fail. Before a hub name is
loaded, openpt asks once: with ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, or when a
single lookup cannot reach the hub, every file is read from the local cache only
(``local_files_only=True``), and a model missing there is one :class:`BackboneError` line.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from ..errors import BackboneError

logger = logging.getLogger(__name__)

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
LOOKUP_TIMEOUT = 10.0  # seconds for the one lookup


def offline_variable() -> str | None:
    """The variable that turns the hub off (``HF_HUB_OFFLINE=1``), if one is set."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return variable
    return None


def unreachable_reason(name: str, lookup: Callable[[str], Any] | None = None) -> str | None:
    """Why ``name`` cannot be looked up on the hub (offline setting or a failed first lookup); ``None`` when it can.

    ``lookup``: the one request (default: ``HfApi().model_info`` with a short timeout, no retries).
    An HTTP answer (not found, gated) means the hub is reachable: loading then reports it.
    """
    variable = offline_variable()
    if variable is not None:
        return f"{variable} is set"
    if lookup is None:
        from huggingface_hub import HfApi

        lookup = lambda repo: HfApi().model_info(repo, timeout=LOOKUP_TIMEOUT)  # noqa: E731
    try:
        lookup(name)
    except Exception as exc:  # noqa: BLE001  any failure to connect; an HTTP error answer is a reachable hub
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError

        if isinstance(exc, (HfHubHTTPError, HFValidationError)):
            return None
        logger.debug("hub lookup of %s failed", name, exc_info=True)
        text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        return f"the hub could not be reached ({text})"
    return None


def cached_only(name: str, reason: str, load: Callable[[], Any]) -> Any:
    """``load()`` (which reads with ``local_files_only=True``), or one line saying the model is not cached."""
    try:
        return load()
    except (OSError, ValueError):
        raise BackboneError(f"{name}: not a local model directory and not in the Hugging Face cache, and {reason}; "
                            "give a model directory, or download it where the hub is reachable") from None
