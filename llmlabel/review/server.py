"""The built-in review page: a stdlib HTTP server on 127.0.0.1 serving one self-contained page (no external asset,
works offline) and a small JSON API.

- `GET /` the page; `GET /api/state` the rows to review, the labels and the answers given so far;
- `POST /api/answer` with `{"row": R, "label": L}` (a task label, or null to undo the row's answer): the record is
  written to `reviews.jsonl` (atomically, see `ReviewLog.append`) before the reply, so a killed server loses no
  answer it acknowledged and a restarted one resumes where the person stopped.

Bad requests get a 4xx with a JSON `{"error": ...}`: unknown path 404, wrong method 405, missing or oversized body
411 / 413, not JSON or not `application/json` 400 / 415, a row not in this review 404, an unknown label 400.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from llmlabel.review.base import review_items
from llmlabel.review.run import ReviewLog, Run, now_iso
from llmlabel.review.select import Pick

MAX_BODY = 64 * 1024


class ReviewState:
    """What the page shows and the one place answers are written (serialized by a lock)."""

    def __init__(self, run: Run, picks: list[Pick], reviewer: str):
        self.run = run
        self.reviewer = reviewer
        self.items = review_items(run, picks)
        self.by_row = {item["row"]: item for item in self.items}
        self.log = ReviewLog(run.reviews_path)
        self.lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        """The page's state: rows, labels, and the latest answer of every row in this review."""
        latest = self.log.latest()
        return {"run": self.run.name, "model": self.run.model, "reviewer": self.reviewer, "labels": self.run.labels,
                "items": self.items,
                "answers": {str(r): rec["label"] for r, rec in latest.items() if r in self.by_row}}

    def answer(self, row: Any, label: Any) -> tuple[int, dict[str, Any]]:
        """Validate and write one answer; returns (HTTP status, reply)."""
        if not isinstance(row, int) or isinstance(row, bool):
            return 400, {"error": "'row' must be an integer"}
        if row not in self.by_row:
            return 404, {"error": f"row {row} is not in this review"}
        if label is not None and (not isinstance(label, str) or label not in self.run.labels):
            return 400, {"error": f"unknown label {label!r}"}
        item = self.by_row[row]
        record = {"row": row, "id": item["id"], "label": label, "llm_label": item["llm_label"],
                  "selected_by": item["selected_by"], "sampling_prob": item["sampling_prob"],
                  "reviewer": self.reviewer, "time": now_iso(), "source": "serve"}
        with self.lock:
            self.log.append([record])
            answered = sum(1 for r in self.log.latest() if r in self.by_row)
        return 200, {"ok": True, "answered": answered, "total": len(self.items)}


def make_handler(state: ReviewState) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `state`."""
    page = resources.files("llmlabel.review").joinpath("page.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        server_version = "llmlabel-review"

        def log_message(self, *args: Any) -> None:  # quiet: the terminal shows the URL, not every request
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict[str, Any]) -> None:
            self._send(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif path == "/api/state":
                self._json(200, state.snapshot())
            else:
                self._json(404, {"error": f"no such page: {path}"})

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path != "/api/answer":
                self._json(404, {"error": f"no such endpoint: {path}"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._json(411, {"error": "a Content-Length is required"})
                return
            if int(length) > MAX_BODY:
                self._json(413, {"error": f"body over {MAX_BODY} bytes"})
                return
            raw = self.rfile.read(int(length))
            # Only JSON bodies: a cross-site HTML form cannot send this content type without the browser asking.
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                self._json(415, {"error": "send application/json"})
                return
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._json(400, {"error": "body is not valid JSON"})
                return
            if not isinstance(body, dict) or "row" not in body or "label" not in body:
                self._json(400, {"error": "expected {\"row\": <int>, \"label\": <label or null>}"})
                return
            try:
                status, reply = state.answer(body["row"], body["label"])
            except OSError as exc:  # disk full, permissions: the page says "not saved" and keeps the answer
                status, reply = 500, {"error": f"could not write {state.log.path.name}: {exc.strerror or exc}"}
            self._json(status, reply)

        def _not_allowed(self) -> None:
            self._json(405, {"error": f"method {self.command} not allowed"})

        do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815

    return Handler


def make_server(run: Run, picks: list[Pick], reviewer: str, port: int = 0,
                host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A review server bound to `host:port` (port 0: a free one); call `serve_forever()`."""
    server = ThreadingHTTPServer((host, port), make_handler(ReviewState(run, picks, reviewer)))
    server.daemon_threads = True
    return server


def serve(run: Run, picks: list[Pick], reviewer: str, port: int = 0,
          announce: Callable[[str], None] = print) -> None:
    """Serve the review page until interrupted."""
    server = make_server(run, picks, reviewer, port)
    announce(f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
