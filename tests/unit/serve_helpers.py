"""Starting ``openpt serve`` in a subprocess on a free loopback port, with bounded waits."""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from openpt.model.build import PromptOptions, build_model, template_spec
from openpt.backbone import load_backbone
from openpt.model.saving import save_prompt
from openpt.tasks import get_task
from openpt.verbalizer import ManualVerbalizer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-secret-key"
PROMPTS = {
    "sentiment": ("[SOFT*3] {text} it was [MASK] .", {"negative": ["terrible"], "positive": ["great"]}, {}),
    "deep": ("{text} all in all [MASK] .", {"bad": ["bad"], "fine": ["good"], "great": ["great"]}, {"prefix": {"length": 4, "init": "random"}}),
    "pairs": ("{text} ? [MASK] , {text_b}", {"no": ["no"], "yes": ["yes"]}, {}),
    "describe": ("[SOFT*3] {text} Description: {target}", None, {}),  # generation prompts (no verbalizer)
    "prefixed": ("{text} => {target}", None, {"prefix": {"length": 3, "init": "random"}}),
}


def save_prompts(backbone_dir: Path, directory: Path, names: list[str], seed: int = 0) -> dict[str, Path]:
    """Save the prompts ``names`` of :data:`PROMPTS` (randomised tensors) on the backbone in ``backbone_dir``."""
    import torch

    backbone = load_backbone(backbone_dir)
    saved = {}
    for n, name in enumerate(names):
        text, labels, options = PROMPTS[name]
        verbalizer, task = (ManualVerbalizer(labels), None) if labels else (None, get_task("generation"))
        model = build_model(backbone, template_spec(text), verbalizer, PromptOptions(max_length=40, **options), seed=seed + n, task=task)
        generator = torch.Generator().manual_seed(seed + n)
        with torch.no_grad():
            for parameter in model.trainable_parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
        saved[name] = save_prompt(model, directory / name)
    return saved


class Server:
    """``python -m openpt.cli serve ARGS --port 0`` in a subprocess; :attr:`url` once it listens."""

    def __init__(self, args: list[str], *, startup_s: float = 180.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "openpt.cli", "serve", *args, "--port", "0"], cwd=PROJECT_ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.stderr.append), daemon=True).start()
        deadline = time.monotonic() + startup_s
        self.url = ""
        while not self.url and time.monotonic() < deadline and self.process.poll() is None:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            self.url = match.group(1) if match else ""
        if not self.url:
            self.stop()
            raise RuntimeError(f"the server did not start: {''.join(self.stderr)[-2000:]}")

    @staticmethod
    def _read(stream, put) -> None:
        for line in stream:
            put(line)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)

    def wait(self, timeout: float = 120.0) -> int:
        """The exit status, waiting at most ``timeout`` seconds."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
