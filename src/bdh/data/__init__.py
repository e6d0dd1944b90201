"""Corpora: the bundled tiny Shakespeare, any text file or directory, token batches."""

from bdh.data.corpus import (
    DEFAULT_CORPUS,
    TokenCorpus,
    bundled_corpus_path,
    load_corpus,
    resolve_corpus_path,
)

__all__ = [
    "DEFAULT_CORPUS",
    "TokenCorpus",
    "bundled_corpus_path",
    "load_corpus",
    "resolve_corpus_path",
]
