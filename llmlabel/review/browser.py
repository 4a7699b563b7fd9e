"""Drive the review page and the HTML report in a real browser: the system Chromium (Debian's `chromium`) through
playwright, no browser download. Used by the browser tests and by the benchmark that takes the README screenshots.
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
