"""`automodel serve`: a finished run over real HTTP, from its ONNX export, with no generated code.

The server is the real command in a subprocess on a free port; the client is
automodel.testing.serve_client (http.client). The held-out test images of the
run must get the labels `automodel predict` gives them.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from automodel.outputs.bestmodel import HeldOut
from automodel.search.workspace import RunDir, read_final
from automodel.testing.serve_client import ServeProcess, free_port

pytestmark = pytest.mark.slow


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid grayscale PNG of width x height black pixels: a few hundred KB that decode to `width*height` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def run_copy(finished_run, tmp_path_factory) -> Path:
    """The finished run copied (serve writes its ONNX export into the run folder)."""
    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(finished_run, run, symlinks=True)
    return run


@pytest.fixture(scope="module")
def held_out(run_copy) -> list[Path]:
    return HeldOut.load(run_copy).paths("test")


def predict_cli(cli, run: Path, images: list[Path], tmp: Path) -> dict[str, tuple[str, float]]:
    """{file name: (label, confidence)} from `automodel predict` over copies of `images`."""
    folder = tmp / "images"
    folder.mkdir()
    for path in images:
        shutil.copy(path, folder / f"{path.parent.name}__{path.name}")
    out = tmp / "pred.csv"
    proc = cli("predict", run, folder, "--out", out, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with out.open() as fh:
        return {row["filename"]: (row["label"], float(row["confidence"])) for row in csv.DictReader(fh)}


def test_serve_gives_the_labels_of_predict_and_refuses_bad_input_with_4xx(run_copy, held_out, cli, tmp_path):
    assert len(held_out) >= 20
    expected = predict_cli(cli, run_copy, held_out, tmp_path)
    with ServeProcess(run_copy, tmp_path / "server", "--max-upload-mb", "1") as server:
        client = server.client()
        # The ONNX export was made first, in the sandbox, with its parity check.
        assert "exporting it in the sandbox" in server.stderr()
        assert (run_copy / "export" / "model.onnx").is_file()

        status, page = client.get("/docs")
        assert status == 200 and "swagger" in page.lower()
        status, api = client.get("/openapi.json")
        assert status == 200
        body = api["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert "multipart/form-data" in body and "curl -F file=@" in api["info"]["description"]

        status, info = client.get("/info")
        classes = RunDir(run_copy).info["dataset"]["classes"]
        final = read_final(run_copy)  # the run's model: its final refit on train+val, with a test score only
        best = next(r for r in RunDir(run_copy).iterations() if r.iteration == final["members"][0]["refit"])
        assert status == 200 and info["classes"] == classes
        assert info["scores"] == {"iteration": best.iteration, "kind": "refit", "val_accuracy": None,
                                  "test_accuracy": final["test_accuracy"]} and info["iteration"] == best.iteration
        assert info["input"]["decoded_size"] == {"height": 28, "width": 28} and info["input"]["channels"] == 1
        assert info["input"]["preprocessing"]["eval_transform"]["mean"]
        batches = {b["batch"]: b for b in info["estimate"]["batches"]}
        assert set(batches) == {1, 32}
        for b in batches.values():
            assert 0 < b["p50_ms_per_image"] <= b["p95_ms_per_image"] and b["images_per_s"] > 0
        assert info["memory"]["rss_mb"] > 0 and info["estimate"]["rss_mb"] > 0
        assert "p95" in server.stderr() and "MB resident" in server.stderr()  # printed at start too

        # The held-out images 50 per request, then one per request from 8 threads at once (batched).
        files = [(f"{p.parent.name}__{p.name}", p.read_bytes()) for p in held_out]
        got = {}
        for lo in range(0, len(files), 50):
            status, answer = client.predict(files[lo:lo + 50], top_k=3)
            assert status == 200, answer
            got.update({p["file"]: p for p in answer["predictions"]})
        assert set(got) == set(expected)
        for name, (label, confidence) in expected.items():
            assert got[name]["label"] == label, name
            assert got[name]["confidence"] == pytest.approx(confidence, abs=1e-3)
            assert [r["label"] for r in got[name]["top_k"]][0] == label and len(got[name]["top_k"]) == 3

        def one(item):
            c = server.client()
            try:
                return c.predict([item])
            finally:
                c.close()

        with ThreadPoolExecutor(8) as pool:
            singles = list(pool.map(one, files))
        assert all(s == 200 for s, _ in singles)
        assert {a["predictions"][0]["file"]: a["predictions"][0]["label"] for _, a in singles} == {
            n: label for n, (label, _) in expected.items()}
        batching = client.get("/info")[1]["batching"]
        assert batching["images"] == 2 * len(files) and batching["largest"] <= 32

        # Bad input: a 4xx with a JSON message each, and the server keeps serving.
        bad = [
            ("text", client.predict([("notes.txt", b"these are words, not pixels\n")]), 415),
            ("empty body", client.request("POST", "/predict"), 400),
            ("empty upload", client.predict([("empty.png", b"")]), 400),
            ("bomb", client.predict([("bomb.png", bomb_png())]), 413),
            ("too large", client.predict([("big.png", os.urandom(2 * 2**20))]), 413),
            ("bad top_k", client.predict(files[:1], top_k=0), 400),
            ("too many images", client.predict(files[:65]), 400),
        ]
        for what, (status, reply), code in bad:
            assert status == code, (what, status, reply)
            assert isinstance(reply, dict) and reply["error"], (what, reply)
            assert client.get("/health") == (200, {"status": "ok", "iteration": best.iteration}), what
        assert "pixels" in bad[3][1][1]["error"] and "--max-upload-mb" in bad[4][1][1]["error"]
        assert client.predict(files[:1])[0] == 200
    assert server.returncode == 0 and "Traceback" not in server.stderr()


def test_ctrl_c_stops_every_worker_cleanly(run_copy, held_out, tmp_path):
    with ServeProcess(run_copy, tmp_path / "server", "--workers", "2") as server:
        client = server.client()
        status, answer = client.predict([(held_out[0].name, held_out[0].read_bytes())])
        assert status == 200 and answer["predictions"][0]["label"]
        pids = set()
        for _ in range(20):  # new connections spread over the workers
            c = server.client()
            pids.add(c.get("/info")[1]["memory"]["pid"])
            c.close()
        client.close()
    assert server.returncode == 0, server.stderr()[-3000:]
    assert "automodel: server stopped." in server.stderr() and "Traceback" not in server.stderr()
    for pid in pids | {server.proc.pid}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_serve_says_how_to_install_the_extra_and_refuses_a_busy_port(run_copy, cli, tmp_path):
    hide = "import sys; sys.modules['fastapi'] = None; from automodel.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", hide, "serve", str(run_copy)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 9 and "pip install 'automodel[serve]'" in proc.stderr and "fastapi" in proc.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = cli("serve", run_copy, "--port", busy.getsockname()[1])
    assert proc.returncode == 2 and "--port" in proc.stderr and "Traceback" not in proc.stderr
    RunDir.create(tmp_path / "ws", "empty", {"dataset": {}})
    proc = cli("serve", tmp_path / "ws" / "empty", "--port", free_port())
    assert proc.returncode == 5 and "no finished iteration" in proc.stderr
