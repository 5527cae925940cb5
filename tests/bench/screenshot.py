#!/usr/bin/env python3
"""Regenerates docs/overview.png, the README's picture of the dashboard:

    python tests/bench/screenshot.py            # light; --dark for the dark scheme
    python tests/bench/screenshot.py --page /freshness --out /tmp/freshness.png

A real daemon on the demo catalog (simulated syncs, a quarter of them failing), a burst of
submissions, `syncd web` beside it, and headless Chromium photographing the overview once
some tasks have finished, two run and the rest wait."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers.chromium import start_chromium  # noqa: E402
from tests.helpers.daemon import DaemonProc, wait_for  # noqa: E402
from tests.helpers.web import start_web  # noqa: E402

SUBMITS = [("crm", "contacts"), ("billing", "invoices"), ("helpdesk", "tickets"),
           ("crm", "deals"), ("billing", "payments"), ("helpdesk", "agents"), ("crm", "all"),
           ("crm", "companies")]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "overview.png"))
    p.add_argument("--dark", action="store_true")
    p.add_argument("--settle", type=float, default=25.0, help="seconds of work before the shot")
    p.add_argument("--page", default="/", help="the page to photograph (/freshness, /tasks/1...)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sd-shot-"))
    config = (resources.files("syncd") / "data" / "demo.toml").read_text()
    env = {
        "STATE_DIRECTORY": str(work / "state"),
        "RUNTIME_DIRECTORY": str(work),
        "SYNCD_DEMO_SPEED": "0.5",
        "SYNCD_DEMO_FAIL_RATE": "0.25",
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    d = DaemonProc(work, config, env)
    web = None
    profile = tempfile.mkdtemp(prefix="sd-shot-chrome-")
    driver = None
    try:
        d.start()
        for round_ in range(3):
            for source, sync_type in SUBMITS:
                params = {"since": "2025-01-01"} if round_ == 1 else {}
                d.call("submit", source=source, sync_type=sync_type, params=params,
                       allow_duplicate=True)  # fmt: skip
        time.sleep(args.settle)  # let the pool work: finished, failed, running, queued
        web = start_web(d.config, "--socket", str(d.socket))
        driver = start_chromium(profile, 1400, 1000, dark=args.dark)
        driver.get(web.url.rstrip("/") + args.page)
        wait_for(lambda: driver.find_elements("id", "main"), 20, "the page")
        if driver.find_elements("id", "conn"):  # a live page: once its stream is open
            wait_for(lambda: driver.find_element("id", "conn").text == "live", 20, "live updates")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(int(height) + 20, 2400))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        if web is not None:
            web.stop()
        if d.proc is not None:
            d.stop(signal.SIGTERM)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
