"""The dashboard in a real browser: log in, see the panels, refresh them in place.

Drives Debian's headless Chromium through Selenium against pytest-django's
``live_server``. Selenium Manager is never used: the browser and the driver are
given by path, so nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 15

pytestmark = pytest.mark.browser


def _missing_browser_tools() -> list[str]:
    return [
        path
        for path in (CHROMIUM, CHROMEDRIVER)
        if not (Path(path).is_file() and shutil.which(path))
    ]


@pytest.fixture
def browser(tmp_path):
    missing = _missing_browser_tools()
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the browser tests need Debian's "
            "Chromium and ChromeDriver; run `apt-get install chromium chromium-driver`",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1024",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(WAIT_SECONDS)
        yield driver
    finally:
        driver.quit()


def _text(element) -> str:
    return element.get_attribute("textContent").strip()


def _log_in(browser, live_server, username: str, password: str) -> None:
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()


def test_it_logs_in_and_refreshes_the_dashboard_in_place(
    browser, live_server, transactional_db, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser(
        username="alice", email="alice@example.com", password="pw-alice-browser"
    )
    wait = WebDriverWait(browser, WAIT_SECONDS)

    _log_in(browser, live_server, "alice", "pw-alice-browser")

    wait.until(EC.url_to_be(f"{live_server.url}/admin/"))
    wait.until(EC.presence_of_element_located((By.ID, "portal-dashboard")))
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert "Ops Portal" in browser.title
    assert "Ops Portal" in browser.find_element(By.ID, "site-name").text
    health = browser.find_element(By.CSS_SELECTOR, "article#panel-health")
    tasks = browser.find_element(By.CSS_SELECTOR, "article#panel-tasks")
    # textContent, not .text: the stylesheet upper-cases panel titles.
    assert _text(health.find_element(By.TAG_NAME, "h2")) == "System health"
    assert _text(tasks.find_element(By.TAG_NAME, "h2")) == "Background tasks"
    assert tasks.find_elements(By.CSS_SELECTOR, "svg.portal-chart")

    section = browser.find_element(By.ID, "portal-dashboard")
    assert section.get_attribute("data-refresh-url") == "/admin/dashboard/panels/"
    assert section.get_attribute("data-refreshed") is None
    # dashboard.js is deferred: wait until it has defined the refresh hook.
    wait.until(
        lambda d: d.execute_script(
            "return typeof window.portalDashboardRefresh === 'function'"
        )
    )
    # The marker on window survives only if the page is not reloaded; the one on
    # the old panel disappears only if the panels are really replaced.
    browser.execute_script(
        "window.__noReload = 1;"
        "document.getElementById('panel-health').dataset.stale = '1';"
        "window.portalDashboardRefresh();"
    )

    wait.until(
        lambda d: d.find_element(By.ID, "portal-dashboard").get_attribute(
            "data-refreshed"
        )
    )
    browser.save_screenshot(str(tmp_path / "dashboard-refreshed.png"))
    assert browser.execute_script("return window.__noReload") == 1
    health = browser.find_element(By.CSS_SELECTOR, "#portal-dashboard #panel-health")
    tasks = browser.find_element(By.CSS_SELECTOR, "#portal-dashboard #panel-tasks")
    assert health.get_attribute("data-stale") is None
    assert tasks.find_elements(By.CSS_SELECTOR, "svg.portal-chart")
    assert browser.find_element(By.ID, "portal-refreshed").text.startswith("updated")
    # Nothing broke in the page's scripts; the admin has no favicon, which is fine.
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert errors == []


def test_an_expired_session_keeps_the_panels(
    browser, live_server, transactional_db, django_user_model
):
    django_user_model.objects.create_superuser(
        username="bob", email="bob@example.com", password="pw-bob-browser"
    )
    wait = WebDriverWait(browser, WAIT_SECONDS)
    _log_in(browser, live_server, "bob", "pw-bob-browser")
    wait.until(EC.presence_of_element_located((By.ID, "portal-dashboard")))
    wait.until(
        lambda d: d.execute_script(
            "return typeof window.portalDashboardRefresh === 'function'"
        )
    )

    browser.delete_cookie("sessionid")
    browser.execute_script("window.portalDashboardRefresh();")

    note = wait.until(
        lambda d: (
            "session expired" in (t := d.find_element(By.ID, "portal-refreshed").text)
            and t
        )
    )
    assert "reload the page" in note
    # the login page was not pasted into the dashboard
    assert not browser.find_elements(By.CSS_SELECTOR, "#portal-dashboard #login-form")
    assert browser.find_elements(By.CSS_SELECTOR, "#portal-dashboard #panel-health")


def test_a_pipeline_run_page_shows_new_output_live(
    browser, live_server, transactional_db, django_user_model
):
    """live.js + pipeline.js: the page fetches only the new chunks and appends them."""
    from django.utils import timezone

    from packages_app.models import (
        PipelineCommand,
        PipelineOutput,
        PipelineRun,
        PipelineStep,
    )

    django_user_model.objects.create_superuser(
        username="alice", email="alice@example.com", password="pw-alice-browser"
    )
    run = PipelineRun.objects.create(
        name="quants-live",
        url="git://127.0.0.1/quants/live.git",
        trigger="api",
        status="IN_PROGRESS",
        started_at=timezone.now(),
    )
    step = PipelineStep.objects.create(
        run=run, step_no=1, name="work", image="busybox:latest", status="IN_PROGRESS"
    )
    command = PipelineCommand.objects.create(step=step, cmd_no=1, instruction="work")
    PipelineOutput.objects.create(command=command, seq=0, text="first line\n")
    wait = WebDriverWait(browser, WAIT_SECONDS)
    _log_in(browser, live_server, "alice", "pw-alice-browser")
    wait.until(EC.url_to_be(f"{live_server.url}/admin/"))
    browser.get(f"{live_server.url}/admin/packages_app/pipelinerun/{run.pk}/change/")
    output = f'[data-cmd-id="{command.uuid}"] .pipe-cmd-output'
    wait.until(lambda d: "first line" in _text(d.find_element(By.CSS_SELECTOR, output)))
    PipelineOutput.objects.create(command=command, seq=1, text="second line\n")
    wait.until(
        lambda d: "second line" in _text(d.find_element(By.CSS_SELECTOR, output))
    )
    assert _text(browser.find_element(By.CSS_SELECTOR, output)).count("first line") == 1
    assert browser.find_element(By.ID, "pipe-live-note").text.startswith("Refreshes")
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert errors == []


def test_a_package_run_page_follows_the_log_live(
    browser, live_server, transactional_db, django_user_model, tmp_path
):
    """live.js + run.js: the tail of the log is refreshed in place."""
    from django.utils import timezone

    from packages_app.models import Package, PackageRun

    django_user_model.objects.create_superuser(
        username="alice", email="alice@example.com", password="pw-alice-browser"
    )
    package = Package.objects.create(
        slug="live", directory=str(tmp_path), command=["true"], timeout=600
    )
    run = PackageRun.objects.create(
        package=package,
        trigger="cli",
        timeout=600,
        status="running",
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        log_tail="step 1\n",
    )
    wait = WebDriverWait(browser, WAIT_SECONDS)
    _log_in(browser, live_server, "alice", "pw-alice-browser")
    wait.until(EC.url_to_be(f"{live_server.url}/admin/"))
    browser.get(f"{live_server.url}/admin/packages_app/packagerun/{run.pk}/change/")
    wait.until(lambda d: "step 1" in _text(d.find_element(By.ID, "pkg-log")))
    PackageRun.objects.filter(pk=run.pk).update(log_tail="step 1\nstep 2\n")
    wait.until(lambda d: "step 2" in _text(d.find_element(By.ID, "pkg-log")))
    assert browser.find_element(By.ID, "pkg-live-note").text.startswith("Refreshes")
