"""Experiments from YAML: configs and overrides, the few-shot methods, sweeps and reports."""
from __future__ import annotations
