"""What ``openpt report`` is asked for, checked against the rows it reads: a key, value, metric or K that no
finished row has is a :class:`~openpt.errors.ConfigError` naming it and what the rows do have."""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from ..errors import ConfigError
from .pivot import Filters, candidate_keys, label, value_of


def _listing(values: Iterable[str], limit: int = 20) -> str:
    values = list(values)
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def known_keys(records: list[dict[str, Any]]) -> list[str]:
    """The keys the rows can be filtered, pivoted or plotted by: record fields, the seed, swept keys."""
    keys = [*candidate_keys(records), "seed"]
    return [k for k in dict.fromkeys(keys) if any(value_of(r, k) is not None for r in records)]


def check_key(records: list[dict[str, Any]], key: str, option: str) -> None:
    """``key`` must be a value some row has."""
    if any(value_of(r, key) is not None for r in records):
        return
    keys = known_keys(records)
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"no finished row has key '{key}'; {hint}keys: {_listing(keys)}", key=option)


def check_filters(records: list[dict[str, Any]], filters: Filters, option: str) -> None:
    """Every ``KEY=VALUE`` of ``filters`` must match some row."""
    for key, values in filters.items():
        check_key(records, key, option)
        have = sorted({label(value_of(r, key)) for r in records})
        for value in values:
            if value not in have:
                raise ConfigError(f"no finished row has {key}={value}; values of {key}: {_listing(have)}", key=option)


def check_metric(records: list[dict[str, Any]], metric: str) -> None:
    """``metric`` must be a number in the metrics of every row shown."""
    def has(r: dict[str, Any]) -> bool:
        return type((r.get("metrics") or {}).get(metric)) in (int, float)

    names = sorted({m for r in records for m, v in (r.get("metrics") or {}).items() if type(v) in (int, float)})
    if not any(has(r) for r in records):
        raise ConfigError(f"no finished row has metric '{metric}'; metrics: {_listing(names)}", key="--metric")
    lacking = next(r for r in records if not has(r)) if not all(has(r) for r in records) else None
    if lacking is not None:
        raise ConfigError(f"metric '{metric}' is missing from some rows (dataset={lacking.get('dataset')}, "
                          f"method={lacking.get('method')}); narrow them with --where or pick one of: {_listing(names)}", key="--metric")


def check_request(records: list[dict[str, Any]], *, k: int | None, keys: dict[str, list[str]], where: Filters,
                  refs: list[Filters], metric: str | None) -> None:
    """Check a report request against the finished rows (nothing to check when there are none)."""
    if not records:
        return
    check_filters(records, where, "--where")
    for ref in refs:
        check_filters(records, ref, "--ref")
    for option, names in keys.items():
        for name in names:
            check_key(records, name, option)
    if k is not None and all(r.get("k") != k for r in records):
        raise ConfigError(f"no finished row has K={k}; Ks: {_listing(str(x) for x in sorted({r['k'] for r in records}))}", key="--k")
    if metric is not None:
        check_metric(records, metric)
