"""`bdh data build`: corpora from local files, byte for byte the same on every build."""

from __future__ import annotations

import io
import lzma
import tarfile
from pathlib import Path

import pytest

from bdh.data.build import build_corpus, stdlib_dir
from bdh.errors import DataError
from tests.test_cli import assert_one_line_error, run_cli


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


@pytest.fixture
def fake_stdlib(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    write(root / "b.py", "B = 2\n")
    write(root / "a.py", "A = 1\n\n\n")
    write(root / "pkg" / "__init__.py", "")
    write(root / "pkg" / "mod.py", "def f():\n    return 'ü'\n")
    write(root / "test" / "test_a.py", "assert True\n")  # a test suite: left out
    write(root / "site-packages" / "other.py", "X = 0\n")  # installed packages: left out
    write(root / "latin.py", "S = '\xe9'\n".encode("latin-1"))  # not UTF-8: left out
    write(root / "notes.txt", "not python\n")
    return root


def test_python_stdlib_is_sorted_headed_and_filtered(fake_stdlib, tmp_path):
    built = build_corpus("python-stdlib", tmp_path / "py.txt", source=fake_stdlib)
    text = built.path.read_text(encoding="utf-8")
    assert text == (
        "# file: a.py\nA = 1\n\n"
        "# file: b.py\nB = 2\n\n"
        "# file: pkg/__init__.py\n\n\n"
        "# file: pkg/mod.py\ndef f():\n    return 'ü'\n\n"
    )
    assert built.sources == 4 and built.bytes == len(text.encode())


def test_max_bytes_takes_whole_files_in_order(fake_stdlib, tmp_path):
    first_two = len("# file: a.py\nA = 1\n\n# file: b.py\nB = 2\n\n")
    built = build_corpus(
        "python-stdlib", tmp_path / "py.txt", source=fake_stdlib, max_bytes=first_two + 5
    )
    assert built.path.read_text().endswith("# file: b.py\nB = 2\n\n") and built.sources == 2


def test_the_interpreters_stdlib_builds_the_same_bytes_twice(tmp_path):
    one = build_corpus("python-stdlib", tmp_path / "one.txt", max_bytes=60_000)
    two = build_corpus("python-stdlib", tmp_path / "two.txt", max_bytes=60_000)
    assert one.path.read_bytes() == two.path.read_bytes() and one.sha256 == two.sha256
    assert 0 < one.bytes <= 60_000 and one.origin == str(stdlib_dir())
    assert one.path.read_text().startswith("# file: __future__.py\n")


FORTUNES = "Erster Spruch.\n\t\t-- Jemand\n%\nZweiter\nSpruch.\n%\n%\nDritter.\n"


@pytest.fixture
def fortune_dir(tmp_path: Path) -> Path:
    root = tmp_path / "fortunes"
    write(root / "de" / "sprueche", FORTUNES)
    write(root / "de" / "sprueche.dat", b"\x00\x00\x00\x02binary index")
    write(root / "de" / "witze", "Ein Witz.\n%\n")
    write(root / "off" / "de" / "boese", "Fbyy avpug.\n%\n")  # rot13, offensive: left out
    (root / "de" / "sprueche.u8").symlink_to("sprueche")  # Debian's UTF-8 alias: read once
    return root


EXPECTED = "Erster Spruch.\n\t\t-- Jemand\n%\nZweiter\nSpruch.\n%\nDritter.\n%\nEin Witz.\n%\n"


def test_fortunes_from_a_directory(fortune_dir, tmp_path):
    built = build_corpus("fortunes", tmp_path / "de.txt", source=fortune_dir)
    assert built.path.read_text(encoding="utf-8") == EXPECTED and built.sources == 4


def _deb(tmp_path: Path, fortune_dir: Path) -> Path:
    """A Debian package (ar archive: debian-binary, control.tar.xz, data.tar.xz) holding
    `fortune_dir` under usr/share/games/fortunes, plus a doc file that is not a fortune."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        tar.add(fortune_dir, arcname="./usr/share/games/fortunes")
        doc = b"not a fortune\n%\n"
        info = tarfile.TarInfo("./usr/share/doc/fortunes-de/README")
        info.size = len(doc)
        tar.addfile(info, io.BytesIO(doc))
    members = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", lzma.compress(b"")),
        ("data.tar.xz", data.getvalue()),
    ]
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in members:
        out.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode())
        out.write(body + (b"\n" if len(body) % 2 else b""))
    return write(tmp_path / "fortunes-de_1.0_all.deb", out.getvalue())


def test_fortunes_from_a_deb_equal_those_from_its_extracted_folder(fortune_dir, tmp_path):
    deb = _deb(tmp_path, fortune_dir)
    from_deb = build_corpus("fortunes", tmp_path / "a.txt", source=deb)
    assert from_deb.path.read_text(encoding="utf-8") == EXPECTED
    # The root of an extracted package (dpkg-deb -x) reads its fortunes folder only.
    extracted = tmp_path / "extracted"
    write(extracted / "usr" / "share" / "doc" / "README", "not a fortune\n")
    (extracted / "usr" / "share" / "games").mkdir(parents=True)
    (extracted / "usr" / "share" / "games" / "fortunes").symlink_to(
        fortune_dir, target_is_directory=True
    )
    from_dir = build_corpus("fortunes", tmp_path / "b.txt", source=extracted)
    assert from_dir.path.read_bytes() == from_deb.path.read_bytes()


def test_errors_are_one_line(fortune_dir, tmp_path, capsys):
    out = tmp_path / "out.txt"
    cases = [
        (["fortunes", "--out", str(out)], "needs --source"),
        (
            ["fortunes", "--source", str(tmp_path / "missing"), "--out", str(out)],
            "no fortune source",
        ),
        (
            ["fortunes", "--source", str(write(tmp_path / "x.deb", "junk")), "--out", str(out)],
            "not a Debian package",
        ),  # fmt: skip
        (
            ["python-stdlib", "--source", str(tmp_path / "nolib"), "--out", str(out)],
            "no standard-library",
        ),
        (["poems", "--out", str(out)], "poems"),
        (["fortunes", "--source", str(fortune_dir), "--out", str(tmp_path)], "is a directory"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(["data", "build", *args], capsys)
        assert_one_line_error(code, err, needle)
    assert not out.exists()
    code, text, err = run_cli(
        ["data", "build", "fortunes", "--source", str(fortune_dir), "--out", str(out)], capsys
    )
    assert code == 0 and "wrote" in text and "4 entries" in text, err
    code, _, err = run_cli(
        ["data", "build", "fortunes", "--source", str(fortune_dir), "--out", str(out)], capsys
    )
    assert_one_line_error(code, err, "--force")
    code, _, err = run_cli(
        ["data", "build", "fortunes", "--source", str(fortune_dir), "--out", str(out), "--force"],
        capsys,
    )
    assert code == 0, err
    assert out.read_text(encoding="utf-8") == EXPECTED


def test_a_source_with_nothing_usable_is_refused(tmp_path):
    empty = tmp_path / "empty"
    write(empty / "x.dat", b"\x00")
    with pytest.raises(DataError, match="no fortune files"):
        build_corpus("fortunes", tmp_path / "o.txt", source=empty)
    with pytest.raises(DataError, match="empty"):
        build_corpus(
            "fortunes", tmp_path / "o.txt", source=write(tmp_path / "f" / "only", "%\n%\n").parent
        )
