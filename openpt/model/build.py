"""Assembling a PromptModel from specs: template, verbalizer, backbone and options."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbone.base import Backbone
from ..backbone.tokens import special_like_ids
from ..device import autocast_dtype, resolve_device
from ..errors import ConfigError, SpecError, brief
from ..registry import TEMPLATES, UnknownNameError
from ..spec import YamlMap, as_map, check_keys, load_yaml
from ..template.ptuning import PromptEncoder, PromptEncoderConfig
from ..template.regularization import PromptRegularization, options_dataclass
from ..template.soft import SoftInit, corpus_vocab_ranking, cycle, label_word_rows, vocab_pool, vocab_sample
from ..template.spec import TemplateSpec, load_template_spec, template_spec_from_mapping, template_spec_from_text
from ..template.template import Template
from ..verbalizer import load_verbalizer, verbalizer_from_mapping
from ..verbalizer.base import Verbalizer
from ..verbalizer.generation import GenerationVerbalizer  # noqa: F401  registers the 'generation' type
from .compiling import CompileConfig, compile_layers
from .openprompt_files import (FILE_KEYS, TEMPLATE_SUFFIXES, VERBALIZER_SUFFIXES, looks_like_template, openprompt_template,
                               openprompt_verbalizer)
from .prefix import PrefixConfig
from .prefix_sides import build_prefixes, prefixes
from .generation import PromptForGeneration
from .prompt_model import PromptModel

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class PromptOptions:
    """Options of the prompt itself (saved with it).

    Attributes:
        max_length: maximum sequence length, special tokens included.
        soft_init: soft-token initialisation settings (see :class:`SoftInit`).
        freeze_backbone: prompt-only training when true.
        regularization: prompt dropout / L2 (see :class:`~openpt.template.regularization.PromptRegularization`).
        soft_encoder: P-tuning prompt encoder (see :class:`~openpt.template.ptuning.PromptEncoderConfig`);
            empty: plain soft prompt.
        prefix: deep-prompt key/value prefixes (see :class:`~openpt.model.prefix.PrefixConfig`); empty: none.
        precision: ``fp32``, or ``bf16`` / ``fp16`` to run the backbone's forward (and backward) under
            autocast on the model's device (fp16 trains with a gradient scaler); prompt parameters,
            verbalizer, calibration and loss stay in float32.
        packing: run the backbone on packed rows: several sequences per row, block-diagonal
            attention, rows one to two times as wide as the batch's longest sequence (masked and
            causal LMs, and T5's encoder, with ``sdpa`` or ``eager`` attention; see
            :mod:`openpt.backbone.packing`). The same scores up to float rounding, with less
            compute spent on padding.
        compile: ``torch.compile`` the backbone's repeated layers: ``true``, an inductor mode
            (``default``, ``reduce-overhead``, ...) or ``{mode, backend}`` (see
            :mod:`openpt.model.compiling`). Compiles once per layer class, for every sequence length.
    """

    max_length: int = 128
    soft_init: dict[str, Any] = field(default_factory=dict)
    freeze_backbone: bool = True
    regularization: dict[str, Any] = field(default_factory=dict)
    soft_encoder: dict[str, Any] = field(default_factory=dict)
    prefix: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    packing: bool = False
    compile: bool | str | dict[str, Any] = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_length, int) or isinstance(self.max_length, bool) or self.max_length < 1:
            raise ConfigError(f"expected a positive number of tokens, got {brief(self.max_length)}", key="prompt.max_length")
        autocast_dtype(self.precision)
        if not isinstance(self.packing, bool):
            raise ConfigError(f"expected true or false, got {brief(self.packing)}", key="prompt.packing")
        CompileConfig.from_value(self.compile)
        if self.prefix:
            try:
                PrefixConfig.from_options(self.prefix)
            except ConfigError as exc:
                raise ConfigError(exc.problem, key=f"prompt.{exc.key}") from None


def resolve_path(value: str, base_dir: Path | None) -> Path:
    """A path relative to ``base_dir`` (the config file's directory) unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else base_dir / path


def template_spec(value: Any, *, base_dir: Path | None = None, file: str | None = None, line: int | None = None) -> TemplateSpec:
    """A template from a file path (``*.yaml``: a template spec; an OpenPrompt ``*.txt``: its first line,
    or line N with ``{file: templates.txt, choice: N}``, see :mod:`.openprompt_files`; any other file: its
    template text), inline template text, or an inline mapping. A value that looks like a path (no
    spaces, brackets or braces) but names no file is a "file not found" error, not template text."""
    if isinstance(value, TemplateSpec):
        return value
    if isinstance(value, str):
        if value.endswith(YAML_SUFFIXES):
            return load_template_spec(resolve_path(value, base_dir))
        path = resolve_path(value, base_dir) if looks_like_path(value) else None
        if path is not None and path.suffix in TEMPLATE_SUFFIXES and path.is_file():
            return openprompt_template(path)
        if path is not None and path.is_file():
            return template_text_file(path)
        if path is not None:
            raise SpecError("file not found", file=path, line=None, key="template")
        return template_spec_from_text(value)
    mapping = as_map(value, where="template", file=file, line=line)
    if "file" in mapping:  # an OpenPrompt template file: {file: templates.txt, choice: 1}
        check_keys(mapping, FILE_KEYS[:2], prefix="template.")
        return openprompt_template(resolve_path(str(mapping["file"]), base_dir), mapping.get("choice", 0))
    return template_spec_from_mapping(mapping)


def looks_like_path(value: str) -> bool:
    """A file name rather than template text: no whitespace, brackets or braces, and a suffix or a slash."""
    return bool(value) and not any(ch in value for ch in " \t\n[]{}") and ("/" in value or bool(Path(value).suffix))


def template_text_file(path: Path) -> TemplateSpec:
    """A template from a text file holding template text (errors name the file)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read ({type(exc).__name__})", file=path, key="template") from None
    looks_like_template(text, path)
    try:
        return template_spec_from_text(text)
    except SpecError as exc:
        raise exc.located(file=path) from None


def verbalizer_spec(value: Any, *, base_dir: Path | None = None, file: str | None = None, line: int | None = None) -> Verbalizer | None:
    """A verbalizer from a file path (``*.yaml``; OpenPrompt ``*.txt``/``*.csv``/``*.json``) or an inline mapping
    (``{file: words.txt, choice: N, labels: [...]}``: see :mod:`.openprompt_files`); ``None`` for none (generation)."""
    if value is None or isinstance(value, Verbalizer):
        return value
    if isinstance(value, str):
        if value.endswith(VERBALIZER_SUFFIXES):
            return openprompt_verbalizer(resolve_path(value, base_dir))
        if not value.endswith(YAML_SUFFIXES):
            raise SpecError(f"expected a .yaml file, an OpenPrompt verbalizer file ({', '.join(VERBALIZER_SUFFIXES)}) or a mapping, "
                            f"got {value!r}", file=file, line=line, key="verbalizer")
        return load_verbalizer(resolve_path(value, base_dir))
    if isinstance(value, dict) and "file" in value:  # an OpenPrompt verbalizer file: {file: words.txt, choice: 0, labels: [...]}
        mapping = as_map(value, where="verbalizer", file=file, line=line)
        check_keys(mapping, FILE_KEYS, prefix="verbalizer.")
        return openprompt_verbalizer(resolve_path(str(mapping["file"]), base_dir), mapping.get("choice", 0), mapping.get("labels"))
    return verbalizer_from_mapping(value, file=file, line=line)


def template_class(spec: TemplateSpec) -> type[Template]:
    kind = spec.type
    try:
        return TEMPLATES.get(kind)
    except UnknownNameError as exc:
        raise SpecError(str(exc), file=getattr(spec, "source", None), key="type") from None


def build_model(
    backbone: Backbone,
    template: TemplateSpec,
    verbalizer: Verbalizer | None,
    options: PromptOptions | None = None,
    *,
    seed: int = 0,
    corpus: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    task: Any = None,
) -> PromptModel:
    """Bind ``template`` and ``verbalizer`` to ``backbone`` and wrap them in a :class:`PromptModel`, or,
    for a template ending in ``{target}`` (``verbalizer`` ``None``), a :class:`~openpt.model.generation.PromptForGeneration`.

    ``corpus``: unlabeled texts (e.g. the training inputs) whose token counts rank the vocabulary
    for ``vocab_sample`` initialisation (see :mod:`openpt.template.soft`). ``device``: where the
    model computes (``auto``, ``cpu``, ``cuda:N``, ...); default: the backbone's device. Prompt
    parts are built on the CPU (the same initial values everywhere) and then moved. ``task``: the
    :class:`~openpt.tasks.TaskType` the model is trained and scored as (default classification).
    """
    options = options or PromptOptions()
    check_reads_input(template)
    check_max_length(options.max_length, backbone)
    soft_init = soft_init_from(options.soft_init, template)
    bound = template_class(template)(
        template,
        backbone.tokenizer,
        backbone.input_embeddings(),
        mask_token_id=backbone.mask_token_id,
        max_length=options.max_length,
        soft_init=provisional_init(soft_init),
        seed=seed,
        special_frame=backbone.special_frame(),
    )
    if template.has_target:  # a generation template: the model produces the {target} text
        if verbalizer is not None:
            raise ConfigError("a generation template ({target} at its end) takes no verbalizer", key="verbalizer")
        model: PromptModel | PromptForGeneration = PromptForGeneration(backbone, bound, freeze_backbone=options.freeze_backbone)
    elif verbalizer is None:
        raise ConfigError("a classification template ([MASK]) needs a verbalizer", key="verbalizer")
    else:
        if task is not None:  # a task may score through its own form of the verbalizer (multi-label: per-label sigmoid)
            task, verbalizer = task.bind(template, verbalizer)
        model = PromptModel(backbone, bound, verbalizer, freeze_backbone=options.freeze_backbone)
    model.task = task
    model.options = options
    model.autocast_dtype = autocast_dtype(options.precision)
    configure_prompt(model, options, soft_init, seed=seed, corpus=corpus)
    if options.packing:
        enable_packing(model)
    compile_config = CompileConfig.from_value(options.compile)
    if compile_config is not None:
        compile_layers(backbone.model, compile_config)
    return model.place(resolve_device(device) if device is not None else None)


def check_reads_input(template: TemplateSpec) -> None:
    """A template must place some input (``{text}``, ``{text_b}``, a data field): without one every example
    would look the same to the model and get the same prediction."""
    if not template.fields:
        from ..template.parser import format_template

        named = template.name or brief(format_template(template.segments), 60)
        raise SpecError(f"template {named} has no input placeholder such as {{text}}: every example would get the same prediction",
                        file=template.source, key="template")


def enable_packing(model: PromptModel) -> None:
    """Turn packing on, after checking the backbone computes packed rows right (see :mod:`openpt.backbone.packing`)."""
    regularizer = getattr(model.prefix, "regularizer", None)
    if regularizer is not None and (regularizer.dropout or regularizer.token_dropout):
        raise ConfigError("prefix dropout draws a mask per example, and a packed row holds several examples; "
                          "turn prompt.packing or the prefix's prompt dropout off", key="prompt.packing")
    if model.prefix is not None and model.backbone.kind == "seq2seq":
        raise ConfigError("packing moves a sequence away from the start of its row, and T5's relative position bias would "
                          "then place the prefix at another distance; turn prompt.packing or prompt.prefix off", key="prompt.packing")
    model.backbone.check_packing()
    model.packing = True


def position_limit(backbone: Backbone) -> int | None:
    """The longest input the backbone has position embeddings for (``None``: no such limit, e.g. T5)."""
    limits = [getattr(backbone.config, "max_position_embeddings", None), getattr(backbone.tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers without a limit say 10**30
    return min(limits) if limits else None


def check_max_length(max_length: int, backbone: Backbone) -> None:
    """Refuse a ``max_length`` beyond the backbone's positions (inputs that long fail or wrap around)."""
    limit = position_limit(backbone)
    if limit is not None and max_length > limit:
        raise ConfigError(f"{max_length} tokens is more than {backbone.name_or_path} has positions for ({limit})",
                          key="prompt.max_length")


def provisional_init(init: SoftInit) -> SoftInit:
    """The init the template starts with: label words and corpus ranks are applied by :func:`configure_prompt`."""
    strategy = "vocab_sample" if init.strategy == "label_words" else init.strategy
    return dataclasses.replace(init, strategy=strategy, vocab_order="auto")


def configure_prompt(model: PromptModel, options: PromptOptions, soft_init: SoftInit, *, seed: int = 0,
                     corpus: Sequence[str] | None = None) -> None:
    """Corpus-ranked / label-word soft init, regularisation, P-tuning encoder and prefixes."""
    backbone, soft = model.backbone, model.template.soft
    regularizer = PromptRegularization.from_options(options.regularization)
    specials = special_like_ids(backbone.tokenizer)
    ranking = corpus_vocab_ranking(backbone.tokenizer, corpus) if corpus is not None else None
    if soft is None and options.soft_encoder:
        raise ConfigError("a soft_encoder needs [SOFT] tokens in the template", key="prompt.soft_encoder")
    if soft is not None:
        if soft_init.strategy == "label_words" and model.verbalizer is None:
            raise ConfigError("label_words initialisation needs a verbalizer's label words; a generation prompt has none",
                              key="soft_init.strategy")
        if soft_init.strategy == "label_words" or (soft_init.strategy == "vocab_sample" and (ranking is not None or soft_init.vocab_order == "corpus")):
            label_words = label_word_rows(model.verbalizer, backbone.tokenizer, model.template.mask_spaces)
            soft.reset(backbone.input_embeddings().weight.detach(), soft_init, seed=seed, label_word_ids=label_words,
                       special_ids=specials, text_ids=model.template._text_ids, vocab_ranking=ranking)
        soft.regularizer = regularizer
        if options.soft_encoder:
            soft.set_encoder(PromptEncoder(PromptEncoderConfig.from_options(options.soft_encoder), backbone.hidden_size, seed=seed))
    if options.prefix:
        config = PrefixConfig.from_options(options.prefix)
        init = dataclasses.replace(soft_init, strategy="text", text=config.init_text) if config.init_text else soft_init
        build_prefixes(model, config, backbone, lambda length: prefix_token_ids(init, length, backbone, specials, ranking, seed=seed),
                       seed=seed, generation=isinstance(model, PromptForGeneration))
        for prefix in prefixes(model):
            prefix.regularizer = regularizer


def prefix_token_ids(init: SoftInit, length: int, backbone: Backbone, specials: Sequence[int], ranking: Sequence[int] | None,
                     *, seed: int = 0) -> list[int]:
    """Tokens whose activations start a prefix: ``init.text`` cycled, else a vocabulary sample."""
    if not length:
        return []
    if init.strategy == "text" and init.text:
        return cycle(backbone.tokenizer(init.text, add_special_tokens=False)["input_ids"], length)
    pool, _ = vocab_pool(backbone.vocab_size, init, specials, ranking)
    return vocab_sample(pool, length, torch.Generator().manual_seed(init.seed if init.seed is not None else seed))


def soft_init_from(values: dict[str, Any], template: TemplateSpec) -> SoftInit:
    """Soft-init settings: the template's ``soft_init`` mapping, overridden by ``values``."""
    merged = {**dict(template.options.get("soft_init") or {}), **dict(values or {})}
    allowed = {"strategy", "init_range", "vocab_top", "text", "seed", "vocab_order"}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise SpecError(f"unknown key(s) {brief(unknown)}; expected some of {sorted(allowed)}", file=getattr(template, "source", None), key="soft_init")
    try:
        return options_dataclass(SoftInit, merged, "soft_init")
    except SpecError as exc:
        raise exc.located(file=getattr(template, "source", None)) from None


def load_spec_file(path: str | Path) -> YamlMap:
    data = load_yaml(path)
    if not isinstance(data, YamlMap):
        raise SpecError("expected a mapping at the top level", file=path)
    return data
