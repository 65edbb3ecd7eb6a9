"""Web app responsiveness: how long the page waits after an edit, for a preview, and for a run.

    .venv/bin/python benchmarks/bench_ui.py [--repeats 7]

Goes through the real HTTP routes (FastAPI's test client, in-process, no network) on the bundled
640x360 waterfall photo and on a 4000x3000 photo (the size of a phone picture):

- field: POST /field with 5 arrows -> PNG of the motion field (what each edit triggers), median;
- upload: POST /image of the photo (decode, checks, display copy), median;
- preview: the quick warp preview job (24 frames, longer side 256) from submit to finished file;
- run: a full warp job (50 frames, longer side 512, MP4), submit to finished file;
- gif: the GIF of that run, made on its first download (from the MP4, through the queue).

Timings include the engine's first-call compilation only in the "first" figures.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from stillmotion.ui.server import create_app

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "assets" / "examples"
ARROWS = [
    {"points": [[318, 223], [326, 249]]},
    {"points": [[363, 268], [401, 274]]},
    {"points": [[344, 297], [339, 327]]},
    {"points": [[336, 99], [317, 99]]},
    {"points": [[489, 303], [520, 314], [560, 305]]},
]


def _wait(client, sid: str, jid: str) -> dict:
    while True:
        status = client.get(f"/api/s/{sid}/jobs/{jid}").json()
        if status["state"] not in ("queued", "running"):
            assert status["state"] == "done", status
            return status
        time.sleep(0.01)


def _job(client, sid: str, body: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    jid = client.post(f"/api/s/{sid}/jobs", json=body).json()["id"]
    status = _wait(client, sid, jid)
    return time.perf_counter() - t, status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    photo = (EXAMPLES / "waterfall.jpg").read_bytes()
    big = Image.open(io.BytesIO(photo)).convert("RGB").resize((4000, 3000), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    big_jpeg = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp, TestClient(create_app(work_root=Path(tmp))) as client:
        sid = client.post("/api/session").json()["session"]
        for name, data, scale in (("640x360", photo, 1.0), ("4000x3000", big_jpeg, 4000 / 640)):
            ups = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = client.post(f"/api/s/{sid}/image", files={"file": ("p.jpg", data, "image/jpeg")})
                ups.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            arrows = [{"points": (np.asarray(a["points"]) * scale).tolist()} for a in ARROWS]
            fields = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = client.post(f"/api/s/{sid}/field", json={"arrows": arrows})
                fields.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            print(
                f"{name:>10}  upload {statistics.median(ups) * 1000:7.1f} ms   "
                f"field preview {statistics.median(fields) * 1000:6.1f} ms (median of {args.repeats})"
            )
        assert (
            client.post(f"/api/s/{sid}/image", files={"file": ("p.jpg", photo, "image/jpeg")}).status_code
            == 200
        )
        preview = {"kind": "preview", "arrows": ARROWS}
        first = _job(client, sid, preview)[0]
        previews = [_job(client, sid, preview)[0] for _ in range(3)]
        print(
            f"quick preview (24 frames, 256 px): first {first:.2f} s, "
            f"then median {statistics.median(previews):.2f} s"
        )
        full = {"kind": "full", "frames": 50, "size": 512, "arrows": ARROWS}
        runs, gifs = [], []
        for _ in range(2):
            seconds, status = _job(client, sid, full)
            runs.append(seconds)
            t = time.perf_counter()
            assert client.get(status["files"]["mp4"].replace(".mp4", ".gif")).status_code == 200
            gifs.append(time.perf_counter() - t)
        print(
            f"full warp run (50 frames, 512x288, mp4): median {statistics.median(runs):.2f} s; "
            f"its GIF on first download: median {statistics.median(gifs):.2f} s"
        )


if __name__ == "__main__":
    main()
