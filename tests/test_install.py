"""Installation: checksums, atomic unpacking, and one-line errors with nothing half-written."""

import hashlib
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli, shared_archive
from harkd.data import install as install_module
from harkd.data.install import install_dataset
from harkd.errors import HarkdError


def leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.realdata  # shared_archive()
def test_corrupted_archive_fails_its_checksum_and_leaves_nothing(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    bad = tmp_path / "in" / src.name
    bad.parent.mkdir()
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (bad.parent / "SHA256SUMS").write_text(f"{hashlib.sha256(src.read_bytes()).hexdigest()}  {src.name}\n")
    root = tmp_path / "root"
    result = run_cli("data", "install", "openpack", "--from", str(bad), data_root=root)
    assert_one_line_error(result, "sha256 mismatch", src.name)
    assert leftovers(root) == []


@pytest.mark.realdata  # shared_archive()
def test_truncated_archive_with_matching_checksum_is_a_clean_error(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    digest = hashlib.sha256(cut.read_bytes()).hexdigest()
    root = tmp_path / "root"
    result = run_cli("data", "install", "openpack", "--from", str(cut), "--sha256", digest, data_root=root)
    assert_one_line_error(result, "corrupt or truncated archive", src.name)
    assert leftovers(root) == []


@pytest.mark.realdata  # shared_archive()
def test_known_archive_is_verified_without_a_sums_file(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    copy = tmp_path / src.name
    shutil.copy(src, copy)  # no SHA256SUMS beside it: the registry's checksum is used
    root = tmp_path / "root"
    first = run_cli("data", "install", "openpack", "--from", str(copy), "--progress", data_root=root, check=True)
    assert leftovers(root) == ["openpack"]
    # Each long step is named as it starts (by default only on a terminal: these runs write to a pipe).
    assert [line.split(" ")[0] for line in first.stderr.splitlines()] == ["verifying", "checking", "unpacking",
                                                                          "reading"]
    assert f"checking that {copy} holds openpack's layout (v*/U*/atr)" in first.stderr
    again = run_cli("data", "install", "openpack", "--from", str(copy), data_root=root, check=True)
    assert "already installed" in again.stdout and again.stderr == ""  # the same archive again: a no-op, exit 0
    other = tmp_path / "other.tar.xz"
    other.write_bytes(copy.read_bytes() + b"\0" * 1024)  # tar ignores trailing zero blocks
    result = run_cli("data", "install", "openpack", "--from", str(other), "--sha256",
                     hashlib.sha256(other.read_bytes()).hexdigest(), data_root=root)
    assert_one_line_error(result, "already installed", "from another archive", "--force")
    run_cli("data", "install", "openpack", "--from", str(copy), "--force", data_root=root, check=True)
    assert leftovers(root) == ["openpack"]


@pytest.mark.realdata  # shared_archive()
def test_unknown_archive_needs_a_checksum(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    renamed = tmp_path / "mystery.tar.xz"
    shutil.copy(src, renamed)
    result = run_cli("data", "install", "openpack", "--from", str(renamed), data_root=tmp_path / "root")
    assert_one_line_error(result, "no checksum known", "--sha256")


@pytest.mark.realdata  # shared_archive()
def test_wrong_layout_and_unknown_names_are_errors(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    root = tmp_path / "root"
    # A known archive is recognised by its checksum, before anything of it is read.
    assert_one_line_error(run_cli("data", "install", "dsads", "--from", str(src), data_root=root),
                          f"{src}: this is the openpack archive, not dsads's",
                          f"harkd data install openpack --from {src}")
    renamed = tmp_path / "mystery.tar.xz"
    renamed.write_bytes(src.read_bytes() + b"\0" * 1024)  # another checksum, the same members
    digest = hashlib.sha256(renamed.read_bytes()).hexdigest()
    assert_one_line_error(run_cli("data", "install", "dsads", "--from", str(renamed), "--sha256", digest,
                                  data_root=root),
                          f"{renamed}: does not contain the dsads publisher layout (data/a01/p1, at the top or up to 2")
    assert_one_line_error(run_cli("data", "install", "factory", "--from", str(renamed), "--sha256", digest,
                                  data_root=root),
                          f"{renamed}: does not contain a dataset.yaml", "known datasets: dsads, hapt, openpack")
    assert_one_line_error(run_cli("data", "info", "nosuch", data_root=root), "unknown dataset 'nosuch'",
                          "not one of dsads, hapt, openpack")
    assert_one_line_error(run_cli("data", "install", "dsads", "--from", str(tmp_path / "none.tar.xz"),
                                  data_root=root), "no such archive file")
    assert leftovers(root) == []


def make_archive(path: Path, files: dict[str, str]) -> Path:
    """A tar.gz (or .zip) holding `files` (member name -> text)."""
    tree = path.parent / f"{path.name}.tree"
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name in files:
                zf.write(tree / name, name)
    else:
        with tarfile.open(path, "w:gz") as tf:
            for name in files:
                tf.add(tree / name, name)
    return path


def install(archive: str, name: str, root: Path):
    return install_dataset(name, archive, sha256=hashlib.sha256(Path(archive).read_bytes()).hexdigest(), root=root)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_a_wrong_layout_is_refused_from_the_listing_before_unpacking(tmp_path, monkeypatch, suffix):
    archive = make_archive(tmp_path / f"notes{suffix}", {"notes/readme.txt": "x", "notes/data/a01/readme.txt": "x"})
    monkeypatch.setattr(install_module, "_unpack", lambda *_: pytest.fail("unpacked an archive of the wrong layout"))
    with pytest.raises(HarkdError, match=rf"^{re.escape(str(archive))}: does not contain the dsads publisher layout"):
        install(str(archive), "dsads", tmp_path / "root")
    assert leftovers(tmp_path / "root") == []


def test_errors_name_files_inside_the_archive_as_given_not_the_staging_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "\n".join(",".join(["0.5"] * 45) for _ in range(124)) + "\n"  # a segment is 125 rows
    make_archive(Path("short.tar.gz"), {"dsads/data/a01/p1/s01.txt": rows})
    with pytest.raises(HarkdError) as error:
        install("short.tar.gz", "dsads", Path("root"))
    assert str(error.value).startswith("short.tar.gz/dsads/data/a01/p1/s01.txt: rows 125-125 are missing")
    assert ".installing" not in str(error.value) and leftovers(Path("root")) == []
