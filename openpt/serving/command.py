"""``openpt serve PROMPT_DIR...``: the HTTP server over one backbone (uvicorn), SIGTERM draining.

FastAPI, uvicorn and prometheus-client come with the ``serve`` extra; they are imported when the
command runs, so ``openpt --help`` stays light.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ..cli_parsing import DEVICE_HELP, common_options, whole_number
from ..errors import ConfigError, OpenPTError

logger = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost",)
API_KEY_ENV, ADMIN_KEY_ENV = "OPENPT_API_KEY", "OPENPT_ADMIN_KEY"


def add_serve_command(sub: Any) -> None:
    """Register ``serve`` on the top-level subparsers."""
    serve = sub.add_parser("serve", help="serve saved prompts over HTTP on one backbone (the 'serve' extra)")
    common_options(serve)
    serve.add_argument("prompts", nargs="*", metavar="PROMPT_DIR", help="saved prompt directories (NAME=DIR names one)")
    serve.add_argument("--prompts-dir", help="the directory POST /v1/prompts may load from (default: loading at run time is off)")
    serve.add_argument("--backbone", help="backbone directory (default: the one the first prompt records)")
    serve.add_argument("--device", default="auto", help=DEVICE_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; other than loopback needs an API key")
    serve.add_argument("--port", type=port_number, default=8000, help="port to bind (0: any free one)")
    serve.add_argument("--max-batch-rows", type=whole_number(1, "rows"), default=64, help="row budget of one mixed batch")
    serve.add_argument("--max-wait-ms", type=whole_number(0, "milliseconds", 10_000), default=5,
                       help="how long a request may wait for others to join its batch")
    serve.add_argument("--max-queue-rows", type=whole_number(1, "rows"), default=2048,
                       help="rows waiting at most; beyond, 503 with Retry-After")
    serve.add_argument("--max-request-rows", type=whole_number(1, "rows"), default=64, help="inputs per request (more: 413)")
    serve.add_argument("--max-text-chars", type=whole_number(1, "characters"), default=8192, help="characters per input field (more: 413)")
    serve.add_argument("--max-generate-tokens", type=whole_number(1, "tokens"), default=256,
                       help="max_new_tokens of a generate request at most (more: 413)")
    serve.add_argument("--max-generate-sequences", type=whole_number(1, "sequences"), default=8,
                       help="max(num_beams, num_return_sequences) of a generate request at most (more: 413)")
    serve.add_argument("--trim-memory-every", type=whole_number(0, "seconds", 3600), default=10,
                       help="give freed heap memory back to the system after a batch at most this often (0: never)")
    serve.add_argument("--drain-timeout", type=whole_number(0, "seconds", 3600), default=60,
                       help="seconds a SIGTERM waits for accepted requests")
    serve.add_argument("--api-key", help=f"key every /v1 route and /metrics need (default: ${API_KEY_ENV}); required off loopback")
    serve.add_argument("--admin-key", help=f"key to load and unload prompts (default: ${ADMIN_KEY_ENV}); unset: those routes are off")
    serve.add_argument("--log-requests", action="store_true", help="log request texts (off: prompt names and row counts only)")
    serve.set_defaults(func=run_serve)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0..65535 (0: any free one)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 0..65535, got {text[:40]!r}")
    return int(text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    """Load the prompts, then serve until SIGTERM (drained: exit 0) or Ctrl-C."""
    try:
        import uvicorn
        from .app import ServeSettings, create_app
    except ImportError as exc:
        raise OpenPTError(f"openpt serve needs FastAPI, uvicorn and prometheus-client ({exc.name} is missing): "
                          "pip install 'openpt[serve]'") from None
    from .bank import PromptBank
    from .batcher import BatchSettings

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    admin_key = args.admin_key or os.environ.get(ADMIN_KEY_ENV) or None
    if not is_loopback(args.host) and not api_key:
        raise ConfigError(f"binding {args.host} (not loopback) needs an API key: --api-key or ${API_KEY_ENV}", key="--host")
    prompts_dir = Path(args.prompts_dir) if args.prompts_dir else None
    if prompts_dir is not None and not prompts_dir.is_dir():
        raise ConfigError(f"not a directory: {prompts_dir}", key="--prompts-dir")
    if not args.prompts and not args.backbone:
        raise ConfigError("expected saved prompt directories, or --backbone to start with none", key="prompts")
    batch = BatchSettings(args.max_batch_rows, args.max_wait_ms / 1000, max(args.max_queue_rows, args.max_batch_rows),
                          args.trim_memory_every)
    settings = ServeSettings(max_request_rows=args.max_request_rows, max_text_chars=args.max_text_chars, api_key=api_key,
                             admin_key=admin_key, prompts_dir=prompts_dir, log_requests=args.log_requests,
                             drain_timeout_s=float(args.drain_timeout), max_new_tokens=args.max_generate_tokens,
                             max_sequences=args.max_generate_sequences)
    if args.prompts:
        bank = PromptBank.load(args.prompts, args.backbone, device=args.device, batch_size=args.max_batch_rows)
    else:
        from ..backbone.base import load_backbone

        bank = PromptBank(load_backbone(args.backbone, device=args.device), batch_size=args.max_batch_rows)
    app = create_app(bank, batch, settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info" if getattr(args, "verbose", False) else "warning",
                            timeout_graceful_shutdown=args.drain_timeout, lifespan="on")
    draining_server(config).run()
    return 0


def draining_server(config: Any) -> Any:
    """A uvicorn server whose SIGTERM stops accepting, answers every accepted request, and returns
    (exit status 0) instead of re-raising the signal; it prints the address it bound."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if sig == signal.SIGTERM:
                logger.info("SIGTERM: draining")
                self.should_exit = True
                return
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    print(f"openpt serve: listening on http://{host}:{port}", flush=True)

    return DrainingServer(config)
