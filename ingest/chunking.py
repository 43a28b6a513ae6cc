"""Cut a loaded document into chunks sized in the embedding model's own tokens.

The tokenizer comes in as a plain function, so this module knows nothing of models. Each section (a heading's
stretch, a PDF page) is split on its own with langchain's recursive splitter; a final guard re-cuts any chunk the
splitter's approximate merging left above the model's limit, so nothing is ever silently truncated by the embedder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from ingest.loaders import LoadedDocument, Section
from ingest.records import Chunk

# Character offsets (start, end) of each token of a text, special tokens excluded.
Tokenize = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class ChunkerSettings:
    """What a chunk was built with; recorded in the index so later runs cut the same way."""

    chunk_tokens: int
    chunk_overlap: int
    max_tokens: int  # hard ceiling: the embedder's max_seq_length minus its special tokens
    version: int = 1  # bump when the cutting logic changes what chunks come out

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def key(self) -> str:
        """A short label recorded per document: chunks cut with other settings are re-cut on the next sync."""
        return f"t{self.chunk_tokens}-o{self.chunk_overlap}-m{self.max_tokens}-v{self.version}"


class Chunker:
    def __init__(self, settings: ChunkerSettings, tokenize: Tokenize) -> None:
        if settings.chunk_tokens > settings.max_tokens:
            raise ValueError(f"chunk_tokens {settings.chunk_tokens} exceeds the model limit {settings.max_tokens}")
        self.settings = settings
        self._tokenize = tokenize
        self._splitters: dict[str | None, object] = {}

    def count(self, text: str) -> int:
        return len(self._tokenize(text))

    def _splitter(self, language: str | None):  # -> RecursiveCharacterTextSplitter
        if language not in self._splitters:
            from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

            separators = (
                RecursiveCharacterTextSplitter.get_separators_for_language(Language(language))
                if language
                else ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
            )
            self._splitters[language] = RecursiveCharacterTextSplitter(
                separators=separators,
                keep_separator="end" if language is None else "start",
                chunk_size=self.settings.chunk_tokens,
                chunk_overlap=self.settings.chunk_overlap,
                length_function=self.count,
                strip_whitespace=True,
            )
        return self._splitters[language]

    def split(self, doc: LoadedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        splitter = self._splitter(doc.language)
        for section in doc.sections:
            for start, end in self._split_section(doc.text, section, splitter):
                piece = doc.text[start:end]
                for s, e, n in self._enforce_limit(piece):
                    chunks.append(
                        Chunk(len(chunks), piece[s:e], start + s, start + e, n, section.page, section.heading)
                    )
        return chunks

    def _split_section(self, text: str, section: Section, splitter) -> list[tuple[int, int]]:
        body = text[section.start : section.end]
        spans = []
        cursor = 0
        for piece in splitter.split_text(body):
            # The splitter returns stripped substrings in order; overlapping chunks start strictly later.
            at = body.find(piece, cursor)
            if at < 0:  # cannot happen with strip-only splitters; fall back to a search from the start
                at = body.find(piece)
            if at < 0:
                raise AssertionError("splitter returned text that is not in the document")
            spans.append((section.start + at, section.start + at + len(piece)))
            cursor = at + 1
        return spans

    def _enforce_limit(self, piece: str) -> list[tuple[int, int, int]]:
        """(start, end, tokens) windows of ``piece``, each at most ``max_tokens`` tokens."""
        offsets = self._tokenize(piece)
        limit = self.settings.max_tokens
        if len(offsets) <= limit:
            return [(0, len(piece), len(offsets))]
        windows = []
        i = 0
        while i < len(offsets):
            j = min(i + self.settings.chunk_tokens, len(offsets))
            # Re-count: text cut at token boundaries can tokenize differently at its edges.
            while (n := self.count(piece[offsets[i][0] : offsets[j - 1][1]])) > limit and j > i + 1:
                j -= 1
            windows.append((offsets[i][0], offsets[j - 1][1], n))
            i = j
        return windows
