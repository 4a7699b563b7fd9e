"""Test infrastructure of the review loop (importable, not core): the system Chromium (Debian's `chromium`) driven
by playwright with no browser download, the review server as a child process, a keyboard-driven reviewer, and a
real Label Studio server in its own virtualenv with an API-driven annotator. Used by tests/review and by
benchmarks/review_roundtrip.py (which also takes the README screenshots).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import MissingDependencyError

CHROMIUM = os.environ.get("LLMLABEL_CHROMIUM", "/usr/bin/chromium")
#: flags that work for headless Chromium in containers and offline machines
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium(width: int = 1100, height: int = 800) -> Iterator[Any]:
    """A playwright page in a fresh headless system Chromium; closed on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise MissingDependencyError("playwright", "the browser tests", "pip install -e '.[dev]'") from None
    if not Path(CHROMIUM).exists():
        raise MissingDependencyError("chromium", "the browser tests", "apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


class ReviewServerProcess:
    """`llmlabel review serve RUN_DIR ...` as a child process in its own session; `url` once it listens."""

    def __init__(self, run_dir: str | Path, *args: str, timeout: float = 120):
        self.process = subprocess.Popen([sys.executable, "-m", "llmlabel.cli", "review", "serve", str(run_dir),
                                         *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        lines = []
        self.url = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    break
                continue
            lines.append(line)
            match = re.search(r"review page: (http://127\.0\.0\.1:\d+/)", line)
            if match:
                self.url = match.group(1)
                return
        self.kill()
        raise RuntimeError("review server did not start: " + "".join(lines[-20:]))

    def kill(self) -> None:
        """SIGKILL the server (as a crash would: no cleanup runs) and reap it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        if self.process.stdout:
            self.process.stdout.close()


def answer_rows(page: Any, count: int, label_for_row: Callable[[int], str]) -> list[tuple[int, str, str]]:
    """Answer `count` rows on the open review page with the keyboard, as a person would: Enter when the LLM's label
    is right, else the digit shown on the right label's button (or '/' + typing + Enter when it has no digit).
    Waits for each answer to be acknowledged (the progress counter moves). Returns (row, label, key) per answer."""
    done = []
    for _ in range(count):
        before = int(page.inner_text("#progress").split("/")[0])
        row = int(page.inner_text("#row"))
        label = label_for_row(row)
        llm = page.inner_text("#llm-label")
        if label == llm:
            key = "Enter"
            page.keyboard.press("Enter")
        else:
            digit = page.get_attribute(f'#labels button[data-label="{label}"]', "data-key")
            if digit:
                key = digit
                page.keyboard.press(digit)
            else:
                key = "/" + label
                page.keyboard.press("/")
                page.keyboard.type(label)
                page.keyboard.press("Enter")
        page.wait_for_function(f"parseInt(document.getElementById('progress').textContent) === {before + 1}",
                               timeout=15000)
        done.append((row, label, key))
    return done


LABEL_STUDIO = "label-studio==1.23.2"


def label_studio_venv() -> Path:
    """Where Label Studio's own virtualenv lives: $LLMLABEL_LABEL_STUDIO_VENV, else one in llmlabel's cache dir."""
    if os.environ.get("LLMLABEL_LABEL_STUDIO_VENV"):
        return Path(os.environ["LLMLABEL_LABEL_STUDIO_VENV"])
    from llmlabel.models import cache_dir

    return Path(cache_dir()) / "label-studio-1.23.2-venv"


#: a migrated, user-less SQLite data folder inside the venv: a server started on a copy of it skips the ~2 min of
#: Django migrations a fresh data folder costs (measured: 17 s to /health instead of 160 s)
TEMPLATE = "template-data"


def migrate_label_studio_template(venv: Path) -> Path:
    """Create `<venv>/template-data` (Label Studio's SQLite database with every migration applied, no user) once."""
    import shutil
    import tempfile

    template = venv / TEMPLATE
    if template.exists():
        return template
    python = venv / "bin" / "python"
    where = "import label_studio, os; print(os.path.dirname(label_studio.__file__))"
    package = subprocess.run([str(python), "-c", where], check=True, capture_output=True, text=True).stdout.strip()
    scratch = Path(tempfile.mkdtemp(dir=venv, prefix=".template-"))
    try:
        env = {**os.environ, "DJANGO_DB": "sqlite", "LABEL_STUDIO_BASE_DATA_DIR": str(scratch)}
        subprocess.run([str(python), "manage.py", "migrate", "--no-color", "-v", "0"], cwd=package, check=True,
                       timeout=1200, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        scratch.rename(template)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return template


def install_label_studio(venv: Path | None = None) -> Path:
    """The `label-studio` executable, installing it into its own virtualenv first when missing (~3-4 min, 1 GB) and
    migrating its template database (~2 min) when that is missing."""
    venv = venv or label_studio_venv()
    binary = venv / "bin" / "label-studio"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LABEL_STUDIO], check=True, timeout=1500)
    migrate_label_studio_template(venv)
    return binary


@contextlib.contextmanager
def label_studio_server(binary: Path, data_dir: Path, timeout: float = 400) -> Iterator[tuple[str, str]]:
    """A Label Studio server on SQLite in `data_dir` on a free 127.0.0.1 port; yields (base URL, API token) and stops
    its whole process group on exit.

    Legacy API tokens are off by default in 1.23; `--enable-legacy-api-token` turns them on for this server's
    default user, whose token we choose, so no browser login is needed to mint a personal access token.
    """
    import secrets
    import shutil

    import httpx

    from llmlabel.testing.vllm_server import free_port

    template = binary.parent.parent / TEMPLATE
    if template.is_dir() and not (data_dir / "label_studio.sqlite3").exists():
        shutil.copytree(template, data_dir, dirs_exist_ok=True)
    port, token = free_port(), secrets.token_hex(20)
    log_path = data_dir / "server.log"
    log = open(log_path, "w")
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "DJANGO_DB": "sqlite"}
    process = subprocess.Popen(
        [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir), "--username", "reviewer@example.com", "--password", secrets.token_hex(8),
         "--user-token", token, "--enable-legacy-api-token"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"label-studio exited with {process.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"label-studio did not answer /health in {timeout:.0f} s: "
                                   f"{log_path.read_text()[-2000:]}")
            time.sleep(2)
        yield base, token
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def label_in_label_studio(base: str, token: str, export_dir: Path, label_for_row: Callable[[int], str],
                          title: str) -> bytes:
    """Play a Label Studio user: create a project from the exported config, import the exported tasks, submit one
    annotation per task (`label_for_row(row)`) through the API, and return the project's JSON export."""
    import json

    import httpx

    client = httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=120)
    project = client.post("/api/projects", json={
        "title": title, "label_config": (export_dir / "label_studio_config.xml").read_text(encoding="utf-8")})
    if project.status_code != 201:
        raise RuntimeError(f"create project: {project.status_code} {project.text[:500]}")
    pid = project.json()["id"]
    tasks = json.loads((export_dir / "label_studio_tasks.json").read_text(encoding="utf-8"))
    imported = client.post(f"/api/projects/{pid}/import", json=tasks)
    if imported.status_code != 201 or imported.json()["task_count"] != len(tasks):
        raise RuntimeError(f"import tasks: {imported.status_code} {imported.text[:500]}")
    stored = client.get("/api/tasks", params={"project": pid, "page_size": 10_000}).json()["tasks"]
    for task in stored:
        answer = label_for_row(task["data"]["llmlabel_row"])
        posted = client.post(f"/api/tasks/{task['id']}/annotations", json={
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [answer]}}],
            "was_cancelled": False})
        if posted.status_code != 201:
            raise RuntimeError(f"annotate task {task['id']}: {posted.status_code} {posted.text[:500]}")
    exported = client.get(f"/api/projects/{pid}/export", params={"exportType": "JSON"})
    if exported.status_code != 200:
        raise RuntimeError(f"export: {exported.status_code} {exported.text[:500]}")
    return exported.content
