"""Byte-level (default, vocab 256, any UTF-8 round-trips) and character-level tokenizers."""

from __future__ import annotations

import codecs
from typing import Any, Protocol

from bdh.errors import TokenizerError


class StreamDecoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...
    def flush(self) -> str: ...


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def stream_decoder(self) -> StreamDecoder: ...
    def to_dict(self) -> dict[str, Any]: ...


class _Utf8StreamDecoder:
    """Turns bytes into text as they arrive, holding back incomplete UTF-8 sequences."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, ids: list[int]) -> str:
        return self._decoder.decode(bytes(ids))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class ByteTokenizer:
    """Tokens are the UTF-8 bytes of the text."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return _Utf8StreamDecoder()

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind}


class _CharStreamDecoder:
    def __init__(self, tokenizer: CharTokenizer) -> None:
        self._tokenizer = tokenizer

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids)

    def flush(self) -> str:
        return ""


class CharTokenizer:
    """One token per distinct character of the training corpus."""

    kind = "char"

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            raise TokenizerError("a character vocabulary needs distinct characters")
        self.chars = chars
        self.vocab_size = len(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            c = err.args[0]
            raise TokenizerError(
                f"character {c!r} (U+{ord(c):04X}) is not in the tokenizer's vocabulary"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def stream_decoder(self) -> StreamDecoder:
        return _CharStreamDecoder(self)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "chars": self.chars}


TOKENIZER_KINDS = ("byte", "char")


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    kind = data.get("type")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char" and isinstance(data.get("chars"), str):
        return CharTokenizer(data["chars"])
    raise TokenizerError(f"unknown or malformed tokenizer description: {data!r:.80}")
