"""Regenerate the tiny tokenizer vocabularies in ``tests/assets``.

Run from anywhere (offline, needs only the ``tokenizers`` library)::

    python tests/assets/make_assets.py          # rewrite the files
    python tests/assets/make_assets.py --check  # fail if a file would change

Outputs (all deterministic; commit them together with this script):

* ``bert/vocab.txt``: lowercase WordPiece vocab. ``[PAD]=0 [UNK]=1 [CLS]=2
  [SEP]=3 [MASK]=4``, punctuation, digits, letters, the word list, suffixes
  ``##s ##ing ##ed ##ly``, ``fan``/``##tastic`` (so ``fantastic`` splits into
  two pieces) and ``##a``..``##z``/``##0``..``##9`` so unknown words split into
  pieces instead of becoming ``[UNK]``.
* ``roberta/vocab.json`` + ``roberta/merges.txt``: byte-level BPE (GPT-2 style,
  ``Ġ`` = leading space) with ``<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4``,
  trained on a synthetic corpus. Every word of :data:`KEY_WORDS` is a single
  token both with and without a leading space. Also used for BART.
* ``gpt2/vocab.json`` + ``gpt2/merges.txt``: the same BPE without the RoBERTa
  special tokens and with ``<|endoftext|>`` as the last id (as in GPT-2).
* ``t5/tokenizer.json``: SentencePiece-like Unigram (``▁`` metaspace) with
  ``<pad>=0 </s>=1 <unk>=2``; sentinels ``<extra_id_9>``..``<extra_id_0>``
  are the last ten ids (``<extra_id_0>`` is the last id, as in T5). The
  pipeline matches ``transformers.T5Tokenizer``.
* ``llama/tokenizer.json``: Llama-2 style BPE (``▁`` metaspace, byte fallback)
  with ``<unk>=0 <s>=1 </s>=2``, ``<0x00>``..``<0xFF>`` = 3..258, then trained
  pieces. The pipeline matches ``transformers.LlamaTokenizer``.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections.abc import Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ASSETS = Path(__file__).resolve().parent

# Words that must be single tokens in every tokenizer (with and without a leading
# space for the BPE ones). Tests and prompt templates rely on them.
KEY_WORDS: tuple[str, ...] = (
    "it was is a an the this that movie film "
    "great terrible good bad awful wonderful fine nice boring fun "
    "yes no maybe true false positive negative neutral "
    "sports world business science tech news "
    "question answer what who where when why how "
    "entity person location number description abbreviation"
).split()

# Common English words filling the vocabulary up to ~300 words. Single tokens in
# bert and t5; in the small BPE vocabularies (roberta, gpt2, llama) most split.
OTHER_WORDS: tuple[str, ...] = (
    "i you he she we they me him her us them my your his its our their "
    "be are were been being am have has had do does did will would can could "
    "should may might must not and or but if so because as of in on at to for "
    "with by from about into over after before up down out off than then too "
    "very just also only more most some any all each every both few many much "
    "other such own same one two three four five six seven eight nine ten first "
    "last new old big small long short high low right left best better worse "
    "worst really quite time year day people man woman child way thing life "
    "work part place case point group company state country city home school "
    "story book music game team player money market price stock government "
    "president war police report say said get got make made go went know think "
    "see look want give use find tell ask feel try leave call like love hate "
    "enjoy watch play read write here there now today never always often again "
    "still well even back lot end actor plot scene character director show "
    "series acting script ending review topic category label text sentiment "
    "sentence premise hypothesis entailment contradiction correct wrong "
    "happy sad funny beautiful excellent poor amazing perfect worth waste "
    "fan win won lost match season league cup oil deal sales shares profit "
    "internet software computer phone space research study health "
    "which whose whom something nothing everything anything "
    "these those there's"
).replace("there's", "").split()

WORDS: tuple[str, ...] = tuple(dict.fromkeys(KEY_WORDS + OTHER_WORDS))
PUNCT: tuple[str, ...] = tuple(string.punctuation)
# pieces of a word that is deliberately *not* in any vocabulary
SPLIT_WORD = "fantastic"
BERT_SUFFIXES: tuple[str, ...] = ("##s", "##ing", "##ed", "##ly", "##tastic")

BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BPE_VOCAB_SIZE = 600
LLAMA_VOCAB_SIZE = 600
T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_EXTRA_IDS = 10


def bert_vocab() -> list[str]:
    """WordPiece vocabulary, one token per id."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += PUNCT
    tokens += string.digits
    tokens += string.ascii_lowercase
    tokens += WORDS
    tokens += BERT_SUFFIXES
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens = list(dict.fromkeys(tokens))
    assert SPLIT_WORD not in tokens and "fan" in tokens and "##tastic" in tokens
    return tokens


def corpus() -> Iterator[str]:
    """Synthetic corpus: key words far more frequent than the other words.

    Each line puts a word both at the line start (no leading space) and after a
    space, so BPE learns both forms.
    """
    punct = " ".join(PUNCT)
    for _ in range(20):
        yield punct
        yield "." + punct
    for rep, words in ((60, KEY_WORDS), (6, OTHER_WORDS)):
        for _ in range(rep):
            for word in words:
                yield f"{word} {word} ."
                yield f"{word}, {word}? {word}!"


def train_byte_level_bpe() -> tuple[dict[str, int], list[str]]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=BPE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    assert list(vocab)[: len(BPE_SPECIALS)] == BPE_SPECIALS
    return vocab, merges


def gpt2_from_roberta(vocab: dict[str, int]) -> dict[str, int]:
    tokens = [t for t in vocab if t not in BPE_SPECIALS] + ["<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def t5_tokenizer() -> Tokenizer:
    """Hand-built Unigram model.

    Whole pieces score in [-8, -5] and single characters -10, so any split of a
    listed word into two or more pieces scores below the whole piece.
    """
    pieces: list[str] = ["▁" + w for w in WORDS]
    pieces += list(KEY_WORDS)  # bare forms, e.g. after an opening quote
    pieces += ["s", "ing", "ed", "ly", "fan", "tastic"]
    pieces += ["▁" + p for p in PUNCT]
    pieces = list(dict.fromkeys(pieces))
    n = len(pieces)
    vocab: list[tuple[str, float]] = [(t, 0.0) for t in T5_SPECIALS]
    vocab += [(p, round(-5.0 - 3.0 * i / n, 4)) for i, p in enumerate(pieces)]
    vocab.append(("▁", -9.0))
    chars = list(dict.fromkeys(PUNCT + tuple(string.ascii_letters + string.digits)))
    vocab += [(c, -10.0) for c in chars if c not in {v for v, _ in vocab}]
    sentinels = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS - 1, -1, -1)]
    vocab += [(s, 0.0) for s in sentinels]
    assert len({v for v, _ in vocab}) == len(vocab)

    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in T5_SPECIALS + sentinels])
    return tok


def llama_tokenizer() -> Tokenizer:
    """Llama-2 style BPE: ``▁`` metaspace, byte fallback, ``<s>`` prepended."""
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    specials = ["<unk>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=LLAMA_VOCAB_SIZE - 256,
        min_frequency=2,
        show_progress=False,
        special_tokens=specials,
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation + "▁"),
    )
    trainer_tok.train_from_iterator(corpus(), trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    trained = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if t not in specials]
    tokens = specials + [f"<0x{b:02X}>" for b in range(256)] + trained
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=["<s>", "$A"], pair=["<s>", "$A", "<s>", "$B"], special_tokens=[("<s>", 1)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def render() -> dict[str, str]:
    """All asset files, relative path -> text."""
    out: dict[str, str] = {}
    out["bert/vocab.txt"] = "".join(t + "\n" for t in bert_vocab())

    vocab, merges = train_byte_level_bpe()
    merges_txt = "#version: 0.2\n" + "".join(m + "\n" for m in merges)
    out["roberta/vocab.json"] = json.dumps(vocab, ensure_ascii=False, indent=1) + "\n"
    out["roberta/merges.txt"] = merges_txt
    out["gpt2/vocab.json"] = json.dumps(gpt2_from_roberta(vocab), ensure_ascii=False, indent=1) + "\n"
    out["gpt2/merges.txt"] = merges_txt

    out["t5/tokenizer.json"] = t5_tokenizer().to_str(pretty=True) + "\n"
    out["llama/tokenizer.json"] = llama_tokenizer().to_str(pretty=True) + "\n"
    return out


def check_single_tokens(files: dict[str, str]) -> None:
    """Fail loudly if a key word is not a single token."""
    bert = {t: i for i, t in enumerate(files["bert/vocab.txt"].splitlines())}
    bpe = json.loads(files["roberta/vocab.json"])
    t5 = Tokenizer.from_str(files["t5/tokenizer.json"])
    llama = Tokenizer.from_str(files["llama/tokenizer.json"])
    missing = [w for w in KEY_WORDS if w not in bert]
    missing += [f for w in KEY_WORDS for f in (w, "Ġ" + w) if f not in bpe]
    for w in KEY_WORDS:
        for tok, name in ((t5, "t5"), (llama, "llama")):
            pieces = tok.encode(w, add_special_tokens=False).tokens
            if pieces != ["▁" + w]:
                missing.append(f"{name}:{w}->{pieces}")
    if missing:
        raise SystemExit(f"not single tokens: {missing}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify the committed files are up to date")
    args = parser.parse_args(argv)
    files = render()
    check_single_tokens(files)
    stale = []
    for rel, text in files.items():
        path = ASSETS / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("stale assets: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("stale: " if args.check else "written: ") + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
