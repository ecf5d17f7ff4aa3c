"""The offline tiny backbones from tests/conftest.py and the vocabularies in tests/assets."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from ..conftest import MODEL_CLASSES

ASSETS = Path(__file__).resolve().parents[1] / "assets"
KINDS = ("bert", "roberta", "t5", "bart", "gpt2", "llama")
AUTO_CLASS = {
    "bert": AutoModelForMaskedLM,
    "roberta": AutoModelForMaskedLM,
    "t5": AutoModelForSeq2SeqLM,
    "bart": AutoModelForSeq2SeqLM,
    "gpt2": AutoModelForCausalLM,
    "llama": AutoModelForCausalLM,
}
SENTENCE = "it was great ."


def _load_make_assets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_assets", ASSETS / "make_assets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_assets = _load_make_assets()


def _asset_vocab(kind: str) -> dict[str, int]:
    """token -> id straight from the committed asset files (no transformers involved)."""
    if kind == "bert":
        lines = (ASSETS / "bert" / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return {token: i for i, token in enumerate(lines)}
    if kind in ("roberta", "bart"):
        return json.loads((ASSETS / "roberta" / "vocab.json").read_text(encoding="utf-8"))
    if kind == "gpt2":
        return json.loads((ASSETS / "gpt2" / "vocab.json").read_text(encoding="utf-8"))
    model = json.loads((ASSETS / kind / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    if kind == "t5":  # Unigram: list of [piece, score]
        return {piece: i for i, (piece, _) in enumerate(model["vocab"])}
    return model["vocab"]


def _expected_tokens(kind: str) -> list[str]:
    """Tokens of SENTENCE with special tokens, as each model family lays them out."""
    if kind == "bert":
        return ["[CLS]", "it", "was", "great", ".", "[SEP]"]
    if kind in ("roberta", "bart"):
        return ["<s>", "it", "Ġwas", "Ġgreat", "Ġ.", "</s>"]
    if kind == "gpt2":
        return ["it", "Ġwas", "Ġgreat", "Ġ."]
    if kind == "t5":
        return ["▁it", "▁was", "▁great", "▁.", "</s>"]
    return ["<s>", "▁it", "▁was", "▁great", "▁."]  # llama


@pytest.fixture(params=KINDS, ids=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny_dir(kind: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"tiny_{kind}_dir")


@pytest.fixture
def tokenizer(tiny_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)


def test_assets_match_generator() -> None:
    files = make_assets.render()
    stale = [rel for rel, text in files.items() if (ASSETS / rel).read_text(encoding="utf-8") != text]
    assert not stale, f"run python tests/assets/make_assets.py; stale: {stale}"


def test_tokenizer_encodes_sentence_to_asset_ids(kind: str, tokenizer: PreTrainedTokenizerBase) -> None:
    vocab = _asset_vocab(kind)
    expected = [vocab[token] for token in _expected_tokens(kind)]
    assert tokenizer(SENTENCE)["input_ids"] == expected
    assert tokenizer.is_fast


def test_tokenizer_key_words_are_single_tokens(kind: str, tokenizer: PreTrainedTokenizerBase) -> None:
    wrong = {}
    for word in make_assets.KEY_WORDS:
        if kind == "bert":  # lowercasing WordPiece
            expected = {word: [word], word.upper(): [word]}
        elif kind in ("roberta", "bart", "gpt2"):  # byte-level BPE: both forms are tokens
            expected = {word: [word], " " + word: ["Ġ" + word]}
        else:  # t5, llama: metaspace prepends "▁" to the first word
            expected = {word: ["▁" + word], "a " + word: ["▁a", "▁" + word]}
        for text, tokens in expected.items():
            if tokenizer.tokenize(text) != tokens:
                wrong[text] = tokenizer.tokenize(text)
    assert not wrong


def test_tokenizer_bert_splits_unknown_word_into_wordpieces(tiny_bert_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    assert tok.tokenize("fantastic") == ["fan", "##tastic"]
    assert tok.tokenize("movies") == ["movie", "##s"]
    assert tok.tokenize("zq") == ["z", "##q"]
    assert "fantastic" not in tok.get_vocab()


def test_tokenizer_splits_unknown_word(kind: str, tokenizer: PreTrainedTokenizerBase) -> None:
    pieces = tokenizer.tokenize(" fantastic")
    assert len(pieces) > 1
    assert tokenizer.unk_token_id not in tokenizer.convert_tokens_to_ids(pieces)


def test_tokenizer_special_tokens(kind: str, tokenizer: PreTrainedTokenizerBase) -> None:
    vocab = _asset_vocab(kind)
    assert tokenizer.pad_token is not None
    assert tokenizer.pad_token_id is not None
    assert tokenizer.model_max_length == 512
    if kind == "bert":
        assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (0, 1)
        assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id) == (2, 3, 4)
    elif kind in ("roberta", "bart"):
        ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
        assert ids == [0, 1, 2, 3, 4]
        assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        assert tokenizer.mask_token_id == 4
    elif kind == "gpt2":
        assert tokenizer.eos_token == "<|endoftext|>"
        assert tokenizer.pad_token_id == tokenizer.eos_token_id == vocab["<|endoftext|>"] == len(tokenizer) - 1
        assert tokenizer.mask_token is None
    elif kind == "t5":
        assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
        sentinels = [f"<extra_id_{i}>" for i in range(10)]
        assert sorted(tokenizer.extra_special_tokens) == sorted(sentinels)
        assert tokenizer.convert_tokens_to_ids(sentinels) == [len(tokenizer) - 1 - i for i in range(10)]
        assert tokenizer.tokenize("it was <extra_id_0> .") == ["▁it", "▁was", "<extra_id_0>", "▁."]
    else:  # llama
        assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        assert tokenizer.pad_token_id == tokenizer.eos_token_id
        assert tokenizer.convert_tokens_to_ids("<0x41>") == 3 + 0x41


@pytest.mark.parametrize("family", ["roberta", "bart"])
def test_tokenizer_bpe_mask_absorbs_leading_space(family: str, request: pytest.FixtureRequest) -> None:
    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(f"tiny_{family}_dir"), local_files_only=True)
    vocab = _asset_vocab(family)
    assert tok("it was <mask> .")["input_ids"] == [0, vocab["it"], vocab["Ġwas"], 4, vocab["Ġ."], 2]


def test_tokenizer_llama_byte_fallback_roundtrips(tiny_llama_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True)
    ids = tok("it was café", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == "it was café"


def test_model_loads_offline_with_all_weights(kind: str, tiny_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    model, info = AUTO_CLASS[kind].from_pretrained(tiny_dir, local_files_only=True, output_loading_info=True)
    assert type(model).__name__ == MODEL_CLASSES[kind]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = AutoConfig.from_pretrained(tiny_dir, local_files_only=True)
    assert config.vocab_size == len(tokenizer)
    assert config.pad_token_id == tokenizer.pad_token_id
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 32)
    assert config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_model_forward_logits_match_vocab(kind: str, tiny_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    model = AUTO_CLASS[kind].from_pretrained(tiny_dir, local_files_only=True).eval()
    batch = tokenizer([SENTENCE, "it was terrible and boring , no ?"], padding=True, return_tensors="pt")
    extra = {}
    if kind in ("t5", "bart"):
        extra["decoder_input_ids"] = torch.full((2, 3), model.config.decoder_start_token_id)
    with torch.no_grad():
        logits = model(**batch, **extra).logits
    length = 3 if extra else batch["input_ids"].shape[1]
    assert logits.shape == (2, length, len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["bert", "roberta", "bart", "gpt2"])
def test_model_accepts_max_length_input(family: str, request: pytest.FixtureRequest) -> None:
    # learned position tables must cover model_max_length; roberta's position ids start at
    # pad_token_id + 1, so its table needs 512 + 2 rows
    directory = request.getfixturevalue(f"tiny_{family}_dir")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AUTO_CLASS[family].from_pretrained(directory, local_files_only=True).eval()
    batch = tokenizer("great " * 1000, truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape == (1, 512)
    extra = {"decoder_input_ids": batch["input_ids"][:, :4]} if family == "bart" else {}
    with torch.no_grad():
        logits = model(**batch, **extra).logits
    assert logits.shape[-1] == len(tokenizer)


@pytest.mark.parametrize("family", ["bert", "roberta", "t5", "bart", "gpt2"])
def test_model_output_embeddings_tied(family: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(f"tiny_{family}_dir")
    model = AUTO_CLASS[family].from_pretrained(directory, local_files_only=True)
    assert model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_tiny_mlm_dir_is_masked_lm(tiny_mlm_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_mlm_dir, local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(tiny_mlm_dir, local_files_only=True).eval()
    batch = tok(f"it was {tok.mask_token} .", return_tensors="pt")
    position = (batch["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
    assert position == [3]
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits[0, position[0]].shape == (len(tok),)


def test_tiny_backbones_builds_are_identical(
    kind: str, tiny_dir: Path, tiny_backbone_factory: Callable[[str, Path], Path], tmp_path: Path
) -> None:

    torch.manual_seed(1234)  # the build must not depend on (or change) the global RNG
    before = torch.random.get_rng_state()
    again = tiny_backbone_factory(kind, tmp_path / kind)
    assert torch.equal(torch.random.get_rng_state(), before)
    first, second = load_file(tiny_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (tiny_dir / name).read_text(encoding="utf-8") == (again / name).read_text(encoding="utf-8")
