"""The second hostile round: a web page cannot reach the server, documents cannot exhaust the machine, and every
bad input is one line or a 4xx. The numbers in the test names are the cases of the issue that asked for them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.bombs import nested_mail, tall_sheet, tiff_bomb, zip_bomb
from ingest.limits import Limits
from ingest.sandbox import Parser
from rag import Config, Index
from rag.config import redact_url
from rag.retrieval.followup import conversation_query
from rag.server.guard import allowed_hosts, host_of
from tests.stores import copy_index

from .conftest import ROOT
from .test_server import KEY, Served, _server_env, serve_sample


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sample_index: Index, cache_dir: Path) -> Iterator[Served]:
    yield from serve_sample(tmp_path_factory, sample_index, cache_dir)


def _reasons(report) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {Path(s.path).name: s.reason for s in report.skipped}


def _index(tmp_path: Path, sample_index: Index, **settings: object) -> Index:
    config = Config.load(index=tmp_path / "idx", cache_dir=sample_index.config.cache_dir, **settings)
    index = Index.open(config=config, create=True)
    index.embedder = sample_index.embedder
    return index


def _cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env, input=stdin
    )


# --- 1. the server answers only to its own names, and keeps out of other sites' frames ---------------------------


def test_1_host_names_and_origins_it_does_not_own_are_refused(served: Served) -> None:
    with served.client() as client:
        for path, body in (("/v1/search", {"query": "x"}), ("/v1/status", None), ("/v1/chat/completions", {})):
            r = client.request("POST" if body is not None else "GET", path, json=body, headers={"Host": "evil.example"})
            assert r.status_code == 421, (path, r.text)
            assert "evil.example" in r.json()["error"]["message"] and "hits" not in r.text
        r = client.post("/v1/search", json={"query": "attention"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "bad_origin"
        port = served.url.rsplit(":", 1)[1]
        ok = client.post("/v1/search", json={"query": "attention"}, headers={"Host": f"localhost:{port}"})
        assert ok.status_code == 200 and ok.json()["hits"]
        page = client.get("/")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_1_allowed_hosts_are_loopback_the_bound_address_and_what_the_user_adds() -> None:
    hosts = allowed_hosts("10.1.2.3", ["docs.internal"])
    assert {"localhost", "127.0.0.1", "::1", "10.1.2.3", "docs.internal"} <= hosts and "evil.example" not in hosts
    assert host_of("[::1]:8000") == "::1" and host_of("LocalHost:80") == "localhost" and host_of("::1") == "::1"


# --- 2, 3. bombs are skipped with their reason, quickly, and the rest of the folder is indexed --------------------


@pytest.mark.parametrize("ext", [".docx", ".pptx", ".xlsx", ".odt", ".epub"])
def test_2_zip_bombs_are_skipped_before_inflating(tmp_path: Path, sample_index: Index, ext: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    bomb = zip_bomb(docs / f"bomb{ext}", 40)
    assert bomb.stat().st_size < 200_000
    (docs / "fine.md").write_text("Lighthouses guide ships at night.")
    with _index(tmp_path, sample_index) as index:
        started = time.monotonic()
        report = index.ingest(docs)
        assert time.monotonic() - started < 30
    skipped = {Path(s.path).name: s for s in report.skipped}
    assert skipped[bomb.name].reason == "too-large" and "RAG_MAX_ZIP_RATIO" in skipped[bomb.name].detail
    assert report.added == 1


def test_2_what_a_zip_may_inflate_to_in_all_is_a_setting(tmp_path: Path, sample_index: Index) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    zip_bomb(docs / "big.docx", 3)  # 3 MB of XML: under the ratio limit's reach only in all
    with _index(tmp_path, sample_index, max_unzipped_mb=2, max_zip_ratio=100_000) as index:
        report = index.ingest(docs)
    skipped = report.skipped[0]
    assert skipped.reason == "too-large" and "RAG_MAX_UNZIPPED_MB" in skipped.detail


def test_3_a_tiff_of_many_frames_is_refused_before_decoding_any(tmp_path: Path, sample_index: Index) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    tiff_bomb(docs / "pages.tiff", 201, 64)
    with _index(tmp_path, sample_index) as index:
        report = index.ingest(docs)
    assert _reasons(report) == {"pages.tiff": "too-many-pages"}
    assert "RAG_MAX_FRAMES" in report.skipped[0].detail


def test_3_sandbox_memory_and_time_limits_skip_the_file_and_replace_the_worker(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_text("".join(f"{i},word{i},{i * 3}\n" for i in range(300_000)))
    small = tmp_path / "small.md"
    small.write_text("# Owls\n\nOwls hunt at night.")
    with Parser(Limits(memory_mb=150, rows=10**7), None, workers=1) as parser:
        with pytest.raises(Exception) as caught:
            parser.parse(big, big.read_bytes())
        assert getattr(caught.value, "reason", None) in ("too-large", "parser-crashed"), caught.value
        assert "RAG_PARSE_MEMORY_MB" in caught.value.detail  # type: ignore[attr-defined]
        assert "Owls hunt" in parser.parse(small, small.read_bytes()).document.text  # a new worker took over
    with Parser(Limits(seconds=1, rows=10**7), None, workers=1) as parser:
        with pytest.raises(Exception) as caught:
            parser.parse(big, big.read_bytes())
        assert getattr(caught.value, "reason", None) == "too-slow" and "RAG_PARSE_SECONDS" in str(caught.value)
        assert "Owls hunt" in parser.parse(small, small.read_bytes()).document.text


def test_a_script_without_a_main_guard_ingests_through_the_workers(tmp_path: Path, cache_dir: Path) -> None:
    # The README's example as a plain script: multiprocessing would run it again in each parse worker.
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owls.md").write_text("# Owls\n\nOwls hunt at night.")
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\nfrom rag import Index\nprint('script ran', flush=True)\n"
        "with Index.open(sys.argv[1], create=True) as index:\n    print(index.ingest(sys.argv[2]).added)\n"
    )
    env = {**os.environ, "RAG_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "idx"), str(docs)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.split() == ["script", "ran", "1"], result.stdout  # ran once, and the file is indexed


# --- 4. store URLs never show their password, and a bad one is one line -------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://u:se/cr3t@127.0.0.1:1/db", "cannot use the store postgresql://u:***@127.0.0.1:1/db"),
        ("postgresql://u:p@ss@127.0.0.1:1/db", "percent-encoded"),
        ("postgresql://u:pw@127.0.0.1:notaport/db", "the port is not a number"),
    ],
)
def test_4_store_urls_are_redacted_and_malformed_ones_are_one_line(url: str, says: str, tmp_path: Path) -> None:
    result = _cli("--index", str(tmp_path / "i"), "--store", url, "status")
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr, result.stderr
    for secret in ("cr3t", "p@ss", "ss@", ":pw@"):
        assert secret not in result.stderr
    assert "ss@" not in redact_url("postgresql://u:p@ss@h:5/db")


# --- 5. bytes that are not text, out-of-range numbers and unusable paths are 4xx or one line --------------------


def test_5_an_argument_that_is_not_utf8_is_a_usage_error(sample_index: Index) -> None:
    index_dir = str(sample_index.store.directory)
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"rag.cli", b"--index", index_dir.encode(), b"search", b"\xff\xfe Zephyr"],
        capture_output=True,
        cwd=ROOT,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in stderr and "not valid UTF-8" in stderr, stderr


HUGE_SEED = '{"model": "rag", "seed": 99999999999999999999999999, "messages": [{"role": "user", "content": "Who?"}]}'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/search", '{"query": "\\ud800 attention"}'),
        ("/v1/chat/completions", '{"model": "rag", "messages": [{"role": "user", "content": "why \\ud800?"}]}'),
        ("/v1/chat/completions", HUGE_SEED),
        ("/v1/ingest", '{"folder": "/tmp/a\\u0000b"}'),
        ("/v1/ingest", json.dumps({"folder": "/tmp/" + "n" * 5000})),
    ],
    ids=["surrogate-search", "surrogate-chat", "huge-seed", "nul-folder", "long-folder"],
)
def test_5_bad_values_over_http_are_400_not_500(served: Served, path: str, body: str) -> None:
    with served.client() as client:
        r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] and "internal" not in r.text


# --- 6. slow clients are cut off ---------------------------------------------------------------------------------


def test_6_dripped_headers_and_bodies_are_cut_off(served: Served) -> None:
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    header_drip = socket.create_connection((host, int(port)))
    header_drip.sendall(b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    body_drip = socket.create_connection((host, int(port)))
    body_drip.sendall(
        b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    deadline = time.monotonic() + 40
    closed: dict[str, bytes] = {}
    for sock in (header_drip, body_drip):
        sock.settimeout(1)
    while time.monotonic() < deadline and len(closed) < 2:
        for name, sock in (("header", header_drip), ("body", body_drip)):
            if name in closed:
                continue
            try:
                sock.sendall(b" ")  # one byte a second, for as long as the server listens
                data = sock.recv(4096)
                closed[name] = data
            except TimeoutError:
                continue
            except OSError:
                closed[name] = b""
        time.sleep(0.5)
    header_drip.close()
    body_drip.close()
    assert set(closed) == {"header", "body"}, "a dripping client was never cut off"
    assert closed["body"] == b"" or b"408" in closed["body"].split(b"\r\n")[0], closed["body"][:200]


# --- 7. auth and binding ----------------------------------------------------------------------------------------


def test_7_the_bearer_scheme_is_case_insensitive(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        assert client.get("/v1/status", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
        assert client.get("/v1/status", headers={"Authorization": f"BEARER {KEY}"}).status_code == 200
        assert client.get("/v1/status", headers={"Authorization": f"Basic {KEY}"}).status_code == 401


def test_7_an_api_key_of_none_is_a_key_not_no_key() -> None:
    assert Config.load(api_key="none").api_key == "none"
    assert Config.load(api_key="").api_key is None


def test_7_a_host_that_is_not_this_machine_fails_before_the_models_load(
    tmp_path: Path, sample_index: Index, cache_dir: Path
) -> None:
    env = _server_env(tmp_path, cache_dir)
    started = time.monotonic()
    args = ("--index", str(sample_index.store.directory), "serve", "--host", "192.0.2.1", "--port", "0")
    result = _cli(*args, env=env)
    assert time.monotonic() - started < 15
    assert result.returncode in (1, 2) and "loading the models" not in result.stderr, result.stderr
    assert "address of this machine" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_7_a_taken_port_is_said_at_once(tmp_path: Path, sample_index: Index, cache_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = _cli("--index", str(sample_index.store.directory), "serve", "--port", port, env=os.environ.copy())
    assert result.returncode in (1, 2) and "choose another --port" in result.stderr, result.stderr


# --- 8. a symlink out of the folder that was never indexed is not "removed" --------------------------------------


def test_8_an_outside_symlink_never_indexed_is_not_counted_removed(fresh_index: Index, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha text about owls.")
    (docs / "leak.txt").symlink_to("/etc/hostname")
    first, second = fresh_index.ingest(docs), fresh_index.ingest(docs)
    assert (first.removed, second.removed) == (0, 0)
    assert _reasons(second)["leak.txt"] == "outside-folder"


# --- 9. forwarded and attached messages are followed to a depth, the rest reported ---------------------------------


@pytest.mark.parametrize("forwarded", [True, False], ids=["message-rfc822", "attached-eml"])
def test_9_nested_mail_is_indexed_to_the_depth_limit_and_the_rest_reported(
    fresh_index: Index, tmp_path: Path, forwarded: bool
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    nested_mail(docs / "nest.eml", 5, forwarded=forwarded)
    report = fresh_index.ingest(docs)
    for level in (1, 2, 3):
        assert fresh_index.search(f"NEST{level}", retrieval="bm25"), level
    assert not fresh_index.search("NEST4", retrieval="bm25")
    deep = [s for s in report.skipped if s.reason == "too-deep"]
    assert len(deep) == 1 and "RAG_MAX_DEPTH" in deep[0].detail and "nest.eml/" in deep[0].path


# --- 10. a spreadsheet with too many rows ends with its reason --------------------------------------------------


def test_10_a_spreadsheet_past_the_row_limit_is_skipped_with_the_setting(tmp_path: Path, sample_index: Index) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    tall_sheet(docs / "tall.xlsx", 3000)
    (docs / "fine.md").write_text("Lighthouses guide ships at night.")
    with _index(tmp_path, sample_index, max_rows=1000) as index:
        report = index.ingest(docs)
    skipped = {Path(s.path).name: s for s in report.skipped}
    assert skipped["tall.xlsx"].reason == "too-many-rows" and "RAG_MAX_ROWS" in skipped["tall.xlsx"].detail
    assert report.added == 1


# --- 11, 12. chat from a pipe goes on past a bad line; a follow-up after a long message is searched --------------


def test_11_chat_from_a_pipe_answers_the_questions_after_a_too_long_line(sample_index: Index, tmp_path: Path) -> None:
    copy_index(sample_index.store.directory, tmp_path / "idx")  # chat stores the conversation: never in the shared one
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_CACHE_DIR=str(sample_index.config.cache_dir), RAG_GEN_MODEL=sample_index.config.gen_model)
    lines = "x" * 5000 + "\nWho introduced nucleus (top-p) sampling?\n"
    result = _cli("--index", str(tmp_path / "idx"), "chat", "--answer-mode", "extract", env=env, stdin=lines)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "characters long" in result.stderr and "Holtzman" in result.stdout, (result.stdout, result.stderr)


def test_12_a_follow_up_after_a_long_message_stays_searchable(sample_index: Index) -> None:
    earlier = "Here is my draft about attention heads: " + "words " * 800  # 4.8 KB
    query = conversation_query("how much?", [earlier])
    assert query.startswith("how much?") and len(query) < 1100
    assert sample_index.search(query)  # under the question limit: searched, not refused
