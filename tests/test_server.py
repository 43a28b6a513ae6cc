"""`rag serve`: a real server process on a loopback port, spoken to by the official `openai` client and plain HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rag import Index
from tests.conftest import FAST_TIER, SAMPLE_DOCS
from tests.stores import copy_index

KEY = "test-key-0123456789"
QUESTION = "Who introduced nucleus (top-p) sampling?"


@dataclass
class Served:
    url: str
    index_dir: Path
    root: Path  # the one folder the server may ingest under
    process: subprocess.Popen[str]

    def client(self, key: str | None = KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def _server_env(tmp: Path, cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(HOME=str(tmp / "home"), RAG_CACHE_DIR=str(cache_dir), RAG_GEN_MODEL=FAST_TIER, RAG_API_KEY=KEY)
    return env


def start_server(index_dir: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`rag serve` on a free loopback port; returns the process and its base URL once it listens."""
    cmd = [sys.executable, "-m", "rag.cli", "--index", str(index_dir), "serve", "--port", "0", *extra]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:
        if line.startswith("rag serve: http://"):
            return proc, line.split()[2].rstrip("/")
        said.append(line)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"rag serve did not start (exit {proc.wait()}): {''.join(said[-5:])}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, sample_index: Index, cache_dir: Path) -> Iterator[Served]:
    yield from serve_sample(tmp_path_factory, sample_index, cache_dir)


def serve_sample(tmp_path_factory: pytest.TempPathFactory, sample_index: Index, cache_dir: Path) -> Iterator[Served]:
    """A server over a copy of the sample index, with the API key and one allowed ingest root; stopped after."""
    tmp = tmp_path_factory.mktemp("served")
    index_dir = tmp / "index"
    copy_index(sample_index.store.directory, index_dir)
    root = tmp / "allowed"
    root.mkdir()
    proc, url = start_server(index_dir, _server_env(tmp, cache_dir), "--allow-root", str(root))
    yield Served(url, index_dir, root, proc)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _openai(served: Served):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _document(path: str) -> str:
    """The document's text as ingest extracted it: the text citation offsets count in."""
    from ingest.loaders import load

    return load(Path(path)).text


def test_the_openai_client_gets_a_grounded_cited_answer(served: Served) -> None:
    client = _openai(served)
    assert {m.id for m in client.models.list()} >= {"rag", FAST_TIER}
    reply = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": QUESTION}])
    content = reply.choices[0].message.content or ""
    rag = reply.model_extra["rag"]
    assert rag["answered"] and rag["text"] and content.startswith(rag["text"])
    assert rag["cited"], rag
    cited = rag["sources"][rag["cited"][0] - 1]
    assert f"[{rag['cited'][0]}] {cited['path']}" in content  # the source is named under the answer
    for claim in rag["support"]:
        if claim["supported"]:  # every quote is the document's own text at the offsets it names
            assert _document(claim["path"])[claim["start"] : claim["end"]] == claim["quote"]
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_the_openai_client_streams_the_answer_then_its_sources(served: Served) -> None:
    client = _openai(served)
    stream = client.chat.completions.create(
        model=FAST_TIER, messages=[{"role": "user", "content": QUESTION}], stream=True, max_tokens=32
    )
    pieces, last = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert last is not None and last.choices[0].finish_reason == "stop"
    rag = last.model_extra["rag"]
    assert len(pieces) >= 2  # streamed, not sent in one piece
    assert rag["text"] in "".join(pieces) and rag["sources"]


def test_search_status_and_health_over_plain_http(served: Served) -> None:
    with served.client() as http:
        assert http.get("/healthz").json() == {"ok": True}
        hits = http.post("/v1/search", json={"query": "nucleus sampling", "k": 3}).json()["hits"]
        assert len(hits) == 3 and any("sampling" in h["path"] for h in hits)
        status = http.get("/v1/status").json()
        assert status["documents"] >= 10 and status["chunks"] > 0
        page = http.get("/")
        assert page.status_code == 200 and "<form" in page.text


@pytest.mark.parametrize(
    ("request_args", "status", "says"),
    [
        ({"content": b'{"model": "rag", "messages": [', "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ({"json": {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}}, 404, "gpt-4"),
        ({"json": {"model": "rag", "messages": []}}, 400, "messages"),
        ({"json": {"model": "rag", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}}, 400, "max"),
        ({"json": {"model": "rag", "messages": [{"role": "user", "content": "?!"}]}}, 400, "no words"),
        ({"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}}, 413, "bytes"),
    ],
)
def test_bad_chat_requests_get_a_clear_json_error(served: Served, request_args: dict, status: int, says: str) -> None:
    with served.client() as http:
        before = http.get("/v1/status").json()
        r = http.post("/v1/chat/completions", **request_args)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert says in error["message"] and "Traceback" not in r.text
        assert http.get("/v1/status").json()["chunks"] == before["chunks"]


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_api_key_is_refused(served: Served, key: str | None) -> None:
    with served.client(key) as http:
        r = http.post("/v1/search", json={"query": "top-p"})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert http.get("/healthz").status_code == 200  # a health check needs no key


def test_ingest_runs_as_a_job_only_under_an_allowed_root(served: Served, tmp_path: Path) -> None:
    with served.client() as http:
        chunks = http.get("/v1/status").json()["chunks"]
        outside = http.post("/v1/ingest", json={"folder": str(SAMPLE_DOCS)})
        assert outside.status_code == 403 and "allowed root" in outside.json()["error"]["message"]
        missing = http.post("/v1/ingest", json={"folder": str(served.root / "nope")})
        assert missing.status_code == 404 and "does not exist" in missing.json()["error"]["message"]
        assert http.get("/v1/status").json()["chunks"] == chunks

        notes = served.root / "notes"
        notes.mkdir()
        (notes / "kettle.md").write_text("# Kettles\n\nThe blue kettle in the staff kitchen was bought in 2019.\n")
        job = http.post("/v1/ingest", json={"folder": str(notes)})
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 120
        while (state := http.get(f"/v1/jobs/{job.json()['id']}").json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["state"] == "done" and state["report"]["added"] == 1, state
        hits = http.post("/v1/search", json={"query": "when was the blue kettle bought", "k": 1}).json()["hits"]
        assert hits[0]["path"].endswith("kettle.md")
        assert http.get("/v1/jobs/nope").status_code == 404


def test_a_non_loopback_host_needs_an_api_key(tmp_path: Path, sample_index: Index) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    cmd = [sys.executable, "-m", "rag.cli", "--index", str(sample_index.store.directory), "serve", "--host", "0.0.0.0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "RAG_API_KEY" in done.stderr and "--insecure" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_client_that_leaves_mid_stream_does_not_hold_up_the_next(served: Served) -> None:
    body = {"model": "rag", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with served.client() as http:
        with http.stream("POST", "/v1/chat/completions", json={**body, "answer_mode": "generate"}) as r:
            first = next(r.iter_lines())
            assert json.loads(first.removeprefix("data: "))["object"] == "chat.completion.chunk"
        reply = http.post("/v1/chat/completions", json={**body, "stream": False, "answer_mode": "extract"})
        assert reply.status_code == 200 and reply.json()["rag"]["answered"]


CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(
    not (Path(CHROMEDRIVER).is_file() and Path(CHROMIUM).is_file()),
    reason="no chromium/chromedriver: `make setup` installs them with apt-get when run as root",
)
def test_the_page_streams_an_answer_and_highlights_its_quote_in_a_real_browser(served: Served, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # both paths given: Selenium never looks for (or downloads) a driver
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(f"{served.url}/#key={KEY}")
        WebDriverWait(driver, 30).until(lambda d: "documents" in d.find_element(By.ID, "status").text)
        # Count the answer's text changes as they happen: a streamed answer changes more than once.
        driver.execute_script(
            "window.changes = 0; new MutationObserver(() => window.changes++)"
            ".observe(document.getElementById('turns'), {subtree: true, childList: true, characterData: true});"
        )
        driver.find_element(By.ID, "question").send_keys(QUESTION)
        driver.find_element(By.ID, "send").click()
        answer = WebDriverWait(driver, 120).until(lambda d: d.find_element(By.CSS_SELECTOR, ".answer[data-done]"))
        assert answer.text and "error" not in answer.get_attribute("class")
        marks = driver.find_elements(By.CSS_SELECTOR, ".source.cited mark")
        assert marks and all(m.text.strip() for m in marks)
        passage = marks[0].find_element(By.XPATH, "./ancestor::div[contains(@class, 'source')]")
        where = passage.find_element(By.CLASS_NAME, "where").text
        assert "sample_docs" in where and "chars" in where  # the file and the offsets, next to the quote
        assert driver.execute_script("return window.changes") >= 3
        driver.save_screenshot(str(tmp_path / "page.png"))
        if shot := os.environ.get("SERVE_PAGE_SCREENSHOT"):  # how docs/serve-page.png was made
            driver.save_screenshot(shot)
    finally:
        driver.quit()
