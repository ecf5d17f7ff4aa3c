"""Generation metrics from the field's libraries: sacrebleu (BLEU, chrF) and rouge-score (ROUGE-1/2/L).

Every score is on the 0..1 scale of the classification metrics: BLEU and chrF are sacrebleu's
corpus scores divided by 100; ROUGE is the mean over examples of the F-measure against the best
matching reference (``RougeScorer.score_multi``, Porter stemming); ``exact_match`` is the share
of predictions equal to one of their references after stripping surrounding whitespace. Every
example may have several references (E2E has up to 40): BLEU and chrF use them all as sacrebleu
reference streams (shorter lists padded with ``None``, which sacrebleu skips).
"""
from __future__ import annotations

from typing import Callable, Sequence

TEXT_METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match")


def _streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists as sacrebleu's reference streams (one stream per reference rank)."""
    width = max((len(refs) for refs in references), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def _rouge(kind: str) -> Callable[[Sequence[str], Sequence[Sequence[str]]], float]:
    def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
        values = [scorer.score_multi(list(refs), pred)[kind].fmeasure for pred, refs in zip(predictions, references)]
        return sum(values) / len(values) if values else 0.0

    return score


def _bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(list(predictions), _streams(references)).score / 100


def _chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(list(predictions), _streams(references)).score / 100


def _exact(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    hits = [pred.strip() in {ref.strip() for ref in refs} for pred, refs in zip(predictions, references)]
    return sum(hits) / len(hits) if hits else 0.0


FUNCTIONS = {"bleu": _bleu, "chrf": _chrf, "rouge1": _rouge("rouge1"), "rouge2": _rouge("rouge2"), "rougeL": _rouge("rougeL"),
             "exact_match": _exact}


def compute_text_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]], names: Sequence[str]) -> dict[str, float]:
    """Named metrics of generated ``predictions`` against each one's ``references`` (a list of texts)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    return {name: float(FUNCTIONS[name](predictions, references)) for name in names}
