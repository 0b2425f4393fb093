"""Load on the real ``pam serve`` process: concurrent clients, a share of malformed requests.

Starts ``pam serve`` (the embedded model unless ``--model``) on a free loopback port, warms it up,
then ``--clients`` threads send ``--requests`` requests drawn (seeded) from a mix of every endpoint,
``--malformed`` of them broken in one of the ways the API must refuse with a 4xx. Stops taking new
requests after ``--time-limit`` seconds. Reports crashes (server exits, dropped connections), 5xx,
4xx, malformed requests that did not get a 4xx, valid ones that did not get a 2xx, p50/p95 latency
per endpoint and the server's RSS at start (after warm-up) and end.

    python benchmarks/server_load.py [--requests 1000] [--clients 16] [--malformed 0.2] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from _report import report  # benchmarks/ is sys.path[0] when a benchmark runs as a script

TOKENS = 16
STREAM_END = {"perceive_stream": "event: result", "stream": "event: done"}
DROPPED = ("RemoteProtocolError", "ConnectError", "ReadError")


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


class Workload:
    """Seeded request specs: (endpoint, malformed kind or None, method, path, httpx kwargs)."""

    def __init__(self, seed: int, image_ids: list[str], scenes, max_upload_bytes: int, video: tuple[str, list] | None):
        self.video = video  # (video_id, first-frame boxes)
        self.rng = random.Random(seed)
        self.image_ids = image_ids
        self.scenes = scenes  # (png bytes, boxes)
        self.max_upload = max_upload_bytes

    def valid(self):
        r = self.rng
        i = r.randrange(len(self.image_ids))
        iid, (data, boxes) = self.image_ids[i], self.scenes[i]
        box = r.choice(boxes)
        kinds = {"health": 1, "models": 1, "images": 2, "segment": 4, "perceive": 3, "perceive_stream": 1, "chat": 2}
        if self.video:
            kinds.update({"video_frame": 1, "perceive_video": 0.5, "stream": 0.5})
        kind = r.choices(list(kinds), weights=list(kinds.values()))[0]
        if kind in ("video_frame", "perceive_video", "stream"):
            vid, vboxes = self.video
            if kind == "video_frame":
                return kind, "GET", f"/v1/videos/{vid}/frames/{r.randrange(8)}", {}
            if kind == "perceive_video":
                return kind, "POST", "/v1/perceive_video", {"json": {
                    "video_id": vid, "objects": [{"frame": 0, "box": r.choice(vboxes)}], "max_new_tokens": TOKENS}}
            return kind, "POST", "/v1/stream", {"json": {"video_id": vid, "region": {"box": r.choice(vboxes)},
                                                          "clip": 4, "max_new_tokens": TOKENS}}
        if kind == "health":
            return kind, "GET", "/health", {}
        if kind == "models":
            return kind, "GET", "/v1/models", {}
        if kind == "images":  # mostly repeats (cache hits), sometimes a new image (the encoder runs)
            fresh = r.random() < 0.3
            body = png(np.full((48, 64, 3), r.randrange(256), np.uint8)) if fresh else data
            return kind, "POST", "/v1/images", {"files": {"file": ("x.png", body, "image/png")}}
        if kind == "segment":
            return kind, "POST", "/v1/segment", {"json": {"image_id": iid, "regions": [{"box": box}]}}
        if kind in ("perceive", "perceive_stream"):
            return kind, "POST", "/v1/perceive", {"json": {
                "image_id": iid, "regions": [{"box": box}], "tasks": r.choice([["label"], ["brief_caption"], ["label", "definition"]]),
                "lang": r.choice(["en", "zh"]), "max_new_tokens": TOKENS, "stream": kind == "perceive_stream"}}
        return kind, "POST", "/v1/chat/completions", {"json": {
            "model": "tiny-shapes", "max_tokens": TOKENS, "messages": [{"role": "user", "region": {"box": box}, "content": [
                {"type": "image_url", "image_url": {"url": uri(data)}},
                {"type": "text", "text": "Classify this subject and provide its label."}]}]}}

    def malformed(self):
        r = self.rng
        iid = r.choice(self.image_ids)
        j = {"content-type": "application/json"}
        cases = {
            "corrupt_image": ("images", "POST", "/v1/images", {"json": {"image": uri(b"\x89PNG\r\n\x1a\n" + os.urandom(300))}}),
            "inverted_box": ("perceive", "POST", "/v1/perceive", {"json": {"image_id": iid, "regions": [{"box": [50, 50, 10, 10]}]}}),
            "box_outside": ("segment", "POST", "/v1/segment", {"json": {"image_id": iid, "regions": [{"box": [0, 0, 9000, 10]}]}}),
            "nan": ("segment", "POST", "/v1/segment", {"content": b'{"image_id": "%s", "regions": [{"box": [NaN, 1, 5, 5]}]}' % iid.encode(), "headers": j}),
            "broken_rle": ("segment", "POST", "/v1/segment", {"json": {"image_id": iid, "regions": [{"mask": {"size": [96, 128], "counts": "zz"}}]}}),
            "unknown_task": ("perceive", "POST", "/v1/perceive", {"json": {"image_id": iid, "regions": [{"box": [1, 1, 9, 9]}], "tasks": ["poem"]}}),
            "unknown_lang": ("perceive", "POST", "/v1/perceive", {"json": {"image_id": iid, "regions": [{"box": [1, 1, 9, 9]}], "lang": "xx"}}),
            "invalid_json": ("perceive", "POST", "/v1/perceive", {"content": b'{"image_id": ', "headers": j}),
            "invalid_utf8": ("perceive", "POST", "/v1/perceive", {"content": b'{"q": "\xff"}', "headers": j}),
            "empty_body": ("segment", "POST", "/v1/segment", {"content": b"", "headers": j}),
            "unknown_image_id": ("segment", "POST", "/v1/segment", {"json": {"image_id": "f" * 24, "regions": [{"box": [1, 1, 9, 9]}]}}),
            "oversized": ("images", "POST", "/v1/images", {"content": b"0" * (self.max_upload + 1), "headers": j}),
            "file_url_outside_roots": ("chat", "POST", "/v1/chat/completions", {"json": {"model": "tiny-shapes", "messages": [
                {"role": "user", "region": {"box": [1, 1, 9, 9]}, "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}}),
            "chat_unknown_model": ("chat", "POST", "/v1/chat/completions", {"json": {"model": "nope", "messages": []}}),
        }
        name = r.choice(sorted(cases))
        endpoint, method, path, kwargs = cases[name]
        return endpoint, name, method, path, kwargs

    def plan(self, n: int, malformed: float):
        out = []
        for _ in range(n):
            if self.rng.random() < malformed:
                out.append(self.malformed())
            else:
                kind, method, path, kwargs = self.valid()
                out.append((kind, None, method, path, kwargs))
        return out


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--malformed", type=float, default=0.2)
    ap.add_argument("--time-limit", type=float, default=900.0, help="stop sending new requests after this many seconds")
    ap.add_argument("--queue", type=int, default=32, help="pam serve --queue (>= clients: valid requests are not refused)")
    ap.add_argument("--max-upload-mb", type=float, default=4.0)
    ap.add_argument("--model", help="default: the embedded tiny model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "server_load.json"))
    args = ap.parse_args(argv)

    import httpx

    from perceive_anything.server.launch import start_server
    from perceive_anything.training.synthetic import generate_scene

    workdir = Path(tempfile.mkdtemp(prefix="pam-server-load-"))
    serve_args = ["--queue", str(args.queue), "--max-upload-mb", str(args.max_upload_mb)]
    if args.model:
        serve_args += ["--model", args.model]
    t_boot = time.perf_counter()
    server = start_server(serve_args, workdir / "server.log")
    try:
        boot_s = time.perf_counter() - t_boot
        rss_boot = server.rss_mb()
        scenes, image_ids = [], []
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for seed in range(4):
                s = generate_scene(1000 + seed, size=128, num_objects=3)
                data = png(s.image)
                scenes.append((data, [[float(v) for v in o.box] for o in s.objects]))
                image_ids.append(c.post("/v1/images", files={"file": ("s.png", data, "image/png")}).json()["image_id"])
            from perceive_anything.processing.video import VideoWriter
            from perceive_anything.training.synthetic import generate_video

            clip = generate_video(7, num_frames=8, size=64, num_objects=2, allow_exit=False)
            with VideoWriter(workdir / "clip.mp4", fps=8) as w:
                for f in clip.frames:
                    w.write(f)
            vid = c.post("/v1/videos", files={"file": ("clip.mp4", (workdir / "clip.mp4").read_bytes(), "video/mp4")}).json()
            video = (vid["video_id"], [[float(v) for v in o.boxes[0]] for o in clip.objects])
            warm = Workload(args.seed + 1, image_ids, scenes, int(args.max_upload_mb * 2**20), video)
            for kind, _, method, path, kwargs in warm.plan(40, 0.0):  # every code path once before measuring
                c.request(method, path, **kwargs)
        rss_start = server.rss_mb()

        plan = Workload(args.seed, image_ids, scenes, int(args.max_upload_mb * 2**20), video).plan(args.requests, args.malformed)
        records, lock, cursor = [], threading.Lock(), iter(range(len(plan)))
        deadline = time.monotonic() + args.time_limit

        def client_loop():
            with httpx.Client(base_url=server.url, timeout=300) as c:
                while time.monotonic() < deadline:
                    with lock:
                        i = next(cursor, None)
                    if i is None:
                        return
                    endpoint, bad, method, path, kwargs = plan[i]
                    t0 = time.perf_counter()
                    try:
                        r = c.request(method, path, **kwargs)
                        status, error = r.status_code, None
                        if status == 200 and endpoint in STREAM_END and STREAM_END[endpoint] not in r.text:
                            error = f"stream without its {STREAM_END[endpoint]!r}"
                    except httpx.HTTPError as exc:
                        status, error = None, f"{type(exc).__name__}: {exc}"
                    with lock:
                        records.append((endpoint, bad, status, (time.perf_counter() - t0) * 1000, error))

        t_run = time.perf_counter()
        threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_run
        alive = server.proc.poll() is None
        rss_end = server.rss_mb() if alive else float("nan")
        health = server.health() if alive else None
        log_tracebacks = server.log_text().count("Traceback")
    finally:
        server.stop()

    statuses = Counter(str(s) for _, _, s, _, _ in records)
    latency = defaultdict(list)
    for endpoint, bad, status, ms, _ in records:
        if bad is None and status == 200:
            latency[endpoint].append(ms)
    malformed = [(bad, s) for _, bad, s, _, _ in records if bad is not None]
    result = {
        "benchmark": "server_load",
        "model": health["model"] if health else None,
        "clients": args.clients,
        "requests_planned": args.requests,
        "requests_completed": len(records),
        "malformed_sent": len(malformed),
        "time_limit_s": args.time_limit,
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(records) / wall, 2) if wall else None,
        # the server died, or dropped a connection without an answer
        "crashes": int(not alive) + sum(1 for *_, s, _, e in records if s is None and e.startswith(DROPPED)),
        "connection_errors": sum(1 for _, _, s, _, e in records if s is None),
        "server_alive": alive,
        "tracebacks_in_log": log_tracebacks,
        "status_counts": dict(sorted(statuses.items())),
        "5xx": sum(1 for _, _, s, _, _ in records if s is not None and s >= 500),
        "4xx": sum(1 for _, _, s, _, _ in records if s is not None and 400 <= s < 500),
        "malformed_not_4xx": sorted({f"{b}:{s}" for b, s in malformed if s is None or not 400 <= s < 500}),
        "malformed_status": dict(sorted(Counter(f"{b}:{s}" for b, s in malformed).items())),
        "valid_not_2xx": sum(1 for _, b, s, _, e in records if b is None and (s != 200 or e)),
        "latency_ms": {k: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95)} for k, v in sorted(latency.items())},
        "rss_mb": {"after_boot": round(rss_boot, 1), "start": round(rss_start, 1), "end": round(rss_end, 1),
                   "growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2)},
        "server": {"boot_s": round(boot_s, 1), "queue": health["queue"] if health else None,
                   "cache": health["cache"] if health else None},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": "python benchmarks/server_load.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
