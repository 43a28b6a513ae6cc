"""All settings in one frozen dataclass.

Precedence: explicit argument (CLI flag) > environment variable (``RAG_<NAME>``) > default. Every default works
offline with the bundled models.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError

BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"
# The default generator tier: the better answers within the speed target (docs/quality.md, rag/models/bundled.py).
BUNDLED_GENERATOR = "Qwen2.5-Coder-1.5B-Instruct"
ENV_PREFIX = "RAG_"
# The names settings are validated against live here, below every stage that uses them, so that config imports
# nothing of the code it configures.
RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
# How an answer's text is produced (rag/answer/modes.py).
ANSWER_MODES = ("quote", "auto", "generate", "extract", "sentences")
# "lean": our own decode loop over a fused copy of a Llama model (rag/models/lean.py); "transformers": its
# forward pass under the same loop; "auto": lean when the model is a plain Llama, else transformers; "llamacpp":
# the same loop over llama.cpp's forward pass on the GGUF file (optional; never chosen by "auto").
BACKENDS = ("auto", "lean", "transformers", "llamacpp")
# The lean decoder's linear layers (rag/models/lean.py): "fp32" (transformers' exact numbers), "mixed" (int8 but
# the MLP's down projection), "int8" (all of them), "int8-head" (the output projection alone) or "bf16"; "auto" is
# the precision a bundled tier was measured best at (rag/models/bundled.py), fp32 for any other model.
PRECISIONS = ("auto", "fp32", "mixed", "int8", "int8-head", "bf16")
# Settings renamed since an earlier release: the old environment variable gets a message naming the new one.
RENAMED = {"top_k": "sources_k", "retrieval_mode": "retrieval"}


def one_of(setting: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``, else a :class:`ConfigError` naming the setting and the choices."""
    if value not in choices:
        raise ConfigError(f"{setting} {value!r}: use one of {', '.join(choices)}")
    return value


def check_mmr(mmr: float | None) -> float | None:
    if mmr is not None and not 0.0 <= mmr <= 1.0:
        raise ConfigError(f"mmr={mmr} must be between 0 and 1 (1: relevance only, 0: diversity only)")
    return mmr


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


@dataclass(frozen=True)
class Config:
    """Effective settings. Build it with :meth:`Config.load` to apply the environment."""

    # Where the index lives: SQLite database plus FAISS vectors; with `store`, this machine's FAISS cache.
    index: Path = Path(".rag")
    # The database the index's records live in: none keeps them in SQLite in `index`; a postgresql:// URL shares
    # one index between machines (docs/postgres.md). Give the password through the URL in RAG_STORE, or in
    # ~/.pgpass, rather than on a command line every user of the machine can see.
    store: str | None = field(default=None, repr=False)
    # Bundled name, a sentence-transformers folder, or a hub id (the only case that touches the network).
    embed_model: str = BUNDLED_EMBEDDER
    # Bundled name, a causal-LM folder, a .gguf file, or a hub id.
    gen_model: str = BUNDLED_GENERATOR
    # Chunk size in the embedder's own tokens: MiniLM's whole window (256 minus [CLS]/[SEP]), so each vector sees
    # as much context as the model can read (docs/quality.md). A hard guard re-cuts any chunk the splitter's
    # approximate merging leaves above the limit.
    chunk_tokens: int = 254
    chunk_overlap: int = 32
    # Sources retrieved for `ask` and hits shown by `search` (not the sampling cut of Decoding.top_k).
    sources_k: int = 5
    # Cosine below which a chunk is not considered relevant (MiniLM: unrelated text scores ~0.0-0.15).
    min_score: float = 0.2
    # Sentences (most similar to the question, across the retrieved chunks) the prompt shows; 0 shows whole
    # chunks. A small model states the fact far more often from a few relevant sentences than from five chunks.
    focus_sentences: int = 6
    # How `ask` answers, one of ANSWER_MODES. With the default tier, auto (a free answer kept only as a span of a
    # source sentence, else the best sentence) scored best on the XQuAD tuning half within the time budget
    # (docs/quality.md).
    answer_mode: str = "auto"
    # A sentence of a `sentences` answer that no source backs: "drop" it, or "mark" it (kept, flagged).
    unsupported_sentences: str = "drop"
    # Prompt + answer token budget for the generator; smaller is faster on a CPU.
    context_tokens: int = 2048
    # Converted generator weights are cached here (GGUF dequantisation is slow, safetensors reload is fast).
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # torch threads; 0 keeps torch's default (one per core).
    threads: int = 0
    # Retrieval for `search` and `ask`: dense (embeddings), bm25 (SQLite FTS5) or hybrid (both, fused by
    # weighted reciprocal rank fusion).
    retrieval: str = "hybrid"
    # Plain RRF (k 60, equal weights): a heavier BM25 weight helps retrieval-only scores a little but cost the
    # bundled generator answers (docs/retrieval.md has the sweep and its command).
    rrf_k: float = 60.0
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    # How many chunks each retriever proposes before fusion, threshold and MMR.
    candidates: int = 100
    # Cross-encoder folder (or hub id) that reorders the top `rerank_candidates`; none is bundled.
    reranker: str | None = None
    rerank_candidates: int = 30
    # Maximal marginal relevance lambda (1: relevance only, lower: more diverse); unset: no MMR.
    mmr: float | None = None
    # Embedding: "auto" runs an ONNX export of the embedder (made once, cached under cache_dir, checked against
    # sentence-transformers) when onnxruntime is installed, for queries (so `rag search` never loads torch) and
    # documents (faster than sentence-transformers on a CPU); "torch" always uses sentence-transformers.
    embed_runtime: str = "auto"
    # Generator backend, one of BACKENDS.
    gen_backend: str = "auto"
    # The lean decoder's linear layers, one of PRECISIONS.
    gen_precision: str = "auto"
    # Tesseract languages for pages without a text layer and for pictures ("eng", "eng+deu"); none turns OCR off.
    ocr_languages: str | None = "eng"
    # `rag serve`: the bearer token clients must send (unset or empty: no key; any other value, "none" too, is
    # the key). Only ever from the environment (RAG_API_KEY): a command line is visible to every user of the
    # machine. Never printed.
    api_key: str | None = field(default=None, repr=False)
    # Ingest parses each file in a worker process under these limits, so a hostile or broken file is skipped
    # with its reason (too-large, too-slow, too-deep, too-many-rows, ...) and never exhausts the machine
    # (docs/formats.md). Worker processes parse ahead while the previous batch embeds; 0 parses in this process,
    # without the memory and time limits (for trusted folders only).
    parse_workers: int = 1
    # Address space of a parser process, in MB.
    parse_memory_mb: int = 1536
    # Wall-clock seconds one file may take to parse (OCR included); its CPU time is capped at the same.
    parse_seconds: int = 300
    # What a zip-based file (docx, pptx, xlsx, odt, ods, epub) may inflate to, in MB, and how much more than
    # its compressed size one member may be (a zip bomb's XML part inflates a thousandfold).
    max_unzipped_mb: int = 512
    max_zip_ratio: int = 100
    # Pages of one PDF, and frames of one picture (a multi-page TIFF, each frame read by OCR).
    max_pages: int = 2000
    max_frames: int = 200
    # Rows read from one spreadsheet (all its sheets).
    max_rows: int = 200_000
    # How deep mail nests: forwarded messages and attached .eml files inside each other.
    max_depth: int = 3
    # Characters of text one file may yield (at most 64 Mi, what a loader ever keeps).
    max_chars: int = 64 << 20

    @classmethod
    def load(cls, **overrides: Any) -> Config:
        """Defaults, then ``RAG_*`` environment variables, then ``overrides`` (``None`` values are ignored).

        Raises :class:`ConfigError` for an unknown ``RAG_*`` variable or override, or a value of the wrong type.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in os.environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name in RENAMED:
                raise ConfigError(f"{key} was renamed {ENV_PREFIX}{RENAMED[name].upper()}; set that instead")
            if name not in fields:
                known = ", ".join(ENV_PREFIX + n.upper() for n in fields)
                raise ConfigError(f"unknown environment variable {key}; known: {known}")
            values[name] = _coerce(name, raw, fields[name].type, source=key)
        for name, value in overrides.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = _coerce(name, value, fields[name].type, source=f"--{name.replace('_', '-')}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.chunk_tokens < 16:
            raise ConfigError(f"chunk_tokens={self.chunk_tokens} is too small; use 16 or more")
        if not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise ConfigError(
                f"chunk_overlap={self.chunk_overlap} must be >= 0 and below chunk_tokens={self.chunk_tokens}"
            )
        if self.sources_k < 1:
            raise ConfigError(f"sources_k={self.sources_k} must be at least 1")
        if self.focus_sentences < 0:
            raise ConfigError(f"focus_sentences={self.focus_sentences} must be >= 0 (0: whole chunks)")
        one_of("embed_runtime", self.embed_runtime, ("auto", "torch"))
        one_of("gen_backend", self.gen_backend, BACKENDS)
        one_of("gen_precision", self.gen_precision, PRECISIONS)
        one_of("answer_mode", self.answer_mode, ANSWER_MODES)
        one_of("unsupported_sentences", self.unsupported_sentences, ("drop", "mark"))
        if self.context_tokens < 256:
            raise ConfigError(f"context_tokens={self.context_tokens} is too small; use 256 or more")
        one_of("retrieval", self.retrieval, RETRIEVAL_MODES)
        if self.rrf_k < 0:
            raise ConfigError(f"rrf_k={self.rrf_k} must be >= 0 (60 is the usual choice)")
        if self.dense_weight < 0 or self.bm25_weight < 0 or self.dense_weight + self.bm25_weight == 0:
            raise ConfigError(
                f"dense_weight={self.dense_weight} and bm25_weight={self.bm25_weight} must be >= 0, not both 0"
            )
        if self.candidates < 1 or self.rerank_candidates < 1:
            raise ConfigError(
                f"candidates={self.candidates} and rerank_candidates={self.rerank_candidates} must be at least 1"
            )
        check_mmr(self.mmr)
        if self.store is not None:
            check_store_url(self.store)
        limits = (
            "parse_memory_mb",
            "parse_seconds",
            "max_unzipped_mb",
            "max_zip_ratio",
            "max_pages",
            "max_frames",
            "max_rows",
            "max_depth",
            "max_chars",
        )
        for name in limits:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.parse_workers < 0:
            raise ConfigError(f"parse_workers={self.parse_workers} must be >= 0 (0 parses in this process)")
        if self.ocr_languages is not None and not re.fullmatch(r"[A-Za-z_]+(\+[A-Za-z_]+)*", self.ocr_languages):
            raise ConfigError(
                f"ocr_languages={self.ocr_languages!r} is not a Tesseract language list such as 'eng' or 'eng+deu'"
            )

    def as_dict(self) -> dict[str, Any]:
        values = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        values["api_key"] = "(set)" if self.api_key else None
        values["store"] = redact_url(self.store) if self.store else None
        return values


def redact_url(url: str) -> str:
    """``url`` as it may be printed or logged: without the password it may carry (``user:***@host``), parsed as
    SQLAlchemy parses it. An unescaped ``@`` in the password counts as part of it, not of the host; a URL that
    does not parse shows nothing between its scheme and the last ``@``."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, or ValueError for a port that is not a number
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
    if parsed.host and "@" in parsed.host:
        secret, _, host = parsed.host.rpartition("@")
        parsed = parsed.set(password=f"{parsed.password or ''}@{secret}", host=host)
    return parsed.render_as_string(hide_password=True)


def check_store_url(url: str) -> None:
    """:class:`ConfigError` (the URL shown redacted) unless ``url`` is a PostgreSQL URL SQLAlchemy can use."""
    from sqlalchemy.engine import make_url

    shown = redact_url(url)
    if not re.match(r"postgresql(\+psycopg)?://", url):
        raise ConfigError(f"store {shown!r}: use a postgresql://USER@HOST:PORT/DATABASE URL, or none for SQLite")
    try:
        parsed = make_url(url)
    except ValueError:
        raise ConfigError(f"store {shown!r}: the port is not a number; use postgresql://USER@HOST:PORT/DB") from None
    except Exception as e:
        raise ConfigError(f"store {shown!r}: not a database URL ({type(e).__name__})") from None
    if parsed.host and "@" in parsed.host:
        raise ConfigError(f"store {shown!r}: the password holds '@'; write it percent-encoded (%40)")


def _coerce(name: str, value: Any, type_name: Any, source: str) -> Any:
    # Field types are strings under `from __future__ import annotations`.
    kind = str(type_name)
    if name == "api_key":  # a key is whatever it says; only nothing at all means none
        return value or None
    if kind.endswith(" | None"):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        kind = kind[: -len(" | None")]
    try:
        if kind == "Path":
            return Path(value).expanduser()
        if kind == "int":
            return int(value)
        if kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {value!r} is not a valid {kind} for {name}") from None
