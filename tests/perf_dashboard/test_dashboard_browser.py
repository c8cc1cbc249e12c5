"""Open the generated dashboard in headless Chromium: no console errors, every chart has data.

Chromium logs every console message (and uncaught exceptions) to stderr as `CONSOLE` lines
when started with `--enable-logging=stderr`; the dashboard itself logs nothing, so any such
line is a failure. The page's inline self-check writes its verdict on `<body data-ok=...>`,
read back through `--dump-dom`. A screenshot is saved in the test's output folder.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_dashboard_report import CHART_IDS

from perf_dashboard import render_html

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)


def _install_chromium() -> str:
    """apt-get install Debian's chromium; the reason it failed otherwise."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return "chromium is missing and apt-get is unavailable or not root"
    cmd = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
    try:
        done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "apt-get install chromium timed out (offline?)"
    return "" if done.returncode == 0 else f"apt-get install chromium failed: {done.stderr[-300:]}"


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = _install_chromium()
        found = shutil.which("chromium")
        if found is None:
            pytest.skip(f"headless Chromium unavailable: {reason}")
    return found


def run_chromium(
    chromium: str, page: Path, work: Path, *action: str
) -> subprocess.CompletedProcess:
    profile = work / "chromium-profile"
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_dashboard_in_headless_chromium(chromium, filled_store, tmp_path):
    page = tmp_path / "dashboard.html"
    page.write_text(render_html(filled_store), encoding="utf-8")

    dom = run_chromium(chromium, page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom.stderr) == []
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-ok="yes"' in body, body
    assert f'data-charts="{len(CHART_IDS)}"' in body
    assert "data-js-error" not in re.search(r"<html[^>]*>", dom.stdout).group(0)

    shot = tmp_path / "dashboard.png"
    done = run_chromium(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1400,2400")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_lines(done.stderr) == []
    assert png_size(shot) == (1400, 2400)
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB


def test_console_error_detection_is_not_vacuous(chromium, tmp_path):
    """The same checks catch a page that logs an error and throws."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('boom'); missingFn();</script>"
        "</body></html>"
    )
    dom = run_chromium(chromium, page, tmp_path, "--dump-dom")
    found = console_lines(dom.stderr)
    assert any("boom" in line for line in found)
    assert any("Uncaught ReferenceError" in line for line in found)


def test_self_check_flags_an_empty_chart(chromium, filled_store, tmp_path):
    html = render_html(filled_store).replace('data-points="4"', 'data-points="0"', 1)
    page = tmp_path / "tampered.html"
    page.write_text(html, encoding="utf-8")
    dom = run_chromium(chromium, page, tmp_path, "--dump-dom")
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-ok="missing:compile-phases"' in body
