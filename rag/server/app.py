"""The HTTP API over one :class:`rag.api.Index`, built by :func:`create_app`.

OpenAI's chat-completions shape (``POST /v1/chat/completions``, streamed as server-sent events or not, with the
answer's sources, quotes and support check under the extra field ``rag``), ``GET /v1/models``, ``POST
/v1/search``, ``POST /v1/ingest`` (a job; ``GET /v1/jobs/{id}``), ``GET /v1/status``, ``GET /healthz``.

Searches run in parallel on the thread pool; answers queue on one generator thread, so a long answer never holds
up a search, and a client that disconnects mid-stream stops its own decoding. Every error is a JSON body in
OpenAI's ``{"error": {...}}`` shape with the right status code; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from rag.answer.pipeline import AnswerStream
from rag.api import Index
from rag.errors import (
    ConfigError,
    IndexBusyError,
    IndexNotFoundError,
    ModelMismatchError,
    RagError,
    SourceNotFoundError,
)
from rag.models.decoding import Decoding
from rag.retrieval.followup import conversation_query
from rag.server.guard import Guard, allowed_hosts
from rag.server.schemas import ChatRequest, IngestRequest, SearchRequest
from rag.types import Answer, Filters

# A chat request is a few kilobytes; anything near this is a mistake or an attack.
MAX_BODY_BYTES = 1_000_000
# The model name OpenAI clients may always send; the configured generator's own name works too.
MODEL_ALIAS = "rag"

_STATUS = {
    ConfigError: 400,
    SourceNotFoundError: 404,
    IndexNotFoundError: 404,
    IndexBusyError: 409,
    ModelMismatchError: 409,
}


class ApiError(Exception):
    """An error a client is told about: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Job:
    """An ingest run in the background, as ``GET /v1/jobs/{id}`` reports it."""

    id: str
    folder: str
    state: str = "running"  # running | done | failed
    files_done: int = 0
    files_total: int = 0
    chunks: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class _Server:
    index: Index
    api_key: str | None
    allow_roots: list[Path]
    generating: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "rag-generate"))
    jobs: dict[str, Job] = field(default_factory=dict)
    writing: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model_ids(self) -> list[str]:
        return [self.index.config.gen_model, MODEL_ALIAS]


def create_app(
    index: Index,
    *,
    api_key: str | None = None,
    allow_roots: list[Path] | None = None,
    hosts: frozenset[str] | None = None,
) -> FastAPI:
    """The ASGI app serving ``index``. ``api_key``: required as a bearer token on every route but ``/`` and
    ``/healthz``. ``allow_roots``: folders under which ``POST /v1/ingest`` may index (none: ingest refused).
    ``hosts``: the names requests may address (default: the loopback names; see :func:`allowed_hosts`)."""
    server = _Server(index, api_key or None, [Path(r).resolve() for r in allow_roots or []])
    app = FastAPI(title="rag", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, hosts=hosts or allowed_hosts("127.0.0.1"), limit=MAX_BODY_BYTES)
    _errors(app)
    authorized = _authorization(server)

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local"} for m in server.model_ids],
        }

    @app.get("/v1/status", dependencies=[Depends(authorized)])
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(server.index.status)

    @app.post("/v1/search", dependencies=[Depends(authorized)])
    async def search(body: SearchRequest) -> dict[str, Any]:
        filters = Filters(path=body.path) if body.path else None
        hits = await run_in_threadpool(
            server.index.search, body.query, body.k, retrieval=body.retrieval, filters=filters
        )
        return {"query": body.query, "hits": [h.as_dict() for h in hits]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(body: ChatRequest) -> Any:
        if body.model not in server.model_ids:
            raise ApiError(
                404, f"model {body.model!r} is not served here; use one of {server.model_ids}", "model_not_found"
            )
        question, query = _question(body)
        decoding = _decoding(body)
        decoding.validate()
        if body.stream:
            events = _sse(server, body, question, query, decoding)
            return StreamingResponse(events, media_type="text/event-stream")
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(server.generating, lambda: _ask(server, body, question, query, decoding))
        return _completion(body.model, answer)

    @app.post("/v1/ingest", status_code=202, dependencies=[Depends(authorized)])
    def ingest(body: IngestRequest) -> dict[str, Any]:
        folder = _allowed(server, body.folder)
        if not server.writing.acquire(blocking=False):
            running = next((j.id for j in server.jobs.values() if j.state == "running"), "?")
            raise ApiError(409, f"an ingest is already running (job {running}); wait for it to finish", "busy")
        job = Job(id=uuid.uuid4().hex[:12], folder=str(folder))
        server.jobs[job.id] = job
        threading.Thread(target=_run_ingest, args=(server, job, body.delete), daemon=True).start()
        return asdict(job)

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(authorized)])
    def job(job_id: str) -> dict[str, Any]:
        if job_id not in server.jobs:
            raise ApiError(404, f"no job {job_id!r}; POST /v1/ingest starts one", "not_found")
        return asdict(server.jobs[job_id])

    return app


# --- requests ---------------------------------------------------------------------------------------------------


def _question(body: ChatRequest) -> tuple[str, str]:
    """The question (the last user message) and its retrieval query, which the earlier user messages inform
    as in a `rag chat` conversation."""
    asked = [m.text() for m in body.messages if m.role == "user" and m.text().strip()]
    if not asked:
        raise ApiError(400, "messages hold no user message with text; add one with the question", "invalid_request")
    return asked[-1], conversation_query(asked[-1], asked[:-1])


def _decoding(body: ChatRequest) -> Decoding:
    limit = body.max_completion_tokens or body.max_tokens
    return Decoding(
        max_new_tokens=limit or Decoding().max_new_tokens,
        temperature=body.temperature or 0.0,
        top_p=body.top_p if body.temperature else None,
        seed=body.seed,
    )


def _allowed(server: _Server, folder: str) -> Path:
    try:
        path = Path(folder).expanduser().resolve()
        path.is_dir()  # a name too long for the file system raises here
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, an over-long name, a symlink loop
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ApiError(
            400, f"folder: not a usable path ({reason}); give a folder under an allowed root", "bad_path"
        ) from None
    if not any(path == root or path.is_relative_to(root) for root in server.allow_roots):
        roots = ", ".join(map(str, server.allow_roots)) or "none (start the server with --allow-root DIR)"
        raise ApiError(403, f"{folder} is not under an allowed root; allowed: {roots}", "forbidden")
    if not path.is_dir():
        raise ApiError(
            404, f"{folder} {'is not a folder' if path.exists() else 'does not exist'} on the server", "not_found"
        )
    return path


def _filters(body: ChatRequest) -> Filters | None:
    f = body.filters
    if f is None or not (f.path or f.kinds or f.modified_since is not None):
        return None
    return Filters(path=f.path, kinds=tuple(f.kinds), modified_since=f.modified_since)


def _stream(server: _Server, body: ChatRequest, question: str, query: str, decoding: Decoding) -> AnswerStream:
    mode, filters = body.answer_mode, _filters(body)
    return server.index.ask_stream(
        question, k=body.k, decoding=decoding, answer_mode=mode, filters=filters, query=query
    )


def _ask(server: _Server, body: ChatRequest, question: str, query: str, decoding: Decoding) -> Answer:
    stream = _stream(server, body, question, query, decoding)
    for _ in stream:
        pass
    return stream.answer


def _run_ingest(server: _Server, job: Job, delete: bool) -> None:
    def progress(p: Any) -> None:
        job.files_done, job.files_total, job.chunks = p.files_done, p.files_total, p.chunks

    try:
        report = server.index.ingest(job.folder, delete=delete, progress=progress)
        job.report = report.as_dict()
        job.state = "done"
    except RagError as e:
        job.state, job.error = "failed", str(e)
    except Exception as e:  # the job's own record is where a client reads it; the server keeps running
        job.state, job.error = "failed", f"ingest failed: {type(e).__name__}: {e}"
    finally:
        job.finished = time.time()
        server.writing.release()


# --- responses --------------------------------------------------------------------------------------------------


def _sources_text(answer: Answer) -> str:
    """The cited sources as a client shows them under the answer: ``[n] path · location``."""
    lines = [f"[{n}] {h.path} · {h.location()}" for n, h in enumerate(answer.sources, 1) if n in answer.cited]
    return "\n\nSources:\n" + "\n".join(lines) if lines else ""


def _rag_field(answer: Answer) -> dict[str, Any]:
    data = answer.as_dict()
    data.pop("question", None)
    return data


def _completion(model: str, answer: Answer) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text + _sources_text(answer)},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(answer),
        "rag": _rag_field(answer),
    }


def _usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.answer_tokens,
        "total_tokens": answer.prompt_tokens + answer.answer_tokens,
    }


async def _sse(server: _Server, body: ChatRequest, question: str, query: str, decoding: Decoding) -> AsyncIterator[str]:
    """The answer as OpenAI's ``chat.completion.chunk`` events: its pieces as they are decoded, then (when the
    support check replaced the generated answer) the source sentence instead, the sources, and ``[DONE]``."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    cancelled = threading.Event()

    def put(piece: str | None) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    def work() -> Answer | None:
        try:
            if cancelled.is_set():  # the client left while the request queued
                return None
            stream = _stream(server, body, question, query, decoding)
            steps = iter(stream)
            for piece in steps:
                put(piece)
                if cancelled.is_set():
                    steps.close()  # GeneratorExit into the decoding loop: no further token is computed
                    return None
            return stream.answer
        finally:
            put(None)

    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n"

    future = loop.run_in_executor(server.generating, work)
    try:
        yield event({"role": "assistant", "content": ""})
        streamed: list[str] = []
        while (piece := await pieces.get()) is not None:
            streamed.append(piece)
            yield event({"content": piece})
        try:
            answer = await future
        except RagError as e:
            yield f"data: {json.dumps(_error_body(_status_of(e), str(e)))}\n\n"
            return
        except Exception:
            yield f"data: {json.dumps(_error_body(500, 'the answer failed on the server; see its log'))}\n\n"
            return
        if answer is None:
            return
        tail = ""
        if answer.text != "".join(streamed).strip():  # replaced after the support check, or not streamed at all
            tail = "\n(not supported by the sources; the closest source sentence instead)\n" if streamed else ""
            tail += answer.text
        tail += _sources_text(answer)
        if tail:
            yield event({"content": tail})
        yield event({}, "stop", usage=_usage(answer), rag=_rag_field(answer))
        yield "data: [DONE]\n\n"
    finally:
        cancelled.set()


# --- errors and guards ------------------------------------------------------------------------------------------


def _error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status in (401, 403):
        kind = "authentication_error" if status == 401 else "permission_error"
    return {"error": {"message": message, "type": kind, "code": code or str(status)}}


def _status_of(error: RagError) -> int:
    return next((s for kind, s in _STATUS.items() if isinstance(error, kind)), 500)


def _errors(app: FastAPI) -> None:
    def respond(status: int, message: str, code: str | None = None) -> JSONResponse:
        return JSONResponse(_error_body(status, message, code), status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return respond(e.status, e.message, e.code)

    @app.exception_handler(RagError)
    async def rag_error(_: Request, e: RagError) -> JSONResponse:
        return respond(_status_of(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        if first.get("type") == "json_invalid":
            return respond(400, "the request body is not valid JSON", "invalid_json")
        return respond(400, f"{where}: {first.get('msg', 'invalid')}", "invalid_request")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return respond(e.status_code, str(e.detail), "too_large" if e.status_code == 413 else None)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        return respond(500, f"internal error ({type(e).__name__}); see the server's log")


def _authorization(server: _Server) -> Callable[[Request], None]:
    expected = server.api_key.encode() if server.api_key else None

    def authorized(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        given = token.strip().encode("utf-8", "replace") if scheme.lower() == "bearer" else b""
        if not hmac.compare_digest(given, expected):  # constant time: the key is not guessed byte by byte
            raise ApiError(401, "missing or wrong API key; send Authorization: Bearer <RAG_API_KEY>", "invalid_api_key")

    return authorized
