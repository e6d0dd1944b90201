"""`bdh data build NAME --out FILE`: text corpora made from files already on the machine.

Nothing is downloaded: each corpus is read from local sources and written as one UTF-8
file, in a deterministic order, so the same sources give the same bytes.

- `python-stdlib`: the running interpreter's own standard-library `.py` sources, sorted
  by path (test suites and site-packages left out), each preceded by a `# file:` line.
- `fortunes`: the text of fortune-cookie files (strfile format: entries separated by
  lines holding only `%`), read from a Debian package file (`.deb`, e.g. `fortunes-de`)
  or from a directory of such files (an extracted package, or its fortunes folder). The `.dat` index files, and
  `off/` directories (whose entries are rot13-encoded), are left out.

`max_bytes` caps the output: whole files (python-stdlib) or whole entries (fortunes) are
taken in order while they fit.
"""

from __future__ import annotations

import hashlib
import io
import os
import sysconfig
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bdh.errors import DataError

DEFAULT_MAX_BYTES = 2_000_000
# Directories of the standard library that are not its modules' own sources.
STDLIB_SKIPPED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
# Debian keeps fortune files here inside its packages.
FORTUNES_IN_DEB = "usr/share/games/fortunes/"


@dataclass
class BuiltCorpus:
    """What `build_corpus` wrote: the file, its size and digest, and how many sources it read."""

    name: str
    path: Path
    bytes: int
    sha256: str
    sources: int  # files (python-stdlib) or fortune entries (fortunes)
    origin: str


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _python_stdlib(source: Path | None) -> tuple[Iterator[bytes], str]:
    root = stdlib_dir() if source is None else source
    if not root.is_dir():
        raise DataError(f"no standard-library directory at '{root}'")
    files = sorted(
        p
        for p in root.rglob("*.py")
        if p.is_file() and not STDLIB_SKIPPED_DIRS.intersection(p.relative_to(root).parts[:-1])
    )
    if not files:
        raise DataError(f"no .py files under '{root}'")

    def pieces() -> Iterator[bytes]:
        for path in files:
            data = path.read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:  # a few test fixtures are in other encodings
                continue
            rel = path.relative_to(root).as_posix()
            yield f"# file: {rel}\n".encode() + data.rstrip(b"\n") + b"\n\n"

    return pieces(), str(root)


def _fortune_entries(text: str) -> Iterator[str]:
    """The entries of a strfile-format text: blocks between lines that hold only `%`."""
    entry: list[str] = []
    for line in text.splitlines():
        if line.strip() == "%":
            if any(s.strip() for s in entry):
                yield "\n".join(entry).strip("\n")
            entry = []
        else:
            entry.append(line.rstrip())
    if any(s.strip() for s in entry):
        yield "\n".join(entry).strip("\n")


def _is_fortune_file(rel: str) -> bool:
    parts = rel.split("/")
    return not rel.endswith(".dat") and "off" not in parts[:-1]


def _deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The data archive of a Debian package (an `ar` archive holding data.tar.*)."""
    raw = deb.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise DataError(f"'{deb}' is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = raw[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise DataError(
                    f"'{deb}' is compressed with zstd; extract it (dpkg-deb -x {deb} DIR) "
                    "and pass the directory"
                )
            try:
                return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
            except tarfile.TarError as err:
                raise DataError(f"cannot read {name} in '{deb}': {err}") from None
        pos += 60 + size + (size % 2)  # members are 2-byte aligned
    raise DataError(f"'{deb}' holds no data.tar member")


def _fortune_texts(source: Path) -> Iterator[tuple[str, bytes]]:
    """(relative name, bytes) of every fortune file of a .deb or a directory, sorted by name."""
    if source.is_dir():
        if (source / FORTUNES_IN_DEB).is_dir():  # the root of an extracted package
            source = source / FORTUNES_IN_DEB
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.is_symlink())
        for path in files:
            rel = path.relative_to(source).as_posix()
            if _is_fortune_file(rel):
                yield rel, path.read_bytes()
        return
    with _deb_data_tar(source) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name.lstrip("./")
        )
        for member in members:
            rel = member.name.lstrip("./")
            if rel.startswith(FORTUNES_IN_DEB) and _is_fortune_file(rel[len(FORTUNES_IN_DEB) :]):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield rel[len(FORTUNES_IN_DEB) :], handle.read()


def _fortunes(source: Path | None) -> tuple[Iterator[bytes], str]:
    if source is None:
        raise DataError(
            "the fortunes corpus needs --source: a .deb file or a directory of fortune files"
        )
    if not source.exists():
        raise DataError(f"no fortune source at '{source}'")
    texts = list(_fortune_texts(source))  # read (and check) before anything is written

    def pieces() -> Iterator[bytes]:
        for _, data in texts:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:  # another encoding (Debian also ships .u8 copies)
                continue
            for entry in _fortune_entries(text):
                yield (entry + "\n%\n").encode()

    if not texts:
        raise DataError(f"no fortune files in '{source}'")
    return pieces(), str(source)


# name -> reader(source) -> (pieces of the output in order, where they came from)
CORPORA: dict[str, Callable[[Path | None], tuple[Iterator[bytes], str]]] = {
    "python-stdlib": _python_stdlib,
    "fortunes": _fortunes,
}


def build_corpus(
    name: str,
    out: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    force: bool = False,
) -> BuiltCorpus:
    """Write corpus `name` from its local `source` to the file `out` (see the module doc).

    An existing `out` is refused unless `force`. DataError for an unknown name, a missing
    or unusable source, or a corpus with nothing in it.
    """
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose from: {', '.join(CORPORA)}")
    if max_bytes < 1:
        raise DataError(f"max_bytes must be >= 1, got {max_bytes}")
    out = Path(out)
    if out.is_dir():
        raise DataError(f"--out {out} is a directory; give a file name")
    if out.exists() and not force:
        raise DataError(f"--out {out} exists (use --force to overwrite)")
    pieces, origin = CORPORA[name](None if source is None else Path(source))
    chosen: list[bytes] = []
    size = 0
    for piece in pieces:
        if size + len(piece) > max_bytes:
            break
        chosen.append(piece)
        size += len(piece)
    if not chosen:
        raise DataError(
            f"corpus {name} from '{origin}' is empty (or its first piece exceeds {max_bytes} bytes)"
        )
    data = b"".join(chosen)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")  # a complete file or none
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return BuiltCorpus(name, out, len(data), hashlib.sha256(data).hexdigest(), len(chosen), origin)
