"""Shared fixtures: the real bundled models, loaded once per session, and one index of sample_docs/."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rag import Config, Index
from rag.config import BUNDLED_GENERATOR
from rag.models.sources import bundled_embedder_dir
from tests import postgres as postgres_server
from tests import stores

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = ROOT / "sample_docs"
SHARED_EVAL = ROOT.parent / "shared" / "eval"
# Most tests answer with the fast tier: they test the pipeline, not the model, and the suite must stay short.
# Tests of what a user gets by default (the demo question, the easy questions) use `default_index`.
FAST_TIER = "SmolLM2-135M-Instruct"


def load_questions() -> list[dict]:
    return [json.loads(line) for line in (SAMPLE_DOCS / "questions.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator's converted-weights cache for this session (a fresh one: the first load converts)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache_dir: Path) -> None:
    # No setting of the person running the tests may leak in; nothing may write to their home.
    for key in list(os.environ):
        if key.startswith("RAG_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("RAG_GEN_MODEL", FAST_TIER)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Index:
    """An index of sample_docs/ built once through the public API; tests must not modify it."""
    config = Config.load(index=tmp_path_factory.mktemp("index") / ".rag", cache_dir=cache_dir, gen_model=FAST_TIER)
    index = Index.open(config=config, create=True)
    report = index.ingest(SAMPLE_DOCS)
    assert report.indexed >= 10, report
    yield index
    index.close()


@pytest.fixture(scope="session")
def default_index(sample_index: Index, cache_dir: Path) -> Index:
    """The index of sample_docs/ answering with the default generator tier, as a user's would."""
    config = Config.load(index=sample_index.store.directory, cache_dir=cache_dir, gen_model=BUNDLED_GENERATOR)
    index = Index(sample_index.store, config)
    index.embedder = sample_index.embedder
    return index


@pytest.fixture()
def docs_copy(tmp_path: Path) -> Path:
    """A private copy of sample_docs/ that a test may change."""
    dest = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, dest)
    return dest


@pytest.fixture()
def fresh_index(tmp_path: Path, sample_index: Index) -> Index:
    """An empty index that shares the session's already loaded models."""
    index = Index.open(config=Config.load(index=tmp_path / "idx", cache_dir=sample_index.config.cache_dir), create=True)
    index.embedder = sample_index.embedder
    index.generator = sample_index.generator
    yield index
    index.close()


@pytest.fixture(scope="session")
def other_embedder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, different sentence-transformers model: MiniLM plus a projection to 64 dimensions."""
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(bundled_embedder_dir()), device="cpu")
    other = SentenceTransformer(modules=[base[0], base[1], models.Dense(384, 64)], device="cpu")
    path = tmp_path_factory.mktemp("other-model")
    other.save(str(path))
    return path


@pytest.fixture(scope="session")
def postgres() -> postgres_server.Server:
    """A real PostgreSQL server started for this session (skipped, saying why, where none can run)."""
    reason = postgres_server.missing()
    if reason:
        pytest.skip(reason)
    with postgres_server.running() as server:
        yield server


@pytest.fixture()
def pg_url(postgres: postgres_server.Server, request: pytest.FixtureRequest) -> str:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    postgres.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    postgres.sql(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    postgres.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> stores.Backend:
    """Each store in turn, for the tests of what every store must guarantee."""
    if request.param == "sqlite":
        return stores.Backend("sqlite")
    return stores.Backend("postgresql", request.getfixturevalue("postgres"))


@pytest.fixture()
def location(backend: stores.Backend, tmp_path: Path) -> stores.Location:
    """Where a new index lives on each store in turn (nothing created yet)."""
    return backend.new(tmp_path / "idx")


@pytest.fixture()
def any_index(location: stores.Location, sample_index: Index) -> Index:
    """As ``fresh_index``, on each store in turn: the contract every store keeps."""
    index = Index.open(config=location.config(sample_index.config.cache_dir), create=True)
    index.embedder = sample_index.embedder
    index.generator = sample_index.generator
    yield index
    index.close()
