"""A content-addressed cache of trained models and other artefacts (θp, θ_full, θr, θo, results).

Training θp → θr → θo takes most of a run's time and the same models serve many runs (every
objective and scenario of a seed starts from the same θo). The cache stores each artefact under a
**key that is a hash of everything that determines it**: the model spec, a fingerprint of the data,
the training parameters and seed, the workbench version and the *source code* of the modules that
produce it. Change any of them and the key changes, so a stale model is never served — the failure
mode of caches keyed by a hand-written name. Nothing is ever looked up by name or date.

Layout: ``<cache_root>/<kind>/<key>/`` holds the files written by the caller's ``save``, an
``entry.json`` (the inputs, for humans) and a ``manifest.json`` of sha256 checksums. An entry is
built in a hidden temporary folder and renamed into place, so a killed build leaves nothing that
looks like an entry; an entry whose checksums fail is rebuilt, not served. Tensors are stored as
safetensors only (no pickle, nothing executable is ever loaded).

Keys include the source of the modules that build an artefact *and of everything they import*,
found from the import graph (:mod:`workbench.runs.deps`), and the versions of torch, transformers,
tokenizers, numpy, scipy and rouge-score. A hit checks sizes and modification times against the
manifest (full hashes are taken at build time, and on every hit with ``verify``). Keys also hold what
of the machine moves the numbers (:func:`workbench.runs.deps.machine`): an entry built at 2 CPU threads,
on another CPU model or on another device is not served to a run that would have computed other bits.
Two processes that miss the same entry build it once: the second waits on a lock beside the entry.

The root is ``$WORKBENCH_CACHE`` or ``<repo>/.cache``, read when a cache is created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from workbench.runs import claims, deps, io

T = TypeVar("T")
ENTRY = "entry.json"
HASH_MEMO = "file_hashes.json"
log = logging.getLogger(__name__)


def cache_root(root: str | os.PathLike | None = None) -> Path:
    from workbench.runs.rundir import repo_root

    return Path(root or os.environ.get("WORKBENCH_CACHE") or repo_root() / ".cache")


# -- fingerprints --------------------------------------------------------------------------------------
def source_fingerprint(modules: Iterable[str]) -> dict[str, str]:
    """sha256 of the source of ``modules`` and of every workbench module they import
    (:func:`workbench.runs.deps.closure`): a helper moved into a new file is still covered."""
    return deps.source_hashes(modules)


def to_plain(obj: Any) -> Any:
    """JSON-able form of ``obj`` for hashing: dataclasses, paths, tuples, arrays and tensors included."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__qualname__, **to_plain(dataclasses.asdict(obj))}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "detach") or hasattr(obj, "tobytes"):
        return array_fingerprint(obj)
    return obj


def array_fingerprint(array: Any) -> dict[str, Any]:
    """Dtype, shape and content hash of a tensor or numpy array."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().contiguous()
        data = array.view(-1).view(dtype=_byte_dtype()).numpy().tobytes() if array.numel() else b""
    else:
        data = array.tobytes()
    return {"dtype": str(array.dtype), "shape": list(array.shape), "sha256": hashlib.sha256(data).hexdigest()}


def _byte_dtype():
    import torch

    return torch.uint8


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of :func:`to_plain` of ``obj`` (data sets, configs, tensors)."""
    return io.digest(to_plain(obj))


def cache_key(kind: str, inputs: Mapping[str, Any], sources: Iterable[str] = (), device: Any = None) -> str:
    """Key of an artefact: kind, inputs, workbench version, the source of ``sources`` and everything
    they import (:func:`source_fingerprint`), the versions of the libraries that decide the numbers
    (:func:`workbench.runs.deps.environment`) and what of the machine does
    (:func:`workbench.runs.deps.machine`: threads, CPU model and kernels, ``device``, determinism)."""
    from workbench import __version__

    return io.digest({"kind": kind, "inputs": to_plain(inputs), "workbench": __version__,
                      "sources": source_fingerprint(sources), "environment": deps.environment(),
                      "machine": deps.machine(device)})


# -- the cache ---------------------------------------------------------------------------------------
VERIFY_ENV = "WORKBENCH_CACHE_VERIFY"


class Cache:
    """``get_or_build`` over ``<root>/<kind>/<key>/`` entries with checksum manifests.

    Entries are hashed in full when they are built; a hit checks each file's size and mtime against
    the manifest and hashes only files that differ. ``verify=True`` (or ``$WORKBENCH_CACHE_VERIFY=1``,
    which ``python -m workbench run/grid --verify`` sets) hashes every file of every hit.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, verify: bool | None = None, device: Any = None):
        self.root = cache_root(root)
        self.verify = os.environ.get(VERIFY_ENV, "") not in ("", "0") if verify is None else verify
        self.device = device  # where this cache's artefacts are computed (None: "auto"), part of every key

    def key(self, kind: str, inputs: Mapping[str, Any], sources: Iterable[str] = ()) -> str:
        """:func:`cache_key` on this cache's device: the key :meth:`get_or_build` stores ``inputs`` under."""
        return cache_key(kind, inputs, sources, self.device)

    def entry_path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, inputs: Mapping[str, Any], sources: Iterable[str] = ()) -> Path | None:
        """The entry folder when a valid entry exists, else ``None``."""
        path = self.entry_path(kind, self.key(kind, inputs, sources))
        return path if io.verify_manifest(path, full=self.verify) else None

    def get_or_build(self, kind: str, inputs: Mapping[str, Any], build: Callable[[], T],
                     save: Callable[[T, Path], None], load: Callable[[Path], T], force: bool = False,
                     sources: Iterable[str] = ()) -> T:
        """Serve the entry for ``inputs`` or build, store and return it.

        ``build()`` makes the artefact, ``save(obj, folder)`` writes its files into an empty folder,
        ``load(folder)`` reads them back. ``sources`` names the modules whose code determines the
        artefact (e.g. ``["workbench.training"]``); their source hashes are part of the key.
        ``force`` rebuilds and replaces the entry. The object returned after a build is the one
        loaded back from disk, so a hit and a miss give the same thing.

        A build runs under an exclusive lock beside the entry (:func:`workbench.runs.claims.exclusive`):
        a second process that needs the same entry meanwhile waits, then serves what the first built.
        """
        key = self.key(kind, inputs, sources)
        path = self.entry_path(kind, key)
        if not force and io.verify_manifest(path, full=self.verify):
            log.info("cache hit %s/%s", kind, key[:12])
            return load(path)
        with claims.exclusive(path.with_name(f".{key}.lock"), f"cache entry {kind}/{key[:12]}"):
            if not force and io.verify_manifest(path, full=self.verify):  # built by the process we waited for
                log.info("cache hit %s/%s (built meanwhile by another process)", kind, key[:12])
                return load(path)
            if path.exists() and not force:
                log.warning("cache entry %s/%s fails its checksums; rebuilding", kind, key[:12])
            self._store(path, build(), save, {"kind": kind, "key": key, "inputs": to_plain(inputs),
                                              "sources": sorted(set(sources))})
        return load(path)

    def folder_fingerprint(self, folder: str | os.PathLike) -> str:
        """sha256 over a folder's files (relative path and content hash): a checkpoint's identity.

        Each file's hash is remembered in ``<root>/file_hashes.json`` under its path, size and mtime,
        so a 16 GB checkpoint brought from elsewhere is read once, not at every session.
        """
        folder = Path(folder).resolve()
        memo_path = self.root / HASH_MEMO
        try:
            memo = io.read_json(memo_path)
        except (OSError, ValueError):
            memo = {}
        hashes, changed = {}, False
        for rel in io.folder_files(folder):
            stat = (folder / rel).stat()
            key = f"{folder / rel}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in memo:
                memo[key], changed = io.sha256_file(folder / rel), True
            hashes[rel] = memo[key]
        if changed:
            io.write_json(memo_path, memo)
        return io.digest(hashes)

    def _store(self, path: Path, obj: Any, save: Callable[[Any, Path], None], entry: dict) -> None:
        tmp = path.with_name(f".{path.name}{io.TMP_MARK}{secrets.token_hex(4)}")
        tmp.mkdir(parents=True)
        try:
            save(obj, tmp)
            io.write_json(tmp / ENTRY, entry)
            io.write_manifest(tmp)
            _replace_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    # A folder cannot be renamed onto a non-empty one: move the old entry aside first.
    if dst.exists():
        old = dst.with_name(f".{dst.name}{io.TMP_MARK}old-{secrets.token_hex(4)}")
        os.replace(dst, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(src, dst)
    except OSError:
        # Another process stored the same key meanwhile; its entry is as good as ours.
        if not io.verify_manifest(dst):
            raise


# -- standard savers (safetensors and JSON; never pickle) --------------------------------------------
TENSORS_FILE = "tensors.safetensors"
JSON_FILE = "value.json"


def save_tensors(tensors: Mapping[str, Any], folder: Path) -> None:
    """A state dict (or any name → tensor mapping) as safetensors; clones break shared storage (tied weights)."""
    from safetensors.torch import save_file

    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    io.write_with(folder / TENSORS_FILE, lambda tmp: save_file(plain, str(tmp)))


def load_tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / TENSORS_FILE))


def save_json(value: Any, folder: Path) -> None:
    io.write_json(folder / JSON_FILE, value)


def load_json(folder: Path) -> Any:
    return io.read_json(folder / JSON_FILE)
