"""Request bodies of the HTTP API. Chat follows OpenAI's chat-completions request; unknown fields are ignored
as OpenAI clients send several this server has no use for (``n``, ``user``, ``presence_penalty``...)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Longer answers are refused rather than cut: decoding one is minutes of a shared generator on two cores.
MAX_TOKENS_LIMIT = 512
# torch's generator takes a 64-bit seed.
MAX_SEED = 2**63 - 1


class _Body(BaseModel):
    """A request body whose text is real Unicode: JSON may carry a lone surrogate ("\\ud800"), which no tokenizer,
    database or log can encode."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_lone_surrogates(cls, value: Any) -> Any:
        _check_text(value)
        return value


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not text; send valid UTF-8") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k)
            _check_text(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _check_text(v)


class Message(_Body):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, object]] | None = None

    def text(self) -> str:
        """The message's text; OpenAI's list-of-parts form keeps only its text parts."""
        if isinstance(self.content, list):
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class FilterSpec(_Body):
    """Which documents retrieval may use, as :class:`rag.types.Filters`."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    kinds: list[str] = []
    modified_since: float | None = None


class ChatRequest(_Body):
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    # Not OpenAI's: the answer mode (auto, quote, generate, extract) and how many sources to retrieve.
    answer_mode: str | None = None
    k: int | None = Field(default=None, ge=1, le=50)
    filters: FilterSpec | None = None


class SearchRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    query: str
    k: int = Field(default=5, ge=1, le=100)
    retrieval: Literal["dense", "bm25", "hybrid"] | None = None
    path: str | None = None  # a glob, as `rag search --path`


class IngestRequest(_Body):
    model_config = ConfigDict(extra="forbid")

    folder: str
    delete: bool = True
