"""The ``from_pretrained`` conventions: ``PromptModel.save_pretrained`` / ``from_pretrained`` / ``push_to_hub``.

A prompt directory is what :func:`~openpt.model.saving.save_prompt` writes (``prompt_config.json``
+ ``prompt.safetensors``, trainable tensors only); ``from_pretrained`` loads the backbone from
the name or path recorded in it unless one is given. ``push_to_hub`` writes the directory to a
temporary folder and uploads it as one commit with ``huggingface_hub``; when the Hub cannot be
reached (offline mode, no network) it raises one :class:`OpenPTError` line and uploads nothing.

This module binds those methods onto :class:`PromptModel` (which cannot import the saving code
that itself builds PromptModels); :mod:`openpt.model` imports it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
import torch

from ..backbone.base import Backbone, load_backbone
from ..errors import OpenPTError
from .parts import PromptParts
from .prompt_model import PromptModel
from .saving import load_prompt, read_prompt_config, save_prompt


def save_pretrained(model: PromptModel, directory: str | Path) -> Path:
    """Save ``model``'s prompt to ``directory`` (see :func:`save_prompt`)."""
    return save_prompt(model, directory)


def from_pretrained(directory: str | Path, backbone: Backbone | str | Path | None = None,
                    device: str | torch.device | None = None) -> PromptModel:
    """Load a saved prompt onto ``backbone`` (a :class:`Backbone`, a name or a path; default: the recorded one)."""
    if isinstance(backbone, (str, Path)):
        backbone = load_backbone(backbone, kind=read_prompt_config(directory)["backbone"]["kind"], device=device)
    return load_prompt(directory, backbone, device=device)


def push_to_hub(model: PromptModel, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload openpt prompt", endpoint: str | None = None) -> str:
    """Upload ``model``'s prompt directory to the Hub repository ``repo_id``; returns the commit URL.

    Raises:
        OpenPTError: the Hub is unreachable or refused the upload (nothing is uploaded then, and
            no local file is left behind).
    """
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise OpenPTError("push_to_hub needs the huggingface_hub package (pip install huggingface_hub)") from None
    if constants.HF_HUB_OFFLINE:
        raise OpenPTError(f"push_to_hub {repo_id}: the Hugging Face Hub is not reachable (offline mode, HF_HUB_OFFLINE=1); nothing was uploaded")
    api = huggingface_hub.HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="openpt-push-") as tmp:
        save_prompt(model, tmp)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)
        except Exception as exc:  # noqa: BLE001  network and HTTP errors of every kind become one line
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise OpenPTError(f"push_to_hub {repo_id}: the Hugging Face Hub is not reachable or refused the upload "
                              f"({type(exc).__name__}: {reason}); nothing was uploaded") from None
    return str(getattr(info, "commit_url", info))


class HubMethods:
    """What :class:`PromptModel`'s ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` call."""

    save = staticmethod(save_pretrained)
    load = staticmethod(from_pretrained)
    push = staticmethod(push_to_hub)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


PromptParts.hub_methods = HubMethods()  # PromptModel and PromptForGeneration
