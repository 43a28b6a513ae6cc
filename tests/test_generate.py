"""The generator: converted-weights cache, decoding settings, and the prompt budget."""

import pytest

from rag import ConfigError, Decoding, Index
from rag.models.generator import Generator


def test_gguf_weights_are_cached_and_reloaded(sample_index: Index) -> None:
    gen = sample_index.generator
    _ = gen.model
    cache = gen.cache_path()
    assert cache is not None and (cache / ".complete").is_file()
    assert (cache / "model.safetensors").is_file()

    again = Generator(gen.source, gen.cache_dir)
    _ = again.model
    assert again.loaded_from == "cache"
    # The cached weights are the same weights.
    import torch

    for (name, a), (_, b) in zip(gen.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_chat_template_is_used(sample_index: Index) -> None:
    text = sample_index.generator.render([{"role": "user", "content": "hi"}])
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "decoding",
    [
        Decoding(top_k=5),
        Decoding(top_p=0.5),
        Decoding(temperature=0.5, num_beams=2),
        Decoding(max_new_tokens=0),
        Decoding(temperature=1.0, top_p=1.5),
    ],
)
def test_bad_decoding_settings_are_refused(decoding: Decoding) -> None:
    with pytest.raises(ConfigError):
        decoding.validate()


def test_greedy_is_the_default() -> None:
    kw = Decoding().generate_kwargs()
    assert kw["do_sample"] is False and kw["num_beams"] == 1


def test_a_causal_lm_folder_can_be_configured(sample_index: Index) -> None:
    # The converted cache is an ordinary transformers folder: configure it as the generator directly.
    folder = sample_index.generator.cache_path()
    assert folder is not None
    _ = sample_index.generator.model  # make sure the cache exists
    from rag import Config

    config = Config.load(index=sample_index.store.directory, gen_model=str(folder))
    index = Index(sample_index.store, config)
    index.embedder = sample_index.embedder
    twelve = Decoding(max_new_tokens=12)
    answer = index.ask("Who started the llama.cpp project?", decoding=twelve, answer_mode="generate")
    assert index.generator.loaded_from == "folder"
    assert answer.answered and 0 < answer.answer_tokens <= 12
