import codecs

import pytest

from ingest.encoding import NotText, decode, looks_binary

TEXT = "Attention is all you need — naïve café “quotes”\nline two\n"


@pytest.mark.parametrize(
    "data, encoding",
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "utf-32"),
        (codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"), "utf-32"),
    ],
)
def test_unicode_with_and_without_bom(data: bytes, encoding: str) -> None:
    assert decode(data) == (TEXT, encoding)


def test_cp1252_is_detected() -> None:
    text = ("The café served a naïve “transformer” — priced at 5 € — to every guest. " * 8).strip()
    decoded, encoding = decode(text.encode("cp1252"))
    assert decoded == text
    assert encoding.replace("_", "").lower() in {"cp1252", "windows1252"}


def test_crlf_is_normalised() -> None:
    assert decode(b"a\r\nb\rc\n")[0] == "a\nb\nc\n"


def test_binary_is_refused() -> None:
    data = bytes(range(256)) * 64
    assert looks_binary(data)
    with pytest.raises(NotText) as err:
        decode(data)
    assert err.value.reason in {"binary", "undecodable"}


def test_bom_less_utf16_is_not_called_binary() -> None:
    assert not looks_binary(("plain ascii text " * 20).encode("utf-16-le"))
