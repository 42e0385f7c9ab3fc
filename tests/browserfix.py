"""A real browser for the web chat's tests: headless Chromium (Debian's ``chromium`` and
``chromium-driver`` packages) driven with Selenium, and the folder its screenshots are kept in.

Without Chromium or its driver the browser tests skip and say what to install, unless
``MLXK_REQUIRE_BROWSER=1`` (CI, ``scripts/test``) says the browser must be there: then they fail.
Screenshots go to ``$MLXK_ARTIFACTS/web-ui`` (default ``tests/artifacts/web-ui``, git-ignored); the
test session names the folder in its summary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "apt-get install -y chromium chromium-driver"
DESKTOP = (1280, 860)
PHONE = (390, 844)  # CSS pixels of a common phone, shown at twice the density
WAIT_S = 60.0  # the longest wait for the page (a loaded machine, a model loading)

written: list[Path] = []  # screenshots of this session, for the summary


def browser_problem() -> str | None:
    """Why no browser can run here (None when one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return f"Chromium is not installed ({INSTALL_HINT})"
    if shutil.which("chromedriver") is None:
        return f"chromedriver is not installed ({INSTALL_HINT})"
    return None


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def start_browser() -> Any:
    """Headless Chromium at desktop size, reduced motion, its console kept for the tests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path() or ""
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI: Chromium's sandbox refuses to start as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver: Selenium then never tries to download one
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or ""))
    driver.set_script_timeout(WAIT_S)
    emulate(driver, dark=False)
    return driver


def emulate(driver: Any, *, dark: bool, phone: bool = False) -> None:
    """The system's colour scheme (with reduced motion), and a phone's screen or the desktop's."""
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {
            "features": [
                {"name": "prefers-color-scheme", "value": "dark" if dark else "light"},
                {"name": "prefers-reduced-motion", "value": "reduce"},
            ]
        },
    )
    if phone:
        width, height = PHONE
        metrics = {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True})
    else:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})


def artifacts_dir() -> Path:
    base = os.environ.get("MLXK_ARTIFACTS")
    folder = (Path(base) if base else ROOT / "tests" / "artifacts") / "web-ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    written.append(path)
    return path


def console_errors(driver: Any) -> list[str]:
    """The page's console errors since the last call (script errors, CSP violations, failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
