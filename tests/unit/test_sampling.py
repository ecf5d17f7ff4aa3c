"""Tests for openpt.data.sampling: stratified K-shot draws, LM-BFF split, split-off-eval."""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openpt.data.loading import Dataset

from openpt.types import InputExample
from openpt.errors import DataError
from openpt.data.sampling import kshot_indices, lmbff_split, split_off_eval

LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1]  # 7 of class 0, 6 of 1, 5 of 2


def make_dataset(labels: list[int], names: list[str] | None = None) -> Dataset:
    examples = [InputExample(f"text {i}", label=y, guid=f"train-{i}") for i, y in enumerate(labels)]
    return Dataset(examples, names or [f"c{j}" for j in range(max(labels) + 1)], "toy", "toy/train.jsonl")


def per_class(indices: list[int], labels: list[int]) -> Counter:
    return Counter(labels[i] for i in indices)


def test_kshot_exactly_k_per_class_grouped_by_class() -> None:
    idx = kshot_indices(LABELS, 3, seed=1)
    assert per_class(idx, LABELS) == {0: 3, 1: 3, 2: 3}
    assert len(set(idx)) == 9
    assert [LABELS[i] for i in idx] == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # ordered by class, then draw


def test_kshot_reproducible_and_seed_dependent() -> None:
    assert kshot_indices(LABELS, 2, 13) == kshot_indices(list(LABELS), 2, 13)
    draws = {tuple(kshot_indices(LABELS, 2, seed)) for seed in range(10)}
    assert len(draws) > 1
    assert kshot_indices(LABELS, 2, 13) != kshot_indices(LABELS, 2, 42)


def test_kshot_independent_of_python_hash_seed() -> None:
    package = Path(__file__).resolve().parents[2] / "openpt"
    code = (  # a bare package object skips openpt/__init__ (which imports torch) to keep this fast
        f"import sys, types; pkg = types.ModuleType('openpt'); pkg.__path__ = [{str(package)!r}]; "
        "sys.modules['openpt'] = pkg; from openpt.data.sampling import kshot_indices; "
        "print(kshot_indices([0,1,2,0,1,2,0,1,2,1], 2, 7))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONHASHSEED": h}) for h in ("0", "12345")]
    outputs = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs == {str(kshot_indices([0, 1, 2, 0, 1, 2, 0, 1, 2, 1], 2, 7))}


def test_kshot_exclude_honoured() -> None:
    exclude = {0, 3, 6, 1}
    for seed in range(20):
        idx = kshot_indices(LABELS, 3, seed, exclude=exclude)
        assert not exclude & set(idx)
        assert per_class(idx, LABELS) == {0: 3, 1: 3, 2: 3}
    # class 0 has 7 members; excluding 5 of them leaves 2 < k
    msg = str(pytest.raises(DataError, kshot_indices, LABELS, 3, 0, exclude={0, 3, 6, 9, 12}).value)
    assert msg == "class 0 has only 2 examples after excluding 5 indices, need 3"


def test_kshot_too_few_names_class_and_count() -> None:
    with pytest.raises(DataError) as info:
        kshot_indices(LABELS, 6, seed=0)
    assert str(info.value) == "class 2 has only 5 examples, need 6"
    with pytest.raises(DataError, match="class 3 has only 0 examples, need 1"):
        kshot_indices(LABELS, 1, 0, num_classes=4)


@pytest.mark.parametrize(("labels", "k", "seed", "message"), [
    ([0, 1], 0, 0, "k must be a positive integer, got 0"),
    ([0, 1], 1, -1, "seed must be a non-negative integer, got -1"),
    ([0, -1], 1, 0, "label at index 1 must be a non-negative integer, got -1"),
    ([0, "a"], 1, 0, "label at index 1 must be a non-negative integer, got 'a'"),
])
def test_kshot_bad_arguments(labels: list, k: int, seed: int, message: str) -> None:
    with pytest.raises(DataError) as info:
        kshot_indices(labels, k, seed)
    assert str(info.value) == message


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6),
    k=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    order_seed=st.randoms(use_true_random=False),
)
def test_kshot_property(counts: list[int], k: int, seed: int, order_seed) -> None:
    labels = [c for c, n in enumerate(counts) for _ in range(max(n, k))]  # every class has >= k
    order_seed.shuffle(labels)
    idx = kshot_indices(labels, k, seed)
    assert len(idx) == len(set(idx)) == k * len(counts)
    assert all(0 <= i < len(labels) for i in idx)
    assert per_class(idx, labels) == {c: k for c in range(len(counts))}
    assert idx == kshot_indices(labels, k, seed)


def test_lmbff_split_disjoint_k_per_class_and_info() -> None:
    ds = make_dataset(LABELS)
    train, dev, info = lmbff_split(ds, 2, seed=13)
    assert set(info) >= {"train_indices", "dev_indices", "seed", "k"}
    assert info["seed"] == 13 and info["k"] == 2 and info["source"] == "toy/train.jsonl"
    tr, dv = info["train_indices"], info["dev_indices"]
    assert not set(tr) & set(dv)
    assert per_class(tr, LABELS) == per_class(dv, LABELS) == {0: 2, 1: 2, 2: 2}
    assert train.examples == [ds.examples[i] for i in tr]
    assert dev.examples == [ds.examples[i] for i in dv]
    assert train.label_names == ds.label_names and dev.source == ds.source
    again = lmbff_split(ds, 2, seed=13)[2]
    assert (again["train_indices"], again["dev_indices"]) == (tr, dv)
    assert lmbff_split(ds, 2, seed=14)[2]["train_indices"] != tr or lmbff_split(ds, 2, 15)[2]["train_indices"] != tr


def test_lmbff_split_too_few_names_label() -> None:
    ds = make_dataset(LABELS, ["neg", "neu", "pos"])
    with pytest.raises(DataError) as info:
        lmbff_split(ds, 3, seed=0)
    assert str(info.value) == "toy/train.jsonl: class 2 ('pos') has only 5 examples, need 6 (3 for train + 3 for dev)"
    with pytest.raises(DataError, match=r"class 3 \('other'\) has only 0 examples"):
        lmbff_split(make_dataset(LABELS, ["neg", "neu", "pos", "other"]), 1, 0)


def test_split_off_eval_uses_remaining_examples() -> None:
    ds = make_dataset(LABELS)
    train, dev, rest, info = split_off_eval(ds, 2, seed=5)
    drawn = set(info["train_indices"]) | set(info["dev_indices"])
    assert len(drawn) == 12 and len(train) == len(dev) == 6
    assert len(rest) == len(ds) - 12 == info["eval_size"]
    assert [ex.guid for ex in rest.examples] == [f"train-{i}" for i in range(len(ds)) if i not in drawn]
    assert not {ex.guid for ex in rest.examples} & {ex.guid for ex in train.examples + dev.examples}
    assert info["protocol"] == "split_off_eval" and "evaluated on the remaining 6" in info["note"]
    # same draw as lmbff_split for the same seed
    assert lmbff_split(ds, 2, 5)[2]["train_indices"] == info["train_indices"]
