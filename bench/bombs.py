"""Hostile files, small on disk, built on the spot: zip bombs in each zip-based format, a TIFF of many frames,
a spreadsheet with too many rows, mail nested too deep. The tests build them at small sizes; `python -m bench
bombs` builds them at the sizes of the issue that asked for them, ingests them beside sample_docs/ and reports
the peak resident memory of the whole process tree and how long each bomb took to be skipped.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The XML part of each zip-based format, and the element repeated until it inflates to the size asked for.
_PARTS = {
    ".docx": ("word/document.xml", b"<w:p><w:r><w:t>bomb</w:t></w:r></w:p>"),
    ".pptx": ("ppt/slides/slide1.xml", b"<a:p><a:r><a:t>bomb</a:t></a:r></a:p>"),
    ".xlsx": ("xl/worksheets/sheet1.xml", b"<row><c t='inlineStr'><is><t>bomb</t></is></c></row>"),
    ".odt": ("content.xml", b"<text:p>bomb</text:p>"),
    ".epub": ("OEBPS/chapter1.xhtml", b"<p>bomb</p>"),
}


def zip_bomb(path: Path, inflated_mb: int) -> Path:
    """A file of ``path``'s zip-based format whose XML part inflates to ``inflated_mb`` MB."""
    name, unit = _PARTS[path.suffix]
    block = unit * ((1 << 20) // len(unit) + 1)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", b"<Types/>")
        if path.suffix == ".epub":
            z.writestr("mimetype", b"application/epub+zip")
        with z.open(name, "w", force_zip64=True) as f:
            for _ in range(inflated_mb):
                f.write(block[: 1 << 20])
    return path


def tiff_bomb(path: Path, frames: int, side: int) -> Path:
    """A multi-page TIFF of ``frames`` blank ``side`` x ``side`` pages (CCITT G4: a few hundred bytes a page)."""
    from PIL import Image

    page = Image.new("1", (side, side), 1)
    page.save(path, compression="group4", save_all=True, append_images=[page] * (frames - 1))
    return path


def tall_sheet(path: Path, rows: int) -> Path:
    """A real .xlsx of ``rows`` rows (openpyxl's streaming writer)."""
    import openpyxl

    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("rows")
    for r in range(rows):
        sheet.append([r, f"row {r}", r * 0.5])
    book.save(path)
    return path


def nested_mail(path: Path, depth: int, forwarded: bool = True) -> Path:
    """An .eml whose message carries a message ``depth`` levels deep, each saying its own level: forwarded
    (message/rfc822 parts) or attached as .eml files."""
    inner = None
    for level in range(depth, 0, -1):
        message = EmailMessage()
        message["Subject"] = f"level {level}"
        message["From"] = "a@example.org"
        message.set_content(f"This message is level {level} of the nest, codeword NEST{level}.")
        if inner is not None:
            if forwarded:
                message.add_attachment(inner)
            else:
                message.add_attachment(
                    inner.as_bytes(), maintype="application", subtype="octet-stream", filename=f"level{level + 1}.eml"
                )
        inner = message
    assert inner is not None
    path.write_bytes(inner.as_bytes())
    return path


def bomb_folder(folder: Path, *, inflated_mb: int = 1100, frames: int = 1000, side: int = 3000) -> list[Path]:
    """The bombs of the issue, at its sizes (or smaller ones), in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    bombs = [zip_bomb(folder / f"bomb{ext}", inflated_mb) for ext in _PARTS]
    bombs.append(tiff_bomb(folder / "pages.tiff", frames, side))
    bombs.append(nested_mail(folder / "nested.eml", 6))
    return bombs


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that ended between the listing and now
            total += p.memory_info().rss
    return total


def run_ingest(folder: Path, index: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`rag ingest --json` of ``folder``: its report, wall seconds and the peak RSS of its process tree."""
    cmd = [sys.executable, "-m", "rag.cli", "--index", str(index), "ingest", str(folder), "--json"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=3600)
    done.set()
    sampler.join()
    return {
        "exit": proc.returncode,
        "seconds": time.monotonic() - started,
        "peak_rss_mb": peak / 2**20,
        "report": json.loads(out) if proc.returncode == 0 else None,
        "stderr": err[-500:],
    }


def run(smoke: bool = False) -> list[dict[str, Any]]:
    """Each bomb alone (seconds until skipped), then all of them beside sample_docs/ (peak RSS, exit code)."""
    size = {"inflated_mb": 20, "frames": 300, "side": 64} if smoke else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        docs = tmp_path / "docs"
        shutil.copytree(ROOT / "sample_docs", docs)
        bombs = bomb_folder(docs / "bombs", **size)
        for bomb in bombs:
            alone = tmp_path / f"alone-{bomb.name}"
            alone.mkdir()
            shutil.copy(bomb, alone)
            result = run_ingest(alone, tmp_path / f"index-{bomb.name}")
            skipped = (result["report"] or {}).get("skipped", [])
            rows.append(
                {
                    "case": bomb.name,
                    "bytes": bomb.stat().st_size,
                    "seconds": round(result["seconds"], 1),
                    "peak_rss_mb": round(result["peak_rss_mb"]),
                    "skipped": "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in skipped),
                }
            )
        result = run_ingest(docs, tmp_path / "index-all")
        report = result["report"] or {}
        rows.append(
            {
                "case": "all bombs + sample_docs",
                "bytes": sum(p.stat().st_size for p in docs.rglob("*") if p.is_file()),
                "seconds": round(result["seconds"], 1),
                "peak_rss_mb": round(result["peak_rss_mb"]),
                "skipped": json.dumps(report.get("skipped_by_reason", {})) + f" indexed {report.get('indexed')}",
                "exit": result["exit"],
            }
        )
    return rows


if __name__ == "__main__":
    for row in run(smoke="--smoke" in sys.argv):
        print(row)
