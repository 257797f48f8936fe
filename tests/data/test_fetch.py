"""`dermlit data fetch` end to end against a local Dataverse look-alike on 127.0.0.1.

The server speaks the two API calls used (dataset listing, datafile access with HTTP Range),
and can drop a connection half-way through a file or corrupt a file, once or always.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlit.cli import main as dermlit_main
from dermlit.data.fetch import FetchError, fetch_ham10000
from dermlit.data.sources import HAM10000Source

DOI = "doi:10.7910/DVN/DBW86T"


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@dataclass
class FakeDataverse:
    """Files by id, plus behaviour switches and a log of (file id, Range header) requests."""

    files: dict[int, dict] = field(default_factory=dict)
    drop_once: set[int] = field(default_factory=set)
    corrupt_once: set[int] = field(default_factory=set)
    corrupt_always: set[int] = field(default_factory=set)
    requests: list[tuple[int, str | None]] = field(default_factory=list)

    def add(self, file_id: int, name: str, data: bytes, checksum: str, original: str = "") -> None:
        entry = {"id": file_id, "filename": name, "filesize": len(data)}
        if checksum == "md5-legacy":
            entry["md5"] = hashlib.md5(data).hexdigest()
        else:
            algo = {"MD5": "md5", "SHA-1": "sha1"}[checksum]
            entry["checksum"] = {"type": checksum, "value": hashlib.new(algo, data).hexdigest()}
        if original:  # an ingested table: listed as .tab, the checksum is the original's
            entry.update(originalFileName=original, originalFileSize=len(data))
        self.files[file_id] = {"entry": entry, "data": data}

    def listing(self) -> bytes:
        files = [
            {"label": f["entry"]["filename"], "dataFile": f["entry"]} for f in self.files.values()
        ]
        return json.dumps({"status": "OK", "data": {"latestVersion": {"files": files}}}).encode()


def make_handler(dv: FakeDataverse) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def send_body(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == f"/api/datasets/:persistentId/?persistentId={DOI}":
                return self.send_body(200, dv.listing(), {"Content-Type": "application/json"})
            m = re.fullmatch(r"/api/access/datafile/(\d+)(\?format=original)?", self.path)
            if not m or int(m.group(1)) not in dv.files:
                return self.send_body(404, b"not found", {})
            file_id = int(m.group(1))
            data = dv.files[file_id]["data"]
            if dv.files[file_id]["entry"].get("originalFileName") and not m.group(2):
                data = b"tab\tformat\n"  # the archival .tab, not what the checksum describes
            range_header = self.headers.get("Range")
            dv.requests.append((file_id, range_header))
            if file_id in dv.corrupt_always or file_id in dv.corrupt_once:
                dv.corrupt_once.discard(file_id)
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1)) if range_header else 0
            if start >= len(data) > 0:
                return self.send_body(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206 if range_header else 200
            headers = {"Content-Length": str(len(data) - start)}
            if range_header:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if file_id in dv.drop_once:  # promise everything, send half, hang up
                dv.drop_once.discard(file_id)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return None
            return self.send_body(status, body, headers)

    return Handler


@dataclass
class Served:
    url: str
    dv: FakeDataverse
    images_1: dict[str, bytes]
    images_2: dict[str, bytes]
    metadata: bytes
    ground_truth: bytes


@pytest.fixture
def served() -> Iterator[Served]:
    images_1 = {f"ISIC_00000{i:02d}": jpeg(i) for i in range(4)}
    images_2 = {f"ISIC_00001{i:02d}": jpeg(100 + i) for i in range(3)}
    ids = [*images_1, *images_2]
    labels = ["nv", "mel", "bkl", "nv", "bcc", "akiec", "vasc"]
    meta = pd.DataFrame(
        {"lesion_id": [f"HAM_{i}" for i in range(7)], "image_id": ids, "dx": labels}
    )
    metadata = meta.to_csv(index=False).encode()
    ground_truth = b"image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0034524,0,1,0,0,0,0,0\n"
    masks = {f"HAM10000_segmentations_lesion_tschandl/{i}_segmentation.png": jpeg(7) for i in ids}
    dv = FakeDataverse()
    # part 1: members at the top level; part 2: inside a folder, with a non-image file
    dv.add(
        11,
        "HAM10000_images_part_1.zip",
        zip_of({f"{k}.jpg": v for k, v in images_1.items()}),
        "MD5",
    )
    part_2 = {f"HAM10000_images_part_2/{k}.jpg": v for k, v in images_2.items()}
    dv.add(12, "HAM10000_images_part_2.zip", zip_of({**part_2, "LICENSE.txt": b"x"}), "SHA-1")
    dv.add(13, "HAM10000_metadata.tab", metadata, "md5-legacy", original="HAM10000_metadata.csv")
    dv.add(14, "HAM10000_segmentations_lesion_tschandl.zip", zip_of(masks), "MD5")
    test_zip = zip_of({"ISIC2018_Task3_Test_Images/ISIC_0034524.jpg": jpeg(9)})
    dv.add(15, "ISIC2018_Task3_Test_Images.zip", test_zip, "MD5")
    gt_name = "ISIC2018_Task3_Test_GroundTruth.csv"
    dv.add(16, "ISIC2018_Task3_Test_GroundTruth.tab", ground_truth, "MD5", original=gt_name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(dv))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield Served(url, dv, images_1, images_2, metadata, ground_truth)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetch_resumes_refetches_corrupt_and_lays_out(served: Served, tmp_path: Path) -> None:
    dv = served.dv
    dv.drop_once.add(11)  # part 1 is interrupted half-way
    dv.corrupt_once.add(12)  # part 2 arrives corrupted the first time
    root = tmp_path / "ham"
    argv = ["data", "fetch", "ham10000", "--to", str(root), "--base-url", served.url]
    assert dermlit_main([*argv, "--segmentations", "--isic2018-test", "--no-progress"]) == 0

    part_1_size = dv.files[11]["entry"]["filesize"]
    assert [r for i, r in dv.requests if i == 11] == [None, f"bytes={part_1_size // 2}-"]
    assert [r for i, r in dv.requests if i == 12] == [None, None]  # deleted, fetched again whole
    assert (root / "HAM10000_metadata.csv").read_bytes() == served.metadata
    for folder, images in (
        ("HAM10000_images_part_1", served.images_1),
        ("HAM10000_images_part_2", served.images_2),
    ):
        assert {p.stem: p.read_bytes() for p in (root / folder).iterdir()} == images
    assert len(list((root / "masks").glob("*_segmentation.png"))) == 7
    assert (root / "ISIC2018_Task3_Test_Images/ISIC_0034524.jpg").is_file()
    assert (root / "ISIC2018_Task3_Test_GroundTruth.csv").read_bytes() == served.ground_truth
    assert not list((root / "downloads").glob("*.part"))

    df, report = HAM10000Source(root).load()
    assert report.ok, report.message()
    expected = pd.read_csv(io.BytesIO(served.metadata))
    assert df["image_id"].tolist() == expected["image_id"].tolist()
    assert df["label"].tolist() == expected["dx"].tolist()
    assert all(Path(p).parent.name.startswith("HAM10000_images_part_") for p in df["path"])

    # a second run finds every archive verified and downloads nothing
    before = len(dv.requests)
    assert dermlit_main([*argv, "--no-progress"]) == 0
    assert len(dv.requests) == before


def test_checksum_wrong_twice_fails_naming_the_file(served: Served, tmp_path: Path) -> None:
    served.dv.corrupt_always.add(12)
    with pytest.raises(FetchError, match=r"HAM10000_images_part_2\.zip: sha1 checksum still wrong"):
        fetch_ham10000(tmp_path / "ham", base_url=served.url, show_progress=False)
    assert [i for i, _ in served.dv.requests].count(12) == 2
    assert not list((tmp_path / "ham/downloads").glob("HAM10000_images_part_2*"))


def test_optional_files_are_not_fetched_unless_asked(served: Served, tmp_path: Path) -> None:
    fetch_ham10000(tmp_path / "ham", base_url=served.url, show_progress=False)
    assert sorted({i for i, _ in served.dv.requests}) == [11, 12, 13]
    assert not (tmp_path / "ham/masks").exists()


def test_listing_without_metadata_is_refused(served: Served, tmp_path: Path) -> None:
    del served.dv.files[13]
    with pytest.raises(FetchError, match=r"no file matching HAM10000_metadata"):
        fetch_ham10000(tmp_path / "ham", base_url=served.url, show_progress=False)


def test_unreachable_server_is_named(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="cannot list doi:10.7910/DVN/DBW86T"):
        fetch_ham10000(
            tmp_path / "x", base_url="http://127.0.0.1:9", show_progress=False, timeout=2
        )
