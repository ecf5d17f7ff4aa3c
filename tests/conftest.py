"""Shared pytest fixtures: tiny random backbones built offline from configs.

Every ``tiny_*_dir`` fixture builds a randomly initialised model (hidden size 32,
2 layers, seeded with ``torch.manual_seed(0)``) plus a real fast tokenizer made
from the vocabulary files in ``tests/assets`` (regenerate them with
``python tests/assets/make_assets.py``), saves both with ``save_pretrained`` and
returns the directory, so ``AutoTokenizer.from_pretrained(path)`` and
``AutoModelFor*.from_pretrained(path)`` work without network access.

Fixtures:
    tiny_bert_dir     BertForMaskedLM (tied embeddings), WordPiece, [MASK]
    tiny_roberta_dir  RobertaForMaskedLM, byte-level BPE, <mask>, pad id 1
    tiny_t5_dir       T5ForConditionalGeneration, Unigram, <extra_id_0..9>
    tiny_bart_dir     BartForConditionalGeneration, byte-level BPE, <mask>
    tiny_gpt2_dir     GPT2LMHeadModel, byte-level BPE, pad = eos
    tiny_llama_dir    LlamaForCausalLM, metaspace BPE with byte fallback, pad = eos
    tiny_mlm_dir      parametrized over bert and roberta
    tiny_backbone_factory  ``build(kind, directory) -> Path`` for fresh builds
    shared_dir, minilm_dir real assets in ``../shared`` (``OPENPT_SHARED``)
    test_device       (autouse) ``OPENPT_TEST_DEVICE=cuda`` (or ``cuda:N``, ``mps``) makes
                      ``load_backbone`` place every backbone there, so the same tests check
                      placement on that device; unset: the CPU
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

# Before importing transformers / huggingface_hub: they read these at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if TYPE_CHECKING:
    from tokenizers import AddedToken
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

torch.set_num_threads(2)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(__file__).resolve().parent / "assets"
SEED = 0
MAX_LENGTH = 512  # tokenizer model_max_length; position tables are sized for it

TINY_KINDS: tuple[str, ...] = ("bert", "roberta", "t5", "bart", "gpt2", "llama")
MLM_KINDS: tuple[str, ...] = ("bert", "roberta")

# Shared by all tiny configs: hidden 32, 2 layers, 4 heads, FFN 37.
HIDDEN = 32
LAYERS = 2
HEADS = 4
FFN = 37


def _read_vocab_txt(path: Path) -> dict[str, int]:
    return {token: i for i, token in enumerate(path.read_text(encoding="utf-8").splitlines())}


def _read_bpe(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return vocab, merges  # type: ignore[return-value]


def _mask(token: str) -> AddedToken:
    # As in roberta-base / bart-base: "It was <mask>" keeps the space out of the mask.
    from tokenizers import AddedToken

    return AddedToken(token, lstrip=True, rstrip=False, normalized=False, special=True)


def build_tokenizer(kind: str) -> PreTrainedTokenizerBase:
    """Fast tokenizer for ``kind`` from the files in ``tests/assets``."""
    from transformers import (
        BartTokenizerFast,
        BertTokenizerFast,
        GPT2TokenizerFast,
        LlamaTokenizerFast,
        RobertaTokenizerFast,
        T5TokenizerFast,
    )

    common = {"model_max_length": MAX_LENGTH}
    if kind == "bert":
        return BertTokenizerFast(vocab=_read_vocab_txt(ASSETS / "bert" / "vocab.txt"), do_lower_case=True, **common)
    if kind in ("roberta", "bart"):
        vocab, merges = _read_bpe(ASSETS / "roberta")
        cls = RobertaTokenizerFast if kind == "roberta" else BartTokenizerFast
        return cls(vocab=vocab, merges=merges, mask_token=_mask("<mask>"), **common)
    if kind == "gpt2":
        vocab, merges = _read_bpe(ASSETS / "gpt2")
        return GPT2TokenizerFast(vocab=vocab, merges=merges, pad_token="<|endoftext|>", **common)
    if kind == "t5":
        return T5TokenizerFast(tokenizer_file=str(ASSETS / "t5" / "tokenizer.json"), extra_ids=10, **common)
    if kind == "llama":
        return LlamaTokenizerFast(tokenizer_file=str(ASSETS / "llama" / "tokenizer.json"), pad_token="</s>", **common)
    raise KeyError(f"unknown tiny backbone {kind!r}; expected one of {TINY_KINDS}")


def build_config(kind: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedConfig:
    """Tiny config whose vocabulary and special ids match ``tokenizer``."""
    from transformers import BartConfig, BertConfig, GPT2Config, LlamaConfig, RobertaConfig, T5Config

    vocab_size = len(tokenizer)
    pad, bos, eos = tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    if kind == "bert":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=MAX_LENGTH,
            type_vocab_size=2,
            pad_token_id=pad,
            tie_word_embeddings=True,
        )
    if kind == "roberta":
        return RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            # positions start at pad_token_id + 1, so the table needs 2 extra rows
            max_position_embeddings=MAX_LENGTH + 2,
            type_vocab_size=1,
            pad_token_id=pad,
            bos_token_id=bos,
            eos_token_id=eos,
            tie_word_embeddings=True,
        )
    if kind == "t5":
        return T5Config(
            vocab_size=vocab_size,
            d_model=HIDDEN,
            d_kv=HIDDEN // HEADS,
            d_ff=FFN,
            num_layers=LAYERS,
            num_decoder_layers=LAYERS,
            num_heads=HEADS,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="relu",
            pad_token_id=pad,
            eos_token_id=eos,
            decoder_start_token_id=pad,
            tie_word_embeddings=True,
        )
    if kind == "bart":
        return BartConfig(
            vocab_size=vocab_size,
            d_model=HIDDEN,
            encoder_layers=LAYERS,
            decoder_layers=LAYERS,
            encoder_attention_heads=HEADS,
            decoder_attention_heads=HEADS,
            encoder_ffn_dim=FFN,
            decoder_ffn_dim=FFN,
            max_position_embeddings=MAX_LENGTH,
            pad_token_id=pad,
            bos_token_id=bos,
            eos_token_id=eos,
            decoder_start_token_id=eos,
            forced_eos_token_id=eos,
            tie_word_embeddings=True,
        )
    if kind == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=MAX_LENGTH,
            n_embd=HIDDEN,
            n_layer=LAYERS,
            n_head=HEADS,
            n_inner=FFN,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
            tie_word_embeddings=True,
        )
    if kind == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=HIDDEN,
            intermediate_size=FFN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS // 2,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=pad,
            tie_word_embeddings=False,
        )
    raise KeyError(f"unknown tiny backbone {kind!r}; expected one of {TINY_KINDS}")


# kind -> transformers model class name (imported lazily: transformers is slow to import)
MODEL_CLASSES: dict[str, str] = {
    "bert": "BertForMaskedLM",
    "roberta": "RobertaForMaskedLM",
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
}


def build_model(kind: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Random model for ``kind``; identical weights on every call (seed 0, RNG state restored)."""
    import transformers

    model_class = getattr(transformers, MODEL_CLASSES[kind])
    config = build_config(kind, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    return model.eval()


def build_tiny_backbone(kind: str, directory: Path) -> Path:
    """Build tokenizer + model for ``kind`` and ``save_pretrained`` both into ``directory``."""
    tokenizer = build_tokenizer(kind)
    model = build_model(kind, tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", autouse=True)
def test_device() -> torch.device:
    """The device the suite's backbones load on (``OPENPT_TEST_DEVICE``, default cpu)."""
    from openpt.device import resolve_device, set_default_device

    set_default_device(os.environ.get("OPENPT_TEST_DEVICE") or "cpu")
    device = resolve_device(None)
    if device.type != "cpu":  # hand-computed expectations live on the CPU: compare values, not devices
        import functools

        torch.testing.assert_close = functools.partial(torch.testing.assert_close, check_device=False)
    return device


@pytest.fixture(scope="session")
def tiny_backbone_factory() -> Callable[[str, Path], Path]:
    """``build(kind, directory) -> directory``; kinds are ``TINY_KINDS``."""
    return build_tiny_backbone


def _tiny_dir(kind: str, factory: pytest.TempPathFactory) -> Path:
    return build_tiny_backbone(kind, factory.mktemp(f"tiny-{kind}"))


def _tiny_fixture(kind: str) -> Callable[[pytest.TempPathFactory], Path]:
    @pytest.fixture(scope="session", name=f"tiny_{kind}_dir")
    def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return _tiny_dir(kind, tmp_path_factory)

    return directory


# tiny_bert_dir, tiny_roberta_dir, tiny_t5_dir, tiny_bart_dir, tiny_gpt2_dir, tiny_llama_dir
for _kind in TINY_KINDS:
    globals()[f"tiny_{_kind}_dir"] = _tiny_fixture(_kind)


@pytest.fixture(scope="session", params=MLM_KINDS, ids=MLM_KINDS)
def tiny_mlm_dir(request: pytest.FixtureRequest) -> Path:
    """A masked-LM backbone directory: bert, then roberta."""
    return request.getfixturevalue(f"tiny_{request.param}_dir")


DEFAULT_SHARED = PROJECT_ROOT.parent / "shared"


def _require(path: Path, what: str) -> Path:
    """Fail (never skip) when a real asset is missing: CI must not pass without it."""
    if not path.exists():
        current = os.environ.get("OPENPT_SHARED")
        source = f"OPENPT_SHARED={current}" if current else f"OPENPT_SHARED unset, default {DEFAULT_SHARED}"
        pytest.fail(
            f"{what} not found at {path} ({source}); set the OPENPT_SHARED environment variable "
            "to the shared directory that holds models/minilm-mlm",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``$OPENPT_SHARED``, else ``<project root>/../shared``; a missing directory fails the test."""
    return _require(Path(os.environ.get("OPENPT_SHARED", DEFAULT_SHARED)).expanduser(), "shared directory")


@pytest.fixture(scope="session")
def minilm_dir(shared_dir: Path) -> Path:
    """Real small MLM for integration tests: ``<shared>/models/minilm-mlm``; missing fails the test."""
    return _require(shared_dir / "models" / "minilm-mlm", "minilm-mlm model")
