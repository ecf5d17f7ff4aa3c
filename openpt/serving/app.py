"""The HTTP layer of ``openpt serve``: a FastAPI app over a :class:`PromptBank` and a :class:`Batcher`.

Routes: ``POST /v1/classify``, ``POST /v1/generate``, ``GET /v1/prompts``, ``POST /v1/prompts`` and
``DELETE /v1/prompts/{name}`` (admin key), ``GET /health``, ``GET /metrics``. Limits, keys and
metrics live here; the bank and the batcher know nothing of HTTP. Every error answer is
``{"error": "<one line>"}``; request texts reach the log only with ``log_requests``.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..errors import ConfigError, OpenPTError
from ..model.saving import BACKBONE_DIR, WEIGHTS_NAME
from ..predict_text import generation_record
from ..types import InputExample
from .bank import PromptBank, TaskMismatch, UnknownPromptError
from .batcher import Batcher, BatchSettings, Draining, QueueFull
from .generating import GenerationJob, prepare_generation
from .limits import BodyLimit, BodyTooLarge
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and keys at the HTTP edge.

    Attributes:
        max_request_rows: inputs per request (more: 413).
        max_text_chars: characters per input field (more: 413).
        max_body_bytes: request body size (more: 413).
        retry_after_s: the ``Retry-After`` of a 503 when the queue is full.
        api_key: required on every ``/v1`` route when set (``Authorization: Bearer KEY`` or ``X-API-Key``).
        admin_key: required to load or unload prompts; unset: those routes are off.
        prompts_dir: the only directory prompts may be loaded from at run time; unset: loading is off.
        log_requests: log request texts (off: only prompt names and row counts).
        drain_timeout_s: how long a shutdown waits for accepted requests.
        max_new_tokens: ``max_new_tokens`` of a generate request at most (more: 413).
        max_sequences: ``max(num_beams, num_return_sequences)`` of a generate request at most (more: 413).
    """

    max_request_rows: int = 64
    max_text_chars: int = 8192
    max_body_bytes: int = 1_048_576
    retry_after_s: int = 1
    api_key: str | None = None
    admin_key: str | None = None
    prompts_dir: Path | None = None
    log_requests: bool = False
    drain_timeout_s: float = 60.0
    max_new_tokens: int = 256
    max_sequences: int = 8


class Input(BaseModel):
    """One input: the template's fields."""

    model_config = ConfigDict(extra="forbid")
    text: str
    text_b: str | None = None
    meta: dict[str, str] = Field(default_factory=dict)


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    inputs: list[Input]


class GenerateRequest(ClassifyRequest):
    """Inputs plus decoding options; an option left out (or null) is the one saved with the prompt.
    The options are checked by :func:`openpt.model.decoding.check_decoding`, as ``openpt predict``'s are."""

    max_new_tokens: Any = None
    num_beams: Any = None
    do_sample: Any = None
    temperature: Any = None
    top_p: Any = None
    top_k: Any = None
    stop: Any = None
    num_return_sequences: Any = None
    scores: Any = None
    seed: StrictInt | None = Field(None, ge=0, le=2**63 - 1)

    def decoding(self) -> dict[str, Any]:
        return {key: value for key, value in self.model_dump(exclude={"prompt", "inputs", "seed"}).items() if value is not None}


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    path: str


class ApiError(Exception):
    """An HTTP error answer: status, one line, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())[:300]}, status_code=status, headers=headers)


def key_matches(request: Request, expected: str) -> bool:
    """Whether the request carries ``expected`` (constant-time comparison)."""
    provided = request.headers.get("x-api-key") or ""
    authorization = request.headers.get("authorization") or ""
    if not provided and authorization.lower().startswith("bearer "):
        provided = authorization[7:].strip()
    return hmac.compare_digest(provided.encode("utf-8"), expected.encode("utf-8"))


def create_app(bank: PromptBank, batch: BatchSettings | None = None, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app: its lifespan starts the batcher and, at shutdown, drains it.

    Example:
        >>> app = create_app(PromptBank.load(["runs/sst2/prompt"]))
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    settings = settings or ServeSettings()
    metrics = ServerMetrics()
    batcher = Batcher(bank, batch, observe=metrics.observe_batch, observe_generation=metrics.observe_generation)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        metrics.prompts.set(len(bank.names()))
        yield
        drained = await run_in_threadpool(batcher.drain, settings.drain_timeout_s)
        logger.info("batcher drained: %s", "every accepted request answered" if drained else "timed out")

    app = FastAPI(title="openpt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.bank, app.state.batcher, app.state.metrics, app.state.settings = bank, batcher, metrics, settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        return error_response(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    def authorize(request: Request, admin: bool = False) -> None:
        if admin:
            if not settings.admin_key:
                raise ApiError(403, "loading and unloading prompts is off: the server has no admin key")
            if not key_matches(request, settings.admin_key):
                raise ApiError(401, "missing or wrong admin key")
        elif settings.api_key and not key_matches(request, settings.api_key):
            raise ApiError(401, "missing or wrong API key")

    def accepted(route: str, body: ClassifyRequest, request: Request) -> list[InputExample]:
        authorize(request)
        examples = check_inputs(body, settings)
        if settings.log_requests:
            logger.info("%s %s: %s", route, body.prompt, [example.text for example in examples])
        else:
            logger.debug("%s %s: %d rows", route, body.prompt[:64], len(examples))
        return examples

    def enqueue(submit: Callable[[], Future], other_route: str) -> Future:
        """Encode and queue a request, its refusals mapped to status codes."""
        try:
            future = submit()
        except UnknownPromptError as exc:
            raise ApiError(404, str(exc)) from None
        except TaskMismatch as exc:
            raise ApiError(422, f"{exc}; use POST {other_route}") from None
        except QueueFull as exc:
            raise ApiError(503, f"busy: {exc}; retry later", {"Retry-After": str(settings.retry_after_s)}) from None
        except Draining as exc:
            raise ApiError(503, str(exc), {"Retry-After": str(settings.retry_after_s)}) from None
        except OpenPTError as exc:
            raise ApiError(422, str(exc)) from None
        metrics.queue_rows.set(batcher.queued_rows)
        return future

    async def answer(future: Future) -> Any:
        try:
            return await asyncio.wrap_future(future)
        except UnknownPromptError as exc:
            raise ApiError(404, str(exc)) from None
        except OpenPTError as exc:
            raise ApiError(500, str(exc)) from None

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest, request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        examples = accepted("classify", body, request)
        rows = []

        def submit() -> Future:
            rows.extend(bank.prepare(body.prompt, examples))
            return batcher.submit(rows)

        probs = await answer(enqueue(submit, "/v1/generate"))
        labels = rows[0].parts[0][0].verbalizer.label_names
        metrics.latency.labels("/v1/classify").observe(time.perf_counter() - start)
        return {"prompt": body.prompt, "labels": labels,
                "results": [{"label": labels[int(p.argmax())], "probabilities": [round(float(x), 7) for x in p]} for p in probs]}

    @app.post("/v1/generate")
    async def generate(body: GenerateRequest, request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        examples = accepted("generate", body, request)

        def submit() -> Future:
            given = body.decoding()
            job = prepare_generation(bank, body.prompt, examples, given, body.seed)
            check_generation_limits(job, settings, set(given))
            return batcher.submit_generation(job)

        results = await answer(enqueue(submit, "/v1/classify"))
        metrics.latency.labels("/v1/generate").observe(time.perf_counter() - start)
        return {"prompt": body.prompt, "results": [generation_record(result) for result in results]}

    @app.get("/v1/prompts")
    async def prompts(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"prompts": [prompt_record(bank, name) for name in bank.names()]}

    @app.post("/v1/prompts", status_code=201)
    async def load(body: LoadRequest, request: Request) -> dict[str, Any]:
        authorize(request, admin=True)
        directory = prompt_directory(settings.prompts_dir, body.path)
        try:
            await run_in_threadpool(bank.add, body.name, directory)
        except ConfigError as exc:
            raise ApiError(409 if "already loaded" in exc.problem else 422, str(exc)) from None
        except OpenPTError as exc:
            raise ApiError(422, str(exc).replace(str(directory), body.path)) from None
        metrics.prompts.set(len(bank.names()))
        logger.info("loaded prompt %s", body.name)
        return prompt_record(bank, body.name)

    @app.delete("/v1/prompts/{name}")
    async def unload(name: str, request: Request) -> dict[str, Any]:
        authorize(request, admin=True)
        try:
            bank.remove(name)
        except UnknownPromptError as exc:
            raise ApiError(404, str(exc)) from None
        except ConfigError as exc:
            raise ApiError(409, str(exc)) from None
        metrics.prompts.set(len(bank.names()))
        logger.info("unloaded prompt %s", name)
        return {"name": name, "removed": True}

    @app.get("/health")
    async def health() -> JSONResponse:
        status = "draining" if batcher.draining else "ok"
        return JSONResponse({"status": status, "prompts": len(bank.names()), "queued_rows": batcher.queued_rows},
                            status_code=503 if batcher.draining else 200)

    @app.get("/metrics")
    async def metrics_text(request: Request) -> Response:
        authorize(request)
        metrics.queue_rows.set(batcher.queued_rows)
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def check_inputs(body: ClassifyRequest, settings: ServeSettings) -> list[InputExample]:
    """The request's inputs as examples, within the row and text-length limits (else 413 / 422)."""
    if not body.inputs:
        raise ApiError(422, "inputs: expected at least one input")
    if len(body.inputs) > settings.max_request_rows:
        raise ApiError(413, f"inputs: {len(body.inputs)} inputs, at most {settings.max_request_rows} per request")
    for n, item in enumerate(body.inputs):
        fields = {"text": item.text, "text_b": item.text_b or "", **item.meta}
        for field, value in fields.items():
            if len(value) > settings.max_text_chars:
                raise ApiError(413, f"inputs[{n}].{field[:40]}: {len(value)} characters, at most {settings.max_text_chars}")
    return [InputExample(item.text, item.text_b, meta=dict(item.meta), guid=f"input {n}") for n, item in enumerate(body.inputs)]


def check_generation_limits(job: GenerationJob, settings: ServeSettings, given: set[str]) -> None:
    """Refuse (413) decoding options beyond the server's ``max_new_tokens`` and ``max_sequences``
    (``given``: the options the request set; the others are the prompt's saved ones)."""
    def source(key: str) -> str:
        return "" if key in given else " (the prompt's saved default)"

    if job.options["max_new_tokens"] > settings.max_new_tokens:
        raise ApiError(413, f"max_new_tokens: {job.options['max_new_tokens']} tokens{source('max_new_tokens')}, "
                            f"at most {settings.max_new_tokens} on this server")
    if job.expand > settings.max_sequences:
        key = "num_beams" if job.options["num_beams"] >= job.options["num_return_sequences"] else "num_return_sequences"
        raise ApiError(413, f"{key}: {job.expand} sequences per input{source(key)}, at most {settings.max_sequences} on this server")


def prompt_record(bank: PromptBank, name: str) -> dict[str, Any]:
    """What ``GET /v1/prompts`` says of one prompt: its name, task and (classifiers) labels."""
    task = bank.task(name)
    return {"name": name, "task": task, **({} if task == "generation" else {"labels": bank.labels(name)})}


def prompt_directory(root: Path | None, relative: str) -> Path:
    """A saved prompt directory inside ``root`` holding safetensors weights (else 403 / 422)."""
    if root is None:
        raise ApiError(403, "loading prompts at run time is off: the server has no prompts directory")
    base = root.resolve()
    directory = (base / relative).resolve()
    if Path(relative).is_absolute() or not directory.is_relative_to(base) or directory == base:
        raise ApiError(422, f"path: {relative[:80]!r} is not a directory inside the prompts directory")
    if not (directory / WEIGHTS_NAME).is_file():
        raise ApiError(422, f"path: {relative[:80]!r} holds no {WEIGHTS_NAME} (only safetensors prompts load)")
    if (directory / BACKBONE_DIR).exists():
        raise ApiError(422, f"path: {relative[:80]!r} holds its own backbone; the server runs one shared backbone")
    return directory

