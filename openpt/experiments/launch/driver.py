"""The sweep driver: the one process that appends rows to ``results.jsonl``, whatever runs the cells."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ...outputs import OutputDir
from ...training import distributed
from ..records import append_record
from .base import Launcher

if TYPE_CHECKING:
    from .base import RunSpec, Sweep


def drive(sweep: Sweep, out: OutputDir, todo: list[RunSpec], skipped: int, launcher: Launcher) -> tuple[int, int]:
    """Run ``todo`` through ``launcher``, appending each row as it arrives; returns (finished, failed).

    A sweep-wide progress bar (stderr) counts done, running and failed cells.
    """
    from tqdm.auto import tqdm

    finished = failed = 0
    shown = sweep.progress and distributed.current().is_main
    with tqdm(total=len(todo) + skipped, initial=skipped, desc="sweep", unit="run", file=sys.stderr,
              disable=not shown, dynamic_ncols=True) as bar:
        def show() -> None:
            bar.set_postfix_str(f"done {finished} · running {launcher.running} · failed {failed}", refresh=True)

        launcher.on_change = show
        launcher.open(sweep)
        try:
            launcher.submit(todo)
            for run, record in launcher.collect():
                append_record(sweep.results, record)  # listed in the manifest since the sweep began (Sweep._run_in)
                if (sweep.output / sweep.run_dir(run)).is_dir():
                    out.record_tree(sweep.run_dir(run))
                if record["status"] == "ok":
                    finished += 1
                else:
                    failed += 1
                    sweep.log(f"run {run.label} failed: {record['error']}")
                bar.update(1)
                show()
        finally:
            launcher.close()
            for name in (*launcher.artifacts, "tracking"):  # files the engine keeps in the output directory (job ids, logs)
                if (sweep.output / name).is_dir():
                    out.record_tree(name)
    return finished, failed
