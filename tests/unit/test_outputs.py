"""Output directories: nothing lost, one writer at a time, no writes through links, normal file modes."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from openpt.cli import main
from openpt.errors import OutputError
from openpt.fileio import TEMP_SUFFIX, normal_mode
from openpt.outputs import MANIFEST_NAME, OutputDir

from .helpers import cli_project


@pytest.fixture()
def project(tmp_path: Path, tiny_bert_dir: Path) -> Path:
    return cli_project(tmp_path, tiny_bert_dir)


def run(project: Path, *extra: str) -> int:
    return main(["run", str(project / "config.yaml"), "--output", str(project / "out"), "--no-progress", *extra])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("openpt")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("openpt: error: ")
    return lines[0]


def test_rerun_into_a_finished_run_is_refused_and_keeps_its_files(project, capsys):
    assert run(project) == 0
    before = (project / "out" / "results.json").read_bytes()
    capsys.readouterr()
    assert run(project, "train.lr=0.5") == 2
    assert "output directory is not empty" in one_error_line(capsys)
    assert (project / "out" / "results.json").read_bytes() == before


def test_overwrite_deletes_only_what_openpt_wrote(project, capsys):
    assert run(project) == 0
    out = project / "out"
    (out / "prompt" / "notes.txt").write_text("mine")
    (out / "mine.txt").write_text("mine")
    (out / "seeds" / "seed-1" / f".prompt.safetensors.x{TEMP_SUFFIX}").write_bytes(b"")  # a killed writer's temp file
    assert run(project, "--overwrite", "data.seeds=[2]") == 0
    assert (out / "prompt" / "notes.txt").read_text() == "mine" and (out / "mine.txt").read_text() == "mine"
    assert not (out / "seeds" / "seed-1").exists(), "stale seed of the earlier run"
    assert sorted(p.name for p in (out / "prompt").iterdir()) == ["notes.txt", "prompt.safetensors", "prompt_config.json"]
    manifest = json.loads((out / MANIFEST_NAME).read_text())["files"]
    assert "mine.txt" not in manifest and "seeds/seed-2/prompt.safetensors" in manifest


def test_saved_files_get_the_normal_mode(project):
    assert run(project) == 0
    for name in ("results.json", "prompt/prompt.safetensors", "prompt/prompt_config.json", "seeds/seed-1/prompt.safetensors"):
        assert stat.S_IMODE((project / "out" / name).stat().st_mode) == normal_mode(), name


def test_output_path_that_is_a_file_or_read_only(project, capsys, monkeypatch):
    (project / "out").write_text("x")
    assert run(project) == 2
    assert "exists and is not a directory" in one_error_line(capsys)
    (project / "out").unlink()
    (project / "out").mkdir()
    os.chmod(project / "out", 0o500)
    try:
        if os.access(project / "out", os.W_OK):  # root ignores the mode: answer as the kernel would for another user
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == project / "out" else real_access(path, mode, **kw))
        assert run(project) == 2
        assert "not writable" in one_error_line(capsys)
        assert list((project / "out").iterdir()) == []
    finally:
        os.chmod(project / "out", 0o700)


def test_symlink_inside_the_output_directory_is_never_written_through(project, capsys, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (project / "out").mkdir()
    (project / "out" / "seeds").symlink_to(outside)
    assert run(project, "--resume") == 2
    assert "is a symbolic link" in one_error_line(capsys)
    assert list(outside.iterdir()) == []


def test_second_process_fails_at_once_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from openpt.outputs import OutputDir\n"
        "d = OutputDir(sys.argv[2]); d.open(); print('locked', flush=True); time.sleep(60)"), os.getcwd(), str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"in use by another openpt process \(pid {holder.pid} on "):
            OutputDir(tmp_path / "out", resume=True).open()
    finally:
        holder.kill()
        holder.wait()
    OutputDir(tmp_path / "out", resume=True).open()  # a killed holder leaves no stale lock


def test_manifest_never_reaches_outside(tmp_path):
    (tmp_path / "victim.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    for entry in ("../victim.txt", str(tmp_path / "victim.txt")):  # an edited manifest is refused, nothing deleted
        (out / MANIFEST_NAME).write_text(json.dumps({"files": [entry]}))
        with pytest.raises(OutputError, match="not a file inside the output directory"):
            OutputDir(out, overwrite=True).open()
        assert (tmp_path / "victim.txt").read_text() == "keep"


def test_second_sweep_on_one_results_file_fails_before_appending(project, capsys):
    (project / "sweep.yaml").write_text((project / "config.yaml").read_text() + "sweep:\n  methods: [zero_shot]\n  seeds: [1]\n")
    with OutputDir(project / "out", resumable=True):  # the first sweep, still running
        code = main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress"])
    assert code == 2 and "in use by another openpt process" in one_error_line(capsys)
    assert not (project / "out" / "results.jsonl").exists()
    assert main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress"]) == 0
    assert main(["run", str(project / "sweep.yaml"), "--output", str(project / "out"), "--no-progress"]) == 0  # a rerun continues
    assert len((project / "out" / "results.jsonl").read_text().splitlines()) == 1


def test_writer_killed_while_saving_its_first_manifest_leaves_a_resumable_directory(tmp_path):
    """Only the manifest's temporary file and a results file are there: resumable, and the temporary file goes."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text("{}\n")
    leftover = out / f".{MANIFEST_NAME}.x1y2{TEMP_SUFFIX}"
    leftover.write_text("{\"fi")
    with OutputDir(out, resumable=True):
        assert not leftover.exists()
    (out / "results.jsonl").unlink()
    (out / "notes.txt").write_text("a user's file\n")
    with pytest.raises(OutputError, match=r"output directory is not empty \(notes\.txt\)"):
        OutputDir(out, resumable=True).open()
