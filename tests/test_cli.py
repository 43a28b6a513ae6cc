"""The command line: exit codes, one-line errors, JSON output, and an instant --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rag import Index

from .conftest import ROOT


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=600,
    )


def test_help_and_import_load_no_heavy_modules() -> None:
    code = (
        "import sys, rag, rag.cli;"
        "rag.cli.build_parser().format_help();"
        "heavy = ('torch', 'transformers', 'sentence_transformers', 'faiss', 'numpy', 'sqlalchemy');"
        "bad = [m for m in heavy if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    result = run("--help")
    assert result.returncode == 0
    assert "ingest" in result.stdout and "ask" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["search"],
        ["search", "q", "-k", "0"],
        ["ask", "q", "--top-p", "0.9"],  # top-p without sampling
        ["ask", "q", "--temperature", "-1"],
        ["ask", "q", "--max-new-tokens", "abc"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    result = run(*args, "--index", str(tmp_path / "none"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_environment_setting_is_a_usage_error(tmp_path: Path) -> None:
    result = run("status", env={"RAG_CHUNK_SIZE": "9", "RAG_INDEX": str(tmp_path)})
    assert result.returncode == 2
    assert "RAG_CHUNK_SIZE" in result.stderr


def test_missing_folder_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run("--index", str(tmp_path / "idx"), "ingest", str(tmp_path / "nope"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "does not exist" in lines[0]
    assert not (tmp_path / "idx").exists()  # nothing created for nothing


@pytest.mark.parametrize("command", [["search", "attention"], ["ask", "what is attention?"], ["status"]])
def test_missing_index_exits_1_with_one_line(command: list[str], tmp_path: Path) -> None:
    result = run(*command, "--index", str(tmp_path / "none"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rag ingest" in lines[0]


def test_search_json(sample_index: Index) -> None:
    result = run(
        "search", "Who introduced nucleus sampling?", "-k", "3", "--json", "--index", str(sample_index.store.directory)
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["hits"]) == 3
    assert [h["rank"] for h in data["hits"]] == [1, 2, 3]
    assert data["hits"][0]["path"].endswith(("sampling.html", "sampling.py"))
    assert result.stderr == ""  # no progress bars or warnings when piped


def test_ask_json_and_status(sample_index: Index) -> None:
    index = str(sample_index.store.directory)
    # 16: below auto's own cap on a free answer (24), so the flag is what the settings record.
    result = run("ask", "Who started the llama.cpp project?", "--max-new-tokens", "16", "--json", "--index", index)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answered"] and data["text"]
    assert data["sources"][0]["path"].endswith("quantization_notes.txt")
    assert data["settings"]["decoding"]["max_new_tokens"] == 16
    assert {"retrieve_s", "generate_s", "first_token_s"} <= set(data["timings"])

    status = json.loads(run("status", "--json", "--index", index).stdout)
    assert status["documents"] == sample_index.store.counts()[0]
    assert status["embedder"]["dim"] == 384


def test_ingest_text_output_and_resync(sample_index: Index, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Tokens\n\nA token is a piece of text.\n")
    (docs / "b.bin.txt").write_bytes(b"\x00\xff" * 50)
    index = str(tmp_path / "idx")
    first = run("ingest", str(docs), "--index", index)
    assert first.returncode == 0, first.stderr
    assert "1 added" in first.stdout and "1 skipped" in first.stdout and "binary" in first.stdout
    again = run("ingest", str(docs), "--index", index, "--json")
    data = json.loads(again.stdout)
    assert (data["added"], data["unchanged"], data["chunks_added"]) == (0, 1, 0)
    assert data["skipped"][0]["reason"] == "binary"


def test_demo_question_runs_from_the_readme(default_index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make demo` asks the Makefile's QUESTION with the default tier; run it as a person would (text output, not
    # a terminal).
    monkeypatch.delenv("RAG_GEN_MODEL")
    makefile = (ROOT / "Makefile").read_text()
    question = re.search(r"^QUESTION \?= (.+)$", makefile, re.MULTILINE).group(1)
    result = run("ask", question, "--index", str(default_index.store.directory))
    assert result.returncode == 0, result.stderr
    answer, _, sources = result.stdout.partition("\nSources:\n")
    assert "Ari Holtzman" in answer.splitlines()[0]  # the short answer, not only the sentence quoted under it
    assert "sample_docs/decoding/sampling.html" in sources
