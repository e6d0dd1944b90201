"""Byte-level (default, vocab 256, any UTF-8 round-trips), character-level and byte-level
BPE tokenizers.

The BPE tokenizer is trained and run by the `tokenizers` library (the extra `bdh[hf]`) and
saved in that library's JSON format, which transformers loads as it is. That format is also
read for the byte and char tokenizers, as `bdh export --format hf` writes them.
"""

from __future__ import annotations

import codecs
import json
from functools import lru_cache
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
    """Turns bytes into text as they arrive, holding back incomplete UTF-8 sequences.

    With `token_bytes`, ids are tokens standing for those byte strings (BPE); else bytes.
    """

    def __init__(self, token_bytes: list[bytes] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._token_bytes = token_bytes

    def decode(self, ids: list[int]) -> str:
        if self._token_bytes is None:
            return self._decoder.decode(bytes(ids))
        return self._decoder.decode(b"".join(self._token_bytes[i] for i in ids))

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


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """The printable character standing for each byte in byte-level BPE (GPT-2's table,
    the `tokenizers` library's ByteLevel alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def _require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise TokenizerError(
            "the BPE tokenizer needs the 'tokenizers' library: pip install 'bdh[hf]'"
        ) from None
    return tokenizers


# A BPE vocabulary holds the 256 bytes and at least one merge.
MIN_BPE_VOCAB = 257


class BPETokenizer:
    """Byte-level BPE (the `tokenizers` library): any UTF-8 text round-trips, like bytes.

    `spec` is the library's JSON description (what `to_dict` returns and checkpoints keep).
    """

    kind = "bpe"

    def __init__(self, spec: dict[str, Any]):
        tokenizers = _require_tokenizers()
        try:
            self._tokenizer = tokenizers.Tokenizer.from_str(json.dumps(spec))
        except Exception as err:  # the library raises its own exception types
            raise TokenizerError(f"malformed BPE tokenizer description: {err}") from None
        self.spec = spec
        self.vocab_size = self._tokenizer.get_vocab_size()
        to_byte = {c: b for b, c in byte_to_unicode().items()}
        by_id = sorted(self._tokenizer.get_vocab().items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(self.vocab_size)):
            raise TokenizerError("a BPE vocabulary needs ids 0..vocab_size-1")
        try:
            self.token_bytes = [bytes(to_byte[c] for c in token) for token, _ in by_id]
        except KeyError:
            raise TokenizerError(
                "not a byte-level BPE: a token has a character outside the byte alphabet"
            ) from None

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Learn merges on `text` until the vocabulary holds `vocab_size` tokens (at least 257;
        fewer when the text runs out of pairs to merge)."""
        if vocab_size < MIN_BPE_VOCAB:
            raise TokenizerError(
                f"a byte-level BPE vocabulary needs at least {MIN_BPE_VOCAB} tokens, got {vocab_size}"
            )
        tokenizers = _require_tokenizers()
        tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
        tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer)
        return cls(json.loads(tokenizer.to_str()))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return _Utf8StreamDecoder(self.token_bytes)

    def byte_lengths(self) -> list[int]:
        """Bytes of text each token stands for (bits per byte stay comparable across tokenizers)."""
        return [len(b) for b in self.token_bytes]

    def to_dict(self) -> dict[str, Any]:
        return self.spec


TOKENIZER_KINDS = ("byte", "char", "bpe")


def _from_tokenizers_json(data: dict[str, Any]) -> Tokenizer:
    """A tokenizer saved in the `tokenizers` library's format: ours as `bdh export` writes
    them (byte, char: no merges), or a byte-level BPE."""
    model = data.get("model") or {}
    vocab, merges = model.get("vocab"), model.get("merges")
    pre = (data.get("pre_tokenizer") or {}).get("type")
    if model.get("type") == "BPE" and isinstance(vocab, dict) and not merges:
        if pre == "ByteLevel" and vocab == {c: b for b, c in byte_to_unicode().items()}:
            return ByteTokenizer()
        if pre is None and sorted(vocab.values()) == list(range(len(vocab))):
            return CharTokenizer("".join(sorted(vocab, key=vocab.__getitem__)))
    return BPETokenizer(data)


def tokenizer_from_dict(data: dict[str, Any]) -> Tokenizer:
    if isinstance(data.get("model"), dict):
        return _from_tokenizers_json(data)
    kind = data.get("type")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char" and isinstance(data.get("chars"), str):
        return CharTokenizer(data["chars"])
    raise TokenizerError(f"unknown or malformed tokenizer description: {data!r:.80}")
