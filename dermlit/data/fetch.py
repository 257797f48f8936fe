"""Download HAM10000 from the Harvard Dataverse and lay it out as the ``ham10000`` source reads it.

Standard library (urllib) + rich only: a resumable, checksum-verified download of a few large
archives does not justify a dependency. The Dataverse API gives the file listing with checksums
(``/api/datasets/:persistentId/``) and the bytes (``/api/access/datafile/{id}``).

Tabular files (the metadata CSV, the ISIC 2018 ground truth) are ingested by Dataverse into
``.tab``; their listed checksum is the one of the uploaded original, so they are downloaded with
``?format=original`` under their original name.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
CHUNK = 1 << 20
#: connection failures tolerated per file before giving up (each retry resumes)
MAX_RESUMES = 5
#: full re-downloads after a checksum mismatch before giving up
MAX_REFETCHES = 1
HASHES = {"md5": "md5", "sha-1": "sha1", "sha1": "sha1", "sha-256": "sha256", "sha-512": "sha512"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class FetchError(RuntimeError):
    """A download that could not be completed or verified (names the file)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Dataverse dataset as its API lists it."""

    id: int
    name: str  # the name we save it under (the original name for ingested tabular files)
    checksum_type: str  # hashlib name
    checksum: str
    size: int | None
    original: bool  # download with ?format=original

    @classmethod
    def from_listing(cls, entry: dict) -> RemoteFile:
        f = entry["dataFile"]
        if "checksum" in f:
            ctype, value = f["checksum"]["type"], f["checksum"]["value"]
        elif "md5" in f:
            ctype, value = "MD5", f["md5"]
        else:
            raise FetchError(f"Dataverse listing gives no checksum for {f.get('filename')!r}")
        if ctype.lower() not in HASHES:
            raise FetchError(f"unsupported checksum type {ctype!r} for {f.get('filename')!r}")
        original = bool(f.get("originalFileName"))
        return cls(
            id=int(f["id"]),
            name=f["originalFileName"] if original else f["filename"],
            checksum_type=HASHES[ctype.lower()],
            checksum=value.lower(),
            size=f.get("originalFileSize") if original else f.get("filesize"),
            original=original,
        )


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def list_files(base_url: str, doi: str, timeout: float = 60) -> list[RemoteFile]:
    """The latest version's files, from ``/api/datasets/:persistentId/?persistentId=DOI``."""
    url = f"{base_url.rstrip('/')}/api/datasets/:persistentId/?persistentId={doi}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = json.load(resp)
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(f"cannot list {doi} at {url}: {err}") from err
    try:
        entries = payload["data"]["latestVersion"]["files"]
    except (KeyError, TypeError) as err:
        raise FetchError(
            f"unexpected Dataverse answer from {url}: no data.latestVersion.files"
        ) from err
    return [RemoteFile.from_listing(e) for e in entries]


def _download_once(url: str, part: Path, on_bytes: Callable[[int], None], timeout: float) -> bool:
    """Append to ``part`` from where it stops (HTTP Range). True when the server sent it all."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # nothing left to send: the part file is already whole
            return True
        raise
    with resp:
        if have and resp.status != 206:  # the server ignored Range: start over
            have = 0
            on_bytes(-part.stat().st_size)
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        received = 0
        with open(part, "ab" if have else "wb") as out:
            try:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    received += len(block)
                    on_bytes(len(block))
            except (TimeoutError, http.client.IncompleteRead, ConnectionError) as err:
                log.warning("connection lost after %d bytes of %s: %s", received, url, err)
                return False
    return expected is None or received >= expected


def download(
    url: str,
    dest: Path,
    remote: RemoteFile,
    progress: Progress | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming, then verify the checksum.

    A mismatch deletes the file and downloads it again (:data:`MAX_REFETCHES` times), then
    raises :class:`FetchError` naming the file. An existing ``dest`` that verifies is kept.
    """
    if dest.is_file() and file_digest(dest, remote.checksum_type) == remote.checksum:
        log.info("%s already downloaded and verified", dest.name)
        return dest
    part = dest.with_name(dest.name + ".part")
    task = progress.add_task(remote.name, total=remote.size) if progress else None

    def advance(n: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, n)

    if task is not None and part.exists():
        advance(part.stat().st_size)
    for attempt in range(MAX_REFETCHES + 1):
        for _ in range(MAX_RESUMES + 1):
            try:
                if _download_once(url, part, advance, timeout):
                    break
            except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
                if isinstance(err, urllib.error.HTTPError):
                    raise FetchError(f"{remote.name}: HTTP {err.code} from {url}") from err
                log.warning("%s: %s; resuming", remote.name, err)
        else:
            raise FetchError(
                f"{remote.name}: download interrupted {MAX_RESUMES + 1} times; run the same "
                f"command again to resume from {part}"
            )
        digest = file_digest(part, remote.checksum_type)
        if digest == remote.checksum:
            os.replace(part, dest)
            return dest
        log.warning(
            "%s: %s mismatch (got %s, listed %s)%s",
            remote.name,
            remote.checksum_type,
            digest,
            remote.checksum,
            "; downloading it again" if attempt < MAX_REFETCHES else "",
        )
        if task is not None:
            advance(-part.stat().st_size)
        part.unlink()
    raise FetchError(
        f"{remote.name}: {remote.checksum_type} checksum still wrong after {MAX_REFETCHES + 1} "
        f"downloads (listed {remote.checksum}); the file was deleted"
    )


# --------------------------------------------------------------------------- layout
def extract_flat(archive: Path, folder: Path, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> int:
    """Extract the archive's image members into ``folder`` by base name (no nested dirs).

    The official zips differ in whether members sit in a folder; flattening gives the layout
    the sources scan either way, and using only base names rules out path traversal.
    """
    folder.mkdir(parents=True, exist_ok=True)
    suffixes = tuple(suffixes)
    count = 0
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = os.path.basename(member.filename)
            if member.is_dir() or name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            with zf.open(member) as src, open(folder / name, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            count += 1
    return count


@dataclass(frozen=True)
class Part:
    """Which listed file goes where: a pattern on its name and how to lay it out."""

    pattern: str
    option: str  # "" (always), "segmentations" or "isic2018_test"
    target: str  # folder to extract into (archives) or file name (tables)


#: HAM10000 files on the Dataverse and where the ``ham10000`` / ISIC-CSV sources expect them
HAM10000_PARTS: tuple[Part, ...] = (
    Part(r"HAM10000_metadata\.(csv|tab)", "", "HAM10000_metadata.csv"),
    Part(r"HAM10000_images_part_1\.zip", "", "HAM10000_images_part_1"),
    Part(r"HAM10000_images_part_2\.zip", "", "HAM10000_images_part_2"),
    Part(r"HAM10000_segmentations_lesion_tschandl\.zip", "segmentations", "masks"),
    Part(r"ISIC2018_Task3_Test_Images\.zip", "isic2018_test", "ISIC2018_Task3_Test_Images"),
    Part(
        r"ISIC2018_Task3_Test_GroundTruth\.(csv|tab)",
        "isic2018_test",
        "ISIC2018_Task3_Test_GroundTruth.csv",
    ),
)


def select(files: list[RemoteFile], options: set[str]) -> list[tuple[RemoteFile, Part]]:
    """The listed files wanted with these options; a missing required file is an error."""
    chosen = []
    for part in HAM10000_PARTS:
        if part.option and part.option not in options:
            continue
        match = [f for f in files if re.fullmatch(part.pattern, f.name, flags=re.IGNORECASE)]
        if not match:
            if part.option:
                log.warning("%s not in the listing; skipped", part.pattern)
                continue
            names = ", ".join(f.name for f in files)
            raise FetchError(f"no file matching {part.pattern} in the listing ({names})")
        chosen.append((match[0], part))
    return chosen


def place(download_path: Path, part: Part, root: Path) -> str:
    """Extract an archive or copy a table into the layout; returns a one-line summary."""
    target = root / part.target
    if download_path.suffix.lower() == ".zip":
        return f"{extract_flat(download_path, target)} files -> {target}"
    if download_path.suffix.lower() == ".tab":  # no original kept by Dataverse: convert
        import pandas as pd

        pd.read_csv(download_path, sep="\t").to_csv(target, index=False)
    else:
        shutil.copyfile(download_path, target)
    return f"table -> {target}"


def fetch_ham10000(
    to: str | os.PathLike,
    base_url: str = DEFAULT_BASE_URL,
    doi: str = HAM10000_DOI,
    segmentations: bool = False,
    isic2018_test: bool = False,
    keep_archives: bool = True,
    show_progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download, verify and lay out HAM10000 under ``to``; re-running resumes or skips."""
    root = Path(to).expanduser()
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    options = {
        o for o, on in (("segmentations", segmentations), ("isic2018_test", isic2018_test)) if on
    }
    wanted = select(list_files(base_url, doi, timeout), options)
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not show_progress) as progress:
        paths = []
        for remote, _part in wanted:
            url = f"{base_url.rstrip('/')}/api/access/datafile/{remote.id}"
            url += "?format=original" if remote.original else ""
            paths.append(download(url, downloads / remote.name, remote, progress, timeout))
    for path, (_, part) in zip(paths, wanted, strict=True):
        console.print(f"{path.name}: {place(path, part, root)}")
        if not keep_archives:
            path.unlink()
    return root
