from pathlib import Path

import pytest

from rag import Config, ConfigError


def test_precedence_flag_over_env_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.load().sources_k == 5
    monkeypatch.setenv("RAG_SOURCES_K", "7")
    assert Config.load().sources_k == 7
    assert Config.load(sources_k=9).sources_k == 9
    assert Config.load(sources_k=None).sources_k == 7  # an unset flag does not override


def test_index_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_INDEX", str(tmp_path))
    assert Config.load().index == tmp_path


@pytest.mark.parametrize(
    "env, value, match",
    [
        ("RAG_TOPK", "3", "unknown environment variable RAG_TOPK"),
        ("RAG_TOP_K", "3", "RAG_TOP_K was renamed RAG_SOURCES_K"),
        ("RAG_SOURCES_K", "many", "not a valid int"),
        ("RAG_CHUNK_OVERLAP", "500", "chunk_overlap"),
        ("RAG_STORE", "mysql://u:pw@db/rag", "use a postgresql://"),
    ],
)
def test_bad_settings_fail_loudly(monkeypatch: pytest.MonkeyPatch, env: str, value: str, match: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=match):
        Config.load()


def test_the_store_url_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_STORE", "postgresql://rag:s3cret@db.internal:5432/rag")
    config = Config.load()
    assert config.store == "postgresql://rag:s3cret@db.internal:5432/rag"
    assert config.as_dict()["store"] == "postgresql://rag:***@db.internal:5432/rag"
    assert "s3cret" not in repr(config)
