"""``openpt data check``: what each dataset of an experiment or sweep config resolves to."""
from __future__ import annotations

from ..data.check import DataReport, describe
from ..data.sources import resolve_data
from ..model.build import template_spec, verbalizer_spec
from .config import ExperimentConfig


def check_config_data(config: ExperimentConfig) -> list[tuple[str, DataReport]]:
    """``(dataset name, report)`` for every dataset of ``config`` (one, or each of a sweep's)."""
    reports = []
    for cfg in config.sweep.datasets if config.sweep else [config]:
        ks = config.sweep.k if config.sweep else [cfg.data.k]
        verbalizer = verbalizer_spec(cfg.verbalizer, base_dir=cfg.base_dir, file=cfg.raw.file, line=cfg.raw.line_of("verbalizer"))
        template = template_spec(cfg.template, base_dir=cfg.base_dir, file=cfg.raw.file, line=cfg.raw.line_of("template"))
        given = cfg.raw.get("data")
        resolved = resolve_data(cfg.data, label_hint=verbalizer.label_names, given=given if isinstance(given, dict) else None)
        max_eval = config.sweep.max_eval if config.sweep and config.sweep.max_eval is not None else cfg.data.max_eval
        report = describe(resolved, k=max(ks), field_map=cfg.data.field_map, template_fields=list(template.fields), max_eval=max_eval)
        if verbalizer.label_names != resolved.train_pool.label_names:
            report.problems.append(f"the verbalizer's labels {verbalizer.label_names} differ from the data's "
                                   f"{resolved.train_pool.label_names} (names and order must match)")
        reports.append((cfg.name, report))
    return reports
