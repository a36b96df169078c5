"""`harkd data install`: verify an archive's sha256, check its layout from its listing and unpack it atomically into
the data root; or copy a folder in the generic format there, atomically too."""

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
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import platformdirs
import yaml
from tqdm import tqdm

from harkd import __version__
from harkd.data.loaders.generic import GENERIC_LAYOUT, SCHEMA_FILE, load_generic, locate_generic, schema_name
from harkd.data.recording import Recording
from harkd.data.registry import Layout, dataset_names, get_dataset
from harkd.errors import HarkdError

INSTALL_MARKER = ".harkd-install.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_CHUNK = 1 << 20
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError, OSError)


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


def content_fingerprint(folder: Path) -> str:
    """What every file of an installed folder looks like (path, size, modification time), in one digest: recorded
    at install, so that a copy edited afterwards is noticed and re-read instead of served from a stale cache."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != INSTALL_MARKER):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """The sha256 of a folder's files' paths and bytes: a folder install's identity, as an archive's checksum is."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != INSTALL_MARKER):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


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


def _archive_kind(name: str, shown: str) -> str:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    raise HarkdError(f"{shown}: unsupported archive type; expected .tar.xz, .tar.gz, .tgz, .tar or .zip")


@contextmanager
def _reading(shown: str) -> Iterator[None]:
    """Archive library errors as one line naming the archive."""
    try:
        yield
    except tarfile.FilterError as exc:
        raise HarkdError(f"{shown}: member {exc.tarinfo.name!r} would unpack outside the data root") from None
    except _ARCHIVE_ERRORS as exc:
        raise HarkdError(f"{shown}: corrupt or truncated archive ({exc})") from None


def _member_names(archive: Path, kind: str) -> Iterator[str]:
    """The archive's member names; a tar's are read from its stream only as far as the caller asks."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            yield from zf.namelist()
    else:
        with tarfile.open(archive) as tf:
            yield from (member.name for member in tf)


def _unpack(archive: Path, kind: str, into: Path) -> None:
    bar = {"desc": f"unpack {archive.name}", "unit": "file", "disable": None, "leave": False}
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not (into / member).resolve().is_relative_to(into.resolve()):
                    raise HarkdError(f"{archive}: member {member!r} would unpack outside the data root")
            zf.extractall(into, members=tqdm(zf.namelist(), **bar))
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(into, members=tqdm(tf, **bar), filter="data")


@contextmanager
def _as_given(shown: str, *paths: Path) -> Iterator[None]:
    """Errors name paths in the staging folder, which the user never saw, as the archive they gave (path or URL):
    a file unpacked from it as its member ('dsads.tar.xz/data/a01/p1/s01.txt'), a download as its URL."""
    try:
        yield
    except HarkdError as exc:
        message = str(exc)
        for path in paths:
            message = message.replace(str(path), shown)
        raise HarkdError(message) from None


def _dataset_of_archive(sha256: str) -> str | None:
    """The registered dataset one of whose known archives has this checksum, if any."""
    return next((name for name in dataset_names() if sha256 in get_dataset(name).archives.values()), None)


def _layout(name: str) -> Layout:
    return get_dataset(name).layout if name in dataset_names() else GENERIC_LAYOUT


def _locator(name: str) -> Callable[[Path], Path | None]:
    if name in dataset_names():
        return get_dataset(name).locate
    return locate_generic


def _no_layout(name: str, shown: str) -> HarkdError:
    layout = _layout(name)
    if name in dataset_names():
        return HarkdError(f"{shown}: does not contain the {name} publisher layout ({layout.marker}, at the top or "
                          f"up to {layout.max_depth} folders down)")
    return HarkdError(f"{shown}: does not contain a dataset.yaml (harkd's generic format) at the top or one folder "
                      f"down; known datasets: {', '.join(dataset_names())}")


def read_dataset(name: str, path: Path, options: Mapping[str, Any] | None = None) -> list[Recording]:
    """Parse a dataset folder: the publisher's layout for a registered name, else harkd's generic format."""
    if name in dataset_names():
        return get_dataset(name).load_checked(path, options)
    if options:
        raise HarkdError(f"dataset {name}: options {sorted(options)} are not supported for the generic format")
    return load_generic(path)


def _quiet(_: str) -> None:
    pass


def _schema_member(names: list[str]) -> str | None:
    """The dataset.yaml among an archive's member names, at the top or one folder down."""
    return next((n for n in names if GENERIC_LAYOUT.in_members([n]) and n.rstrip("/").endswith(SCHEMA_FILE)), None)


def _name_in_archive(archive: Path, kind: str, shown: str) -> str:
    """The `name:` of the dataset.yaml in an archive, read from the archive: the default install name."""
    with _reading(shown):
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                member = _schema_member(zf.namelist())
                text = zf.read(member) if member else None
        else:
            with tarfile.open(archive) as tf:
                info = next((m for m in tf if m.isfile() and _schema_member([m.name])), None)
                member, text = (info.name, tf.extractfile(info).read()) if info else (None, None)
    if member is None:
        raise HarkdError(f"{shown}: no {SCHEMA_FILE} in it, so no name to install it under; give one: "
                         f"harkd data install NAME --from {shown}")
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError):
        raise HarkdError(f"{shown}/{member}: not valid YAML") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise HarkdError(f"{shown}/{member}: no name (a string) to install it under")
    return install_name(raw["name"], f"{shown}/{member}")


def install_name(yaml_name: str, where: str) -> str:
    """A dataset.yaml's `name:` as an install name (the default one); one that cannot be is a one-line error."""
    if not _NAME.match(yaml_name):
        raise HarkdError(f"{where}: name {yaml_name!r} cannot be an install name; use lower-case letters, digits, "
                         f"'-' and '_'")
    return yaml_name


def _check_schema_name(name: str, folder: Path) -> None:
    """dataset.yaml's `name:` is the install name: one name for the dataset everywhere (configs, data list)."""
    if name in dataset_names():
        return
    yaml_path = folder / SCHEMA_FILE
    declared = schema_name(yaml_path)
    if declared != name:
        raise HarkdError(f"{yaml_path}: name {declared!r} differs from the install name {name!r}; make them the same "
                         f"(or leave the install name out: it defaults to the name in {SCHEMA_FILE})")


def _same_install(final: Path, name: str, sha256: str) -> bool:
    """True when `final` holds this very archive or folder (a no-op, so that set-up commands can be rerun); an
    install from anything else needs --force."""
    if not final.exists():
        return False
    if (final / INSTALL_MARKER).is_file() and json.loads((final / INSTALL_MARKER).read_text()).get("sha256") == sha256:
        return True
    raise HarkdError(f"dataset {name!r} is already installed at {final} from another archive or folder; add --force "
                     f"to replace it")


def _put_in_place(folder: Path, final: Path, staging: Path, record: dict[str, Any]) -> None:
    """The install record (with the files' fingerprint) goes in, then the folder replaces `final` in one rename."""
    record = {**record, "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "harkd_version": __version__, "content": content_fingerprint(folder)}
    (folder / INSTALL_MARKER).write_text(json.dumps(record, indent=2))
    if final.exists():  # --force: the old copy moves into staging and goes with it
        os.replace(final, staging / "previous")
    os.replace(folder, final)


def install_dataset(name: str | None, source: str, *, sha256: str | None = None, root: Path | None = None,
                    force: bool = False, log: Callable[[str], None] = _quiet) -> tuple[Path, bool]:
    """Verify, check the layout from the archive's listing, unpack, parse once and move into place; on any failure
    nothing is left under the data root. `log` hears each long step before it starts. `source` may also be a folder
    in the generic format, copied in. Without `name`, a generic dataset installs under its dataset.yaml's name and
    a registered dataset's archive under its dataset's name.

    Returns the installed folder and whether it was (re)installed now (False: the same archive was already there).
    """
    if name is not None and not _NAME.match(name):
        raise HarkdError(f"dataset name {name!r}: use lower-case letters, digits, '-' and '_'")
    root = root or data_root()
    is_url = urllib.parse.urlparse(source).scheme in ("http", "https", "ftp", "file")
    local = None if is_url else Path(source).expanduser()
    if local is not None and local.is_dir():
        return _install_folder(name, local, root, force, log)
    if local is not None and not local.is_file():
        raise HarkdError(f"{source}: no such archive file or folder")
    kind = _archive_kind(urllib.parse.urlparse(source).path if is_url else local.name, source)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".installing-{name or 'dataset'}-", dir=root))
    unpacked = staging / "unpacked"
    try:
        if local is None:
            log(f"downloading {source}")
        archive = local or _download(source, staging)
        with _as_given(source, unpacked, *([] if local else [archive])):
            log(f"verifying the sha256 of {source}")
            name, actual = _verified(archive, kind, name, source, sha256)
            final = root / name
            if not force and _same_install(final, name, actual):
                return final, False
            folder = _unpacked(archive, kind, name, source, unpacked, log)
            log(f"reading every file of {name} once, so that bad files are refused now, not at the first experiment")
            read_dataset(name, folder)
        _put_in_place(folder, final, staging, {"name": name, "source": str(source), "archive": archive.name,
                                               "sha256": actual, "format": _format(name)})
        return final, True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verified(archive: Path, kind: str, name: str | None, source: str, sha256: str | None) -> tuple[str, str]:
    """The install name and the archive's sha256, once it matches what is expected of it."""
    expected, actual = expected_sha256(archive, name or "", sha256), sha256_of(archive)
    if actual != expected:
        raise HarkdError(f"{source}: sha256 mismatch (expected {expected}, got {actual}): corrupted or wrong archive")
    owner = _dataset_of_archive(actual)
    name = name or owner or _name_in_archive(archive, kind, source)
    if owner not in (None, name):  # a registry checksum names the archive: no need to read it to refuse it
        raise HarkdError(f"{source}: this is the {owner} archive, not {name}'s; to install it: "
                         f"harkd data install {owner} --from {source}")
    return name, actual


def _unpacked(archive: Path, kind: str, name: str, source: str, unpacked: Path, log: Callable[[str], None]) -> Path:
    """The dataset's folder in the archive, unpacked into `unpacked` after its listing showed the layout."""
    log(f"checking that {source} holds {name}'s layout ({_layout(name).marker})")
    with _reading(source):
        found = _layout(name).in_members(_member_names(archive, kind))
    if not found:
        raise _no_layout(name, source)
    log(f"unpacking {source}")
    unpacked.mkdir()
    with _reading(source):
        _unpack(archive, kind, unpacked)
    folder = _locator(name)(unpacked)
    if folder is None:
        raise _no_layout(name, source)
    _check_schema_name(name, folder)
    return folder


def _format(name: str) -> str:
    return "registered" if name in dataset_names() else "generic"


def _install_folder(name: str | None, source: Path, root: Path, force: bool,
                    log: Callable[[str], None]) -> tuple[Path, bool]:
    """A folder in the generic format, checked where it is, then copied in (atomically, as an archive is unpacked);
    errors name the user's own files."""
    folder = locate_generic(source)
    if folder is None:
        raise HarkdError(f"{source}: no {SCHEMA_FILE} in this folder or one folder down (harkd installs folders in "
                         f"its generic format, docs/generic-format.md; a publisher's download installs as its archive)")
    name = name or install_name(schema_name(folder / SCHEMA_FILE), str(folder / SCHEMA_FILE))
    _check_schema_name(name, folder)
    if name in dataset_names():
        raise HarkdError(f"{source}: {name} is a registered dataset; install it from the publisher's archive")
    log(f"hashing {folder}")
    actual, final = folder_sha256(folder), root / name
    if not force and _same_install(final, name, actual):
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".installing-{name}-", dir=root))
    try:
        copy = staging / "unpacked" / folder.name
        log(f"copying {folder}")
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(INSTALL_MARKER))
        with _as_given(str(folder), copy):
            log(f"reading every file of {name} once, so that bad files are refused now, not at the first experiment")
            read_dataset(name, copy)
        _put_in_place(copy, final, staging, {"name": name, "source": str(source), "archive": f"{folder.name}/",
                                             "sha256": actual, "format": "generic"})
        return final, True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
