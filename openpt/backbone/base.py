"""Backbone interface and loading: a Hugging Face model + tokenizer behind one API."""
from __future__ import annotations

import functools
import inspect
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import progress
from ..device import resolve_device, weight_dtype
from ..errors import BackboneError, ConfigError
from ..registry import BACKBONES, UnknownNameError
from ..types import MaskOutputs
from .hub_access import cached_only, unreachable_reason
from .packing import MASK_IMPLEMENTATIONS, Packing, attention_implementation

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A pretrained LM wrapped so a template and verbalizer can use it.

    Masked LMs implement :meth:`mask_outputs` (LM logits of chosen tokens at the mask slots);
    seq2seq and causal LMs set :attr:`scores_words` and implement :meth:`word_outputs` (each
    label word's log-likelihood at the mask). Which one runs is the backbone's business: the
    same template, verbalizer and saved prompt work over any kind (see ``docs/backbones.md``).

    Args:
        model: the Hugging Face model.
        tokenizer: its fast tokenizer.
        name_or_path: where it was loaded from (recorded in saved prompts).
    """

    kind = "base"
    scores_words = False  # True: scores whole label words (word_outputs), not logits at a mask slot
    causal_attention = False  # True: tokens attend only backwards (what a packed row's mask must keep)

    def __init__(self, model: nn.Module, tokenizer: Any, name_or_path: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.checkpointing = False  # layers recompute in backward (set by openpt.model.checkpointing)
        self.prefix_attached = False  # deep-prompt prefixes are hooked into the attention layers (openpt.model.prefix)
        if not getattr(tokenizer, "is_fast", False):
            raise BackboneError(f"{name_or_path}: openpt needs a fast tokenizer, got {type(tokenizer).__name__}")

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.input_embeddings().weight.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.input_embeddings().weight.shape[0]

    @property
    def mask_token_id(self) -> int:
        """The id a template writes at ``[MASK]`` slots."""
        raise NotImplementedError

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def signature(self) -> dict[str, Any]:
        """What a saved prompt records about the backbone it was trained on."""
        return {
            "kind": self.kind,
            "name_or_path": self.name_or_path,
            "model_type": self.config.model_type,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
        }

    def freeze(self) -> None:
        """Turn off gradients of every backbone weight."""
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def mask_outputs(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, mask_positions: torch.Tensor, token_ids: torch.Tensor,
        *, lengths: Sequence[int] | None = None,
    ) -> MaskOutputs:
        """LM logits of ``token_ids`` ``[B, M, W]`` and hidden states ``[B, M, H]`` at the masks;
        with ``lengths`` (real tokens per row), from one packed forward (:mod:`.packing`)."""
        raise NotImplementedError

    def word_outputs(
        self, inputs_embeds: torch.Tensor, batch: Any, words: Sequence[Sequence[int]], *, max_new_tokens: int = 0,
        pack: bool = False,
    ) -> MaskOutputs:
        """For backbones with :attr:`scores_words`: log-likelihoods ``[B, N]`` of the ``N`` words
        (token-id lists) at the mask, or, with ``max_new_tokens``, greedy tokens generated there;
        ``pack``: every forward runs on packed rows (:mod:`.packing`)."""
        raise NotImplementedError(f"{type(self).__name__} reads logits at mask slots; use mask_outputs")

    def special_frame(self) -> tuple[list[int], list[int]]:
        """Special token ids the template puts before and after the text (the tokenizer's own)."""
        from .tokens import special_token_frame

        return special_token_frame(self.tokenizer)

    def check_template(self, template: Any) -> None:
        """Raise :class:`~openpt.errors.SpecError` if this backbone cannot score ``template``."""

    def position_offset(self) -> int:
        """The position id of a sequence's first token when the model numbers them itself
        (RoBERTa and its clones: ``padding_idx + 1``; others: 0)."""
        embeddings = getattr(self.model.base_model, "embeddings", None)
        if embeddings is not None and hasattr(embeddings, "create_position_ids_from_inputs_embeds"):
            return int(embeddings.padding_idx) + 1
        return 0

    def packing_module(self) -> nn.Module:
        """The module whose input rows packing lays out (the encoder for seq2seq backbones)."""
        return self.model.base_model

    def packed_forward(self, module: nn.Module, inputs_embeds: torch.Tensor, packing: Packing, **kwargs: Any) -> Any:
        """``module`` (the model or its base) on ``inputs_embeds [B, L, H]`` packed into ``[R, C, H]``
        rows: block-diagonal (block-causal) attention mask, position ids restarting per sequence
        (for a module that takes none, e.g. T5's relative positions, the mask alone)."""
        packed = packing.pack(inputs_embeds)
        mask = packing.attention_mask(causal=self.causal_attention, implementation=attention_implementation(self.model),
                                      dtype=packed.dtype)
        if takes_position_ids(module):
            kwargs["position_ids"] = packing.positions + self.position_offset()
        return module(inputs_embeds=packed, attention_mask=mask, **kwargs)

    def check_packing(self) -> None:
        """Refuse packing (:class:`BackboneError`) unless a packed forward of a small random batch
        gives the padded forward's hidden states (checked once per backbone)."""
        if getattr(self, "_packing_checked", False):
            return
        name = type(self.model).__name__
        implementation = attention_implementation(self.model)
        if implementation not in MASK_IMPLEMENTATIONS:
            raise BackboneError(f"{self.name_or_path}: packing needs the sdpa or eager attention implementation, {name} runs "
                                f"{implementation!r}; set backbone_options.attn_implementation: sdpa, or turn prompt.packing off")
        base = self.packing_module()
        weight = self.input_embeddings().weight
        lengths = [5, 2, 3]
        generator = torch.Generator().manual_seed(0)
        embeds = (torch.randn(len(lengths), max(lengths), weight.shape[1], generator=generator) * weight.detach().float().std().cpu())
        embeds = embeds.to(device=weight.device, dtype=weight.dtype)
        attention = (torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)).long().to(weight.device)
        packing = Packing.plan(lengths, max(lengths), weight.device)
        with torch.no_grad():
            padded = base(inputs_embeds=embeds, attention_mask=attention).last_hidden_state.float()
            packed = self.packed_forward(base, embeds, packing).last_hidden_state.float()
        unpacked = packing.unpack(packed, max(lengths))
        real = attention.bool()
        scale = padded[real].abs().max().clamp(min=1.0)
        tolerance = 1e-3 if weight.dtype == torch.float32 else 5e-2
        difference = float(((unpacked - padded)[real].abs().max() / scale))
        logger.debug("packing check of %s: relative difference %.3g (tolerance %g)", self.name_or_path, difference, tolerance)
        if not difference <= tolerance:
            why = "a 4-D attention mask or position ids" if takes_position_ids(base) else "a 4-D attention mask, and it takes no position ids"
            raise BackboneError(f"{self.name_or_path}: {name} gives other hidden states for a packed batch than for the same "
                                f"sequences padded (relative difference {difference:.2g}): it does not honour {why}; "
                                "turn prompt.packing off")
        self._packing_checked = True


def takes_position_ids(module: nn.Module) -> bool:
    """Whether ``module``'s class takes ``position_ids`` in ``forward``."""
    return "position_ids" in forward_parameters(type(module))


def cache_argument(module_class: type) -> str:
    """The name under which ``module_class.forward`` takes a key/value cache (``cache`` since
    transformers 5.2x, ``past_key_values`` before)."""
    return "cache" if "cache" in forward_parameters(module_class) else "past_key_values"


@functools.lru_cache(maxsize=None)
def forward_parameters(module_class: type) -> frozenset[str]:
    """The parameter names of ``module_class.forward`` (read once per class: every forward may ask)."""
    return frozenset(inspect.signature(module_class.forward).parameters)


def detect_kind(config: Any) -> str:
    """Backbone kind for a Hugging Face config: ``seq2seq``, ``mlm`` or ``causal``."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    model_type = config.model_type
    if getattr(config, "is_encoder_decoder", False) and model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise BackboneError(
        f"unsupported backbone type {model_type!r}: it has no masked-LM, seq2seq or causal-LM head in transformers"
    )


FROM_PRETRAINED_OPTIONS = ("attn_implementation", "device_map", "low_cpu_mem_usage")


def _from_pretrained(what: str, name: str, load: Any) -> Any:
    """``load()``, with any failure to read the files as one :class:`BackboneError` line.

    transformers and torch raise many types for unreadable files (OSError, ValueError,
    SafetensorError, an ``UnpicklingError`` for a pickle that holds more than tensors, which is
    never unpickled); the full traceback is logged at DEBUG level.
    """
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not progress.shown():  # transformers' "Loading weights" bar follows openpt's: off when not a terminal or --no-progress
        hf_logging.disable_progress_bar()
    try:
        return load()
    except Exception as exc:  # noqa: BLE001  a boundary: third-party load errors become one line
        logger.debug("loading the %s of %s failed", what, name, exc_info=True)
        if any(c.__name__ == "PickleError" for c in type(exc).__mro__):
            raise BackboneError(f"{name}: the {what} file is a pickle holding more than tensors; openpt never unpickles "
                                "code: save the model with safetensors (save_pretrained(..., safe_serialization=True))") from None
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"cannot load the {what} of {name}: {first_line}") from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def load_backbone(name_or_path: str | Path, *, kind: str | None = None, dtype: torch.dtype | str | None = None,
                  device: str | torch.device | None = None, **options: Any) -> Backbone:
    """Load a model and its tokenizer from a local directory (or a hub name where a hub is reachable).

    Args:
        name_or_path: model directory or hub name.
        kind: ``mlm``, ``seq2seq`` or ``causal``; detected from the config when ``None``.
        dtype: optional weight dtype (``torch.bfloat16`` or ``"bfloat16"``, ...; a frozen large
            backbone fits in half the memory).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (see :mod:`openpt.device`);
            default: :func:`openpt.device.default_device` (the CPU unless set).
        options: passed to ``from_pretrained``: ``attn_implementation`` (e.g. ``sdpa``),
            ``device_map`` (e.g. ``auto`` for a model larger than one GPU; ``device`` is then
            ignored) and ``low_cpu_mem_usage``.

    Raises:
        BackboneError: missing directory, unreadable config or unsupported model type.
        ConfigError: a bad device or dtype name, a device this machine lacks, an unknown option.
    """
    unknown = sorted(set(options) - set(FROM_PRETRAINED_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; expected some of {list(FROM_PRETRAINED_OPTIONS)}", key="backbone_options")
    target = resolve_device(device)
    dtype = weight_dtype(dtype) if isinstance(dtype, str) else dtype
    from transformers import AutoConfig, AutoTokenizer

    name = str(name_or_path)
    looks_local = Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not Path(name).expanduser().is_dir():
        raise BackboneError(f"backbone directory not found: {name}")
    config_file = Path(name).expanduser() / "config.json"
    if looks_local:
        if not config_file.is_file():
            raise BackboneError(f"{config_file}: not found (is {name} a model directory?)")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise BackboneError(f"{config_file}: invalid JSON ({exc})") from None
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        if model_type not in CONFIG_MAPPING_NAMES:
            raise BackboneError(f"{config_file}: unknown backbone type model_type={model_type!r}; transformers does not know it")
    reason = None if looks_local else unreachable_reason(name)
    local_only = {"local_files_only": True} if reason else {}  # no hub: the cache only, no retries
    try:
        config = cached_only(name, reason, lambda: AutoConfig.from_pretrained(name, **local_only)) if reason else AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"cannot load backbone config from {name}: {first_line}") from None
    kind = kind or detect_kind(config)
    try:
        backbone_cls = BACKBONES.get(kind)
    except UnknownNameError as exc:
        raise BackboneError(str(exc)) from None
    tokenizer = _from_pretrained("tokenizer", name, lambda: AutoTokenizer.from_pretrained(name, **local_only))
    kwargs = {key: value for key, value in options.items() if value is not None} | local_only
    if dtype is not None:
        kwargs["dtype"] = dtype
    auto = backbone_cls.auto_class()
    model = _from_pretrained("weights", name, lambda: auto.from_pretrained(name, **kwargs))
    if kwargs.get("device_map") is None:
        model.to(target)
    model.eval()
    logger.info("loaded %s backbone %s (%s)", kind, name, config.model_type)
    return backbone_cls(model, tokenizer, name)
