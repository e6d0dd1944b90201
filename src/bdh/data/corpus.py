"""Token corpora over a memory map, split into train and validation parts.

Byte-level tokens are the file's own bytes, so a single file is memory-mapped as it is.
A directory is concatenated once into a cached token file (under `BDH_CACHE_DIR`,
default `~/.cache/bdh`). Names that are not paths are looked up in `BDH_DATA_DIR`
(default `~/.local/share/bdh/data`), the place for larger corpora.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bdh.errors import DataError
from bdh.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, Tokenizer

DEFAULT_CORPUS = "shakespeare"
_BUNDLED = {"shakespeare": "tinyshakespeare.txt", "tinyshakespeare": "tinyshakespeare.txt"}


def bundled_corpus_path(name: str = DEFAULT_CORPUS) -> Path:
    return Path(str(resources.files("bdh.data").joinpath(_BUNDLED[name])))


def data_dir() -> Path:
    return Path(os.environ.get("BDH_DATA_DIR", Path.home() / ".local/share/bdh/data"))


def cache_dir() -> Path:
    return Path(os.environ.get("BDH_CACHE_DIR", Path.home() / ".cache/bdh"))


def resolve_corpus_path(spec: str | os.PathLike[str] | None) -> Path:
    """A bundled corpus name, a path, or a name inside BDH_DATA_DIR -> an existing path."""
    spec = DEFAULT_CORPUS if spec is None else spec
    if str(spec) in _BUNDLED:
        return bundled_corpus_path(str(spec))
    path = Path(spec).expanduser()
    if path.exists():
        return path
    for candidate in (data_dir() / str(spec), data_dir() / f"{spec}.txt"):
        if candidate.exists():
            return candidate
    raise DataError(f"no corpus at '{spec}' (not a file or directory, nor a name in {data_dir()})")


def _corpus_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"corpus directory '{path}' holds no files")
    return files


def _byte_tokens(path: Path) -> np.ndarray:
    files = _corpus_files(path)
    if len(files) == 1:
        if files[0].stat().st_size == 0:
            raise DataError(f"corpus '{path}' is empty")
        return np.memmap(files[0], dtype=np.uint8, mode="r")
    fingerprint = hashlib.sha256()
    for f in files:
        st = f.stat()
        fingerprint.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    target = cache_dir() / f"corpus-{fingerprint.hexdigest()[:20]}.bin"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as out:
            for f in files:
                out.write(f.read_bytes())
        os.replace(tmp, target)
    if target.stat().st_size == 0:
        raise DataError(f"corpus '{path}' is empty")
    return np.memmap(target, dtype=np.uint8, mode="r")


def _read_text(path: Path) -> str:
    try:
        return "".join(f.read_text(encoding="utf-8") for f in _corpus_files(path))
    except UnicodeDecodeError as err:
        raise DataError(f"corpus '{path}' is not UTF-8 text ({err.reason}); use the byte tokenizer") from None


@dataclass
class TokenCorpus:
    """Token ids split into a training part and a held-out validation tail."""

    train: np.ndarray
    val: np.ndarray
    source: str

    def check_block_size(self, block_size: int) -> None:
        for name, part in (("train", self.train), ("val", self.val)):
            if len(part) < block_size + 2:
                raise DataError(
                    f"corpus '{self.source}' is too short for block size {block_size}: "
                    f"its {name} split has {len(part)} tokens, needs at least {block_size + 2}"
                )

    def batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> tuple[Tensor, Tensor]:
        """A random batch of (input, next-token target) windows, each [batch_size, block_size]."""
        data = self.train if split == "train" else self.val
        starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
        return self.windows(data, starts.tolist(), block_size, device)

    @staticmethod
    def windows(
        data: np.ndarray, starts: list[int], block_size: int, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        rows = np.stack([np.asarray(data[s : s + block_size + 1], dtype=np.int64) for s in starts])
        tokens = torch.from_numpy(rows)
        x, y = tokens[:, :-1], tokens[:, 1:]
        if torch.device(device).type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.contiguous(), y.contiguous()


def load_corpus(
    spec: str | os.PathLike[str] | None = None,
    tokenizer: Tokenizer | str = "byte",
    val_fraction: float = 0.1,
    vocab_size: int | None = None,
) -> tuple[TokenCorpus, Tokenizer]:
    """Load a corpus and tokenize it; a "char" tokenizer is built from the corpus itself, a
    "bpe" one (`vocab_size` tokens) is trained on its training split only.

    Text tokenizers split the text itself (its first 1 - val_fraction characters train),
    so the validation split is the same text whatever the tokenizer.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"validation fraction must be in (0, 1), got {val_fraction}")
    path = resolve_corpus_path(spec)
    if isinstance(tokenizer, str):
        if tokenizer == "byte":
            tokenizer = ByteTokenizer()
        elif tokenizer == "char":
            tokenizer = CharTokenizer.from_text(_read_text(path) or " ")
        elif tokenizer == "bpe":
            if vocab_size is None:
                raise DataError("the bpe tokenizer needs a vocabulary size")
            text = _read_text(path)
            tokenizer = BPETokenizer.train(text[: int(len(text) * (1 - val_fraction))], vocab_size)
        else:
            raise DataError(f"unknown tokenizer {tokenizer!r}; choose 'byte', 'char' or 'bpe'")
    if tokenizer.kind == "byte":
        tokens = _byte_tokens(path)
        split = int(len(tokens) * (1 - val_fraction))
    else:
        text = _read_text(path)
        if not text:
            raise DataError(f"corpus '{path}' is empty")
        cut = int(len(text) * (1 - val_fraction))
        train_ids = tokenizer.encode(text[:cut])
        dtype = np.uint16 if tokenizer.vocab_size < 65536 else np.uint32
        tokens = np.asarray(train_ids + tokenizer.encode(text[cut:]), dtype=dtype)
        split = len(train_ids)
    return TokenCorpus(train=tokens[:split], val=tokens[split:], source=str(path)), tokenizer
