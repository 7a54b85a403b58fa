"""The notebooks as a researcher meets them: JupyterLab in headless Chromium, no internet.

JupyterLab serves copies of notebooks 01-05 on 127.0.0.1; every request to another host is
blocked, as on a cluster node or a laptop on a train. Each notebook runs with Run All; then
no cell shows an error, the date-range picker is a live widget whose move changes the counts,
and every interactive map draws a canvas (Bokeh's JavaScript came inline, not from a CDN).
Screenshots land in outputs/browser/. Debian's chromium is installed when missing (as root).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

import pytest

from conftest import ROOT

NOTEBOOKS = ["01_explore", "02_validate", "03_featurize", "04_attack_sim", "05_train"]
INTERACTIVE_MAPS = {"01_explore": 1, "04_attack_sim": 1}
SHOTS = ROOT / "outputs" / "browser"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_LIMIT_S = 150  # one notebook's Run All


def _chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    if os.geteuid() != 0:
        pytest.fail("the browser test needs Debian's chromium: sudo apt-get install chromium")
    subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, capture_output=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but it is not on PATH")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 over copies of the notebooks (autosave off: the repo stays as is)."""
    base = tmp_path_factory.mktemp("lab")
    nbdir = base / "notebooks"
    nbdir.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", nbdir)
    settings = base / "settings"
    for plugin, values in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                           "@jupyterlab/apputils-extension/notification": {
                               "fetchNews": "false", "checkForUpdates": False}}.items():
        f = settings / f"{plugin}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces")}
    log = open(base / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nbdir}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(base / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _offline_page(browser, blocked: list[str]):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})

    def route(r):
        host = urlparse(r.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost") or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    return ctx, ctx.new_page()


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show, not a hidden tab
ERROR = "[data-mime-type='application/vnd.jupyter.error']"


def _run_all(page, url: str, token: str, name: str):
    page.goto(f"{url}/lab/tree/{name}.ipynb?reset&token={token}")
    panel = page.locator(PANEL)
    cells = len(json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"])
    deadline = time.monotonic() + 90
    while panel.locator(".jp-Cell").count() < cells or "Idle" not in page.locator(
            ".jp-StatusBar-Widget").all_inner_texts().__str__():
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: the notebook or its kernel did not come up in JupyterLab")
        time.sleep(0.5)
    page.click("li.lm-MenuBar-item:has-text('Run')")
    page.get_by_text("Run All Cells", exact=True).click()
    deadline = time.monotonic() + RUN_LIMIT_S
    while time.monotonic() < deadline:
        prompts = panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        if prompts and all(p.strip() not in ("[ ]:", "[*]:", "") for p in prompts):
            return panel
        if panel.locator(ERROR).count() and not any(p.strip() == "[*]:" for p in prompts):
            return panel  # Run All stopped at an error: the caller shows it
        time.sleep(1)
    pytest.fail(f"{name}: Run All did not finish within {RUN_LIMIT_S} s")


def _counts_text(panel) -> str:
    return panel.locator(".widget-vbox .widget-output").first.inner_text()


@pytest.mark.slow
def test_notebooks_run_all_offline_in_jupyterlab(lab, browser):
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    originals = {n: (ROOT / "notebooks" / f"{n}.ipynb").read_bytes() for n in NOTEBOOKS}
    blocked: list[str] = []
    ctx, page = _offline_page(browser, blocked)
    try:
        for name in NOTEBOOKS:
            panel = _run_all(page, url, token, name)
            errors = panel.locator(ERROR).all_inner_texts()
            assert not errors, f"{name}: a cell shows an error:\n{errors[0][-3000:]}"
            want = INTERACTIVE_MAPS.get(name, 0)
            if want:
                canvases = panel.locator(".jp-OutputArea-output canvas")
                canvases.first.wait_for(timeout=30_000)
                assert canvases.count() >= want, f"{name}: {canvases.count()} of {want} maps drew a canvas"
                box = canvases.first.bounding_box()
                assert box and box["width"] > 200 and box["height"] > 100, f"{name}: map canvas {box}"
                canvases.first.scroll_into_view_if_needed()
                page.screenshot(path=str(SHOTS / f"{name}_map.png"))
            if name == "01_explore":
                _move_picker(page, panel)
            page.screenshot(path=str(SHOTS / f"{name}.png"))
    finally:
        ctx.close()
    cdn = [u for u in blocked if any(k in u for k in ("bokeh", "panel", "holoviz", "pyviz"))]
    assert not cdn, f"the notebooks asked a CDN for Bokeh/Panel resources: {cdn[:3]}"
    for name, data in originals.items():  # the lab served copies: the repository's stay as they were
        assert (ROOT / "notebooks" / f"{name}.ipynb").read_bytes() == data


def _move_picker(page, panel) -> None:
    """The picker is a live widget: moving its upper handle reloads the counts in place."""
    handle = panel.locator(".widget-slider .noUi-handle").last
    handle.wait_for(timeout=30_000)
    handle.scroll_into_view_if_needed()
    readout = panel.locator(".widget-hbox .widget-html").first
    before_counts, before_readout = _counts_text(panel), readout.inner_text()
    page.screenshot(path=str(SHOTS / "01_picker_before.png"))
    handle.focus()
    page.keyboard.press("ArrowRight")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _counts_text(panel) != before_counts:
            break
        time.sleep(0.5)
    assert _counts_text(panel) != before_counts, "moving the picker did not change the counts"
    after_readout = readout.inner_text()
    assert after_readout != before_readout and " → " in after_readout, (before_readout, after_readout)
    page.screenshot(path=str(SHOTS / "01_picker_after.png"))
