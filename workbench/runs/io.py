"""Atomic file writes and checksum manifests: how results survive a crash.

A run or a cache entry is only worth keeping if a reader can tell a finished file from a half
written one. Every writer here follows the same recipe: write into a hidden temporary file *in the
same folder* (so that the final rename never crosses a file system), flush and ``fsync`` it, then
``os.replace`` it onto the final name. ``os.replace`` is atomic on POSIX and Windows, so the final
name either holds the old content, the complete new content, or does not exist; a writer killed
midway leaves only a ``.<name>.tmp-*`` file, which no reader looks at.

A **manifest** (``manifest.json``) lists the files of a folder with their sha256 checksums. A
folder counts as intact only when its manifest matches what is on disk; this is how
:mod:`workbench.runs.rundir` decides that a run is complete and how :mod:`workbench.runs.cache` refuses to serve
a corrupted entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The caller writes the whole file to the yielded path (any writer that takes a path works:
    ``df.to_parquet``, ``safetensors.save_file``...). On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be read by others
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    # Without fsync a power cut after the rename could leave an empty file under the final name.
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def to_json(obj: Any) -> str:
    """Readable JSON; non-JSON values (paths, numpy scalars) are written with ``str``."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, to_json(obj))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_parquet(path: str | os.PathLike, df) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(path: str | os.PathLike, df) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def write_html(path: str | os.PathLike, html: str) -> Path:
    return write_text(path, html)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Atomic write through any ``writer(tmp_path)`` (e.g. a safetensors or plotly saver)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


# -- checksums and manifests ------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_temporary(path: Path) -> bool:
    return TMP_MARK in path.name


def folder_files(root: Path, exclude: Iterable[str] = ()) -> list[str]:
    """Relative POSIX paths of the regular files under ``root``, without temporaries and ``exclude``."""
    skip = {MANIFEST, *exclude}
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not is_temporary(path) and rel not in skip and not _excluded(rel, skip):
            files.append(rel)
    return files


def _excluded(rel: str, patterns: set[str]) -> bool:
    return any(Path(rel).match(p) for p in patterns if "*" in p)


def build_manifest(root: str | os.PathLike, exclude: Iterable[str] = ()) -> dict[str, str]:
    root = Path(root)
    return {rel: sha256_file(root / rel) for rel in folder_files(root, exclude)}


def file_stats(root: Path, files: Iterable[str]) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of each file: a cheap check that a file is the one whose hash was taken."""
    return {rel: [(st := (root / rel).stat()).st_size, st.st_mtime_ns] for rel in files}


def write_manifest(root: str | os.PathLike, exclude: Iterable[str] = ()) -> dict[str, str]:
    """sha256 of every file (the content) plus its size and mtime (for :func:`verify_manifest`'s fast path)."""
    root = Path(root)
    manifest = build_manifest(root, exclude)
    write_json(root / MANIFEST, {"files": manifest, "stats": file_stats(root, manifest)})
    return manifest


def verify_manifest(root: str | os.PathLike, exclude: Iterable[str] = (), *, full: bool = True) -> bool:
    """True iff ``root/manifest.json`` exists and lists exactly the files on disk with their sha256.

    With ``full=False`` files whose size and mtime are those recorded when the manifest was written
    are taken as unchanged without being read (a cache hit on a 16 GB model costs a few ``stat``
    calls); any other file is hashed, so a copied entry (new mtimes) is still checked correctly.
    """
    root = Path(root)
    try:
        data = read_json(root / MANIFEST)
        recorded: Mapping[str, str] = data["files"]
        stats: Mapping[str, list[int]] = data.get("stats", {}) if not full else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    files = folder_files(root, exclude)
    if set(files) != set(recorded):
        return False
    for rel in files:
        if stats.get(rel) == file_stats(root, [rel])[rel]:
            continue
        if sha256_file(root / rel) != recorded[rel]:
            return False
    return True


# -- canonical hashing -----------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """One spelling per value: sorted keys, no spaces, ``repr`` of floats (so 0.1 != 0.10000001)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)


def digest(obj: Any) -> str:
    """sha256 hex digest of :func:`canonical_json` of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()
