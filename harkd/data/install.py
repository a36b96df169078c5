"""`harkd data install`: verify an archive's sha256 and unpack it atomically into the data root."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import platformdirs
from tqdm import tqdm

from harkd import __version__
from harkd.data.loaders.generic import load_generic, locate_generic
from harkd.data.recording import Recording
from harkd.data.registry import dataset_names, get_dataset
from harkd.errors import HarkdError

INSTALL_MARKER = ".harkd-install.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_CHUNK = 1 << 20


def data_root() -> Path:
    """HARKD_DATA if set, else the per-user cache directory."""
    env = os.environ.get("HARKD_DATA")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("harkd")) / "datasets"


def installed_path(name: str, root: Path | None = None) -> Path:
    path = (root or data_root()) / name
    if not (path / INSTALL_MARKER).is_file():
        hint = f"harkd data install {name} --from ARCHIVE_OR_URL"
        if name not in dataset_names():
            installed = [r["name"] for r in installed_datasets(root)]
            raise HarkdError(f"unknown dataset {name!r}: not installed in {path.parent} (installed: "
                             f"{', '.join(installed) or 'none'}) and not one of {', '.join(dataset_names())}; "
                             f"to add your own data: {hint}")
        raise HarkdError(f"dataset {name!r} is not installed in {path.parent}; run: {hint}")
    return path


def installed_datasets(root: Path | None = None) -> list[dict]:
    """The install records of every dataset under the data root."""
    root = root or data_root()
    if not root.is_dir():
        return []
    records = []
    for marker in sorted(root.glob(f"*/{INSTALL_MARKER}")):
        try:
            records.append(json.loads(marker.read_text()))
        except (OSError, json.JSONDecodeError):
            raise HarkdError(f"{marker}: unreadable install record; reinstall with --force") from None
    return records


def sha256_of(path: Path, progress: bool = True) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"sha256 {path.name}", disable=None if progress else True,
                                          leave=False) as bar:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def expected_sha256(archive: Path, name: str, given: str | None) -> str:
    """--sha256 first, then a SHA256SUMS file beside the archive, then the registry's known archives."""
    if given:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", given):
            raise HarkdError(f"--sha256: expected 64 hex digits, got {given!r}")
        return given.lower()
    sums = archive.parent / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == archive.name:
                return parts[0].lower()
    if name in dataset_names():
        known = get_dataset(name).archives.get(archive.name)
        if known:
            return known
    raise HarkdError(f"{archive}: no checksum known for this archive; pass --sha256 HEX "
                     f"(or put a SHA256SUMS file beside it)")


def _download(url: str, folder: Path) -> Path:
    target = folder / (Path(urllib.parse.urlparse(url).path).name or "download")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out, \
                tqdm(total=int(response.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=f"download {target.name}", disable=None, leave=False) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        raise HarkdError(f"{url}: download failed ({exc})") from None
    return target


def _unpack(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    resolved = (into / member).resolve()
                    if not resolved.is_relative_to(into.resolve()):
                        raise HarkdError(f"{archive}: member {member!r} would unpack outside the data root")
                zf.extractall(into)
        elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")):
            with tarfile.open(archive) as tf:
                tf.extractall(into, filter="data")
        else:
            raise HarkdError(f"{archive}: unsupported archive type; expected .tar.xz, .tar.gz, .tgz, .tar or .zip")
    except (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
        raise HarkdError(f"{archive}: corrupt or truncated archive ({exc})") from None


def _locator(name: str) -> Callable[[Path], Path | None]:
    if name in dataset_names():
        return get_dataset(name).locate
    return locate_generic


def read_dataset(name: str, path: Path, options: Mapping[str, Any] | None = None) -> list[Recording]:
    """Parse a dataset folder: the publisher's layout for a registered name, else harkd's generic format."""
    if name in dataset_names():
        return get_dataset(name).load_checked(path, options)
    if options:
        raise HarkdError(f"dataset {name}: options {sorted(options)} are not supported for the generic format")
    return load_generic(path)


def install_dataset(name: str, source: str, *, sha256: str | None = None, root: Path | None = None,
                    force: bool = False) -> tuple[Path, bool]:
    """Verify, unpack, parse once and move into place; on any failure nothing is left under the data root.

    Returns the installed folder and whether it was (re)installed now (False: the same archive was already there).
    """
    if not _NAME.match(name):
        raise HarkdError(f"dataset name {name!r}: use lower-case letters, digits, '-' and '_'")
    root = root or data_root()
    final = root / name
    is_url = urllib.parse.urlparse(source).scheme in ("http", "https", "ftp", "file")
    archive = None if is_url else Path(source).expanduser()
    if archive is not None and not archive.is_file():
        raise HarkdError(f"{source}: no such archive file")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".installing-{name}-", dir=root))
    try:
        if archive is None:
            archive = _download(source, staging)
        expected = expected_sha256(archive, name, sha256)
        actual = sha256_of(archive)
        if actual != expected:
            raise HarkdError(f"{archive}: sha256 mismatch (expected {expected}, got {actual}): "
                             f"corrupted or wrong archive")
        if final.exists() and not force:
            # The same archive again is a no-op, so set-up commands can be rerun; another one needs --force.
            if (final / INSTALL_MARKER).is_file() and json.loads((final / INSTALL_MARKER).read_text()).get(
                    "sha256") == actual:
                return final, False
            raise HarkdError(f"dataset {name!r} is already installed at {final} from another archive; "
                             f"add --force to replace it")
        unpacked = staging / "unpacked"
        unpacked.mkdir()
        _unpack(archive, unpacked)
        layout = _locator(name)(unpacked)
        if layout is None:
            known = name in dataset_names()
            what = f"the {name} publisher layout" if known else "a dataset.yaml (harkd's generic format)"
            extra = "" if known else f"; known datasets: {', '.join(dataset_names())}"
            raise HarkdError(f"{archive}: does not contain {what}{extra}")
        read_dataset(name, layout)  # bad files are refused now, not at the first experiment
        record = {"name": name, "source": str(source), "archive": archive.name, "sha256": actual,
                  "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "harkd_version": __version__, "format": "registered" if name in dataset_names() else "generic"}
        (layout / INSTALL_MARKER).write_text(json.dumps(record, indent=2))
        if final.exists():  # --force: the old copy moves into staging and goes with it
            os.replace(final, staging / "previous")
        os.replace(layout, final)
        return final, True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
