"""LoRA fine-tuning jobs: a declarative spec (`spec.py`), the data pipeline (`data.py`), the checks that
run before any training (`checks.py`), the training loop (`train.py`, `job.py`) and adapters as versions
(`adapters.py`).

    job = load_job("finetune/handbook-qa.yaml", ws)
    report = check_job(ws, job)          # validates everything without training; writes nothing
    result = run_job(ws, "finetune/handbook-qa.yaml")

Names are loaded on first use, so `import llmops.finetune` costs nothing (torch and PEFT load only in
the functions that need them).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["JobSpec", "check_job", "load_job", "run_job"]

_WHERE = {"JobSpec": "spec", "load_job": "spec", "check_job": "checks", "run_job": "job"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
