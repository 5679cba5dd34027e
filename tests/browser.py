"""Playwright helpers: Debian's Chromium, console watching, screenshots, sign-in, waiting.

The browser is the system's ``/usr/bin/chromium`` (``.ci/run`` installs it); Playwright's
own browser downloads are never used.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}
PASSWORD = "a-long-test-password-42"


def launch(playwright: Playwright) -> Browser:
    """Headless Chromium from the system, never a downloaded one."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def create_user(instance: Path, env: dict[str, str], username: str, password: str) -> str:
    """Create a dashboard user the way an operator does: the CLI, password on stdin."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "HEALTH_"))}
    full_env.update(env)
    full_env["INSTANCE_PATH"] = str(instance)
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "create-user", username, "--admin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class ConsoleWatch:
    """Collects console errors and uncaught page errors; dialogs are recorded and dismissed."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def screenshot(page: Page, name: str) -> None:
    """Save the page at desktop and at phone width (full page), then go back to desktop."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)  # let the layout settle after the resize
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def sign_in(page: Page, base_url: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form and land on the dashboard."""
    page.goto(base_url + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/.*"))
