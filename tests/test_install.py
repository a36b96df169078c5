"""Installation: checksums, atomic unpacking, and one-line errors with nothing half-written."""

import hashlib
import shutil

from conftest import assert_one_line_error, run_cli, shared_archive


def leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


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


def test_truncated_archive_with_matching_checksum_is_a_clean_error(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    cut = tmp_path / src.name
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    digest = hashlib.sha256(cut.read_bytes()).hexdigest()
    root = tmp_path / "root"
    result = run_cli("data", "install", "openpack", "--from", str(cut), "--sha256", digest, data_root=root)
    assert_one_line_error(result, "corrupt or truncated archive", src.name)
    assert leftovers(root) == []


def test_known_archive_is_verified_without_a_sums_file(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    copy = tmp_path / src.name
    shutil.copy(src, copy)  # no SHA256SUMS beside it: the registry's checksum is used
    root = tmp_path / "root"
    run_cli("data", "install", "openpack", "--from", str(copy), data_root=root, check=True)
    assert leftovers(root) == ["openpack"]
    again = run_cli("data", "install", "openpack", "--from", str(copy), data_root=root, check=True)
    assert "already installed" in again.stdout  # the same archive again: a no-op, exit 0
    other = tmp_path / "other.tar.xz"
    other.write_bytes(copy.read_bytes() + b"\0" * 1024)  # tar ignores trailing zero blocks
    result = run_cli("data", "install", "openpack", "--from", str(other), "--sha256",
                     hashlib.sha256(other.read_bytes()).hexdigest(), data_root=root)
    assert_one_line_error(result, "already installed", "from another archive", "--force")
    run_cli("data", "install", "openpack", "--from", str(copy), "--force", data_root=root, check=True)
    assert leftovers(root) == ["openpack"]


def test_unknown_archive_needs_a_checksum(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    renamed = tmp_path / "mystery.tar.xz"
    shutil.copy(src, renamed)
    result = run_cli("data", "install", "openpack", "--from", str(renamed), data_root=tmp_path / "root")
    assert_one_line_error(result, "no checksum known", "--sha256")


def test_wrong_layout_and_unknown_names_are_errors(tmp_path):
    src = shared_archive("openpack-sample.tar.xz")
    root = tmp_path / "root"
    assert_one_line_error(run_cli("data", "install", "dsads", "--from", str(src), data_root=root),
                          "does not contain the dsads publisher layout")
    assert_one_line_error(run_cli("data", "install", "factory", "--from", str(src), data_root=root),
                          "dataset.yaml", "known datasets: dsads, hapt, openpack")
    assert_one_line_error(run_cli("data", "info", "nosuch", data_root=root), "unknown dataset 'nosuch'",
                          "not one of dsads, hapt, openpack")
    assert_one_line_error(run_cli("data", "install", "dsads", "--from", str(tmp_path / "none.tar.xz"),
                                  data_root=root), "no such archive file")
    assert leftovers(root) == []
