"""The dashboard in headless Chromium: live updates over SSE without a reload, a hostile
param rendered as text (no script runs), the login and an action through the UI, a running
task's page following its log and its end."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.web import TOKEN, Stack

WAIT = 20  # generous: the suite must pass with CPU hogs running
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def wait(driver: Any) -> WebDriverWait:
    """A live update swaps a section while a condition reads it (the element it found goes
    stale): the condition is then simply tried again, as after a missing element."""
    return WebDriverWait(
        driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def click(driver: Any, xpath: str) -> None:
    """Click the element at `xpath` once it is clickable. A live update may swap its section
    between finding and clicking it (the element goes stale): find it again and retry."""

    def clicked(drv: Any) -> bool:
        try:
            found = ec.element_to_be_clickable((By.XPATH, xpath))(drv)
            if not found:
                return False
            found.click()
            return True
        except StaleElementReferenceException:
            return False

    wait(driver).until(clicked)


def section_text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


@pytest.fixture(scope="module")
def site(stack: Stack, browser: Any) -> tuple[Stack, Any]:
    return stack, browser


def test_overview_updates_live_without_a_reload(site) -> None:
    stack, driver = site
    d = stack.daemon
    driver.get(stack.web.url)
    wait(driver).until(lambda drv: section_text(drv, "conn") == "live")
    wait(driver).until(lambda drv: "AVAILABLE" in section_text(drv, "pool").upper())
    driver.execute_script("window.__same_page = true")  # gone if the page reloads
    d.call("pause")
    task = d.call("submit", source="beta", sync_type="b1", params={"sleep": "0"})["task"]
    wait(driver).until(lambda drv: "Paused." in section_text(drv, "pool"))
    wait(driver).until(lambda drv: f"{task['id']}" in section_text(drv, "queue"))
    wait(driver).until(lambda drv: "paused" in section_text(drv, "queue"))  # the reason, in words
    d.call("resume")
    wait(driver).until(lambda drv: "Paused." not in section_text(drv, "pool"))
    d.wait_status(task["id"], {"completed"})
    wait(driver).until(lambda drv: "completed" in section_text(drv, "finished"))
    assert driver.execute_script("return window.__same_page") is True
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # no CSP violation, no script error


def test_hostile_params_render_as_text(site) -> None:
    stack, driver = site
    d = stack.daemon
    d.call("pause")
    task = d.call("submit", source="alpha", sync_type="a2", params={"record": XSS})["task"]
    try:
        for path in ("/", f"/tasks/{task['id']}"):
            driver.get(stack.web.url.rstrip("/") + path)
            wait(driver).until(ec.presence_of_element_located((By.ID, "main")))
            with pytest.raises(NoAlertPresentException):
                driver.switch_to.alert.text  # noqa: B018
            assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []
        fields = (By.CSS_SELECTOR, "table.fields")
        wait(driver).until(lambda drv: XSS in drv.find_element(*fields).text)
    finally:
        d.call("cancel", ids=[task["id"]])
        d.call("resume")


def test_login_and_cancel_through_the_page(site) -> None:
    stack, driver = site
    d = stack.daemon
    d.call("pause")
    try:
        login_and_cancel(stack, driver)
    finally:
        d.call("resume")  # the next test needs a dispatching pool, pass or fail


def login_and_cancel(stack: Any, driver: Any) -> None:
    d = stack.daemon
    task = d.call("submit", source="alpha", sync_type="a1", allow_duplicate=True)["task"]
    driver.get(stack.web.url)
    driver.find_element(By.LINK_TEXT, "Log in").click()
    field = wait(driver).until(ec.presence_of_element_located((By.NAME, "token")))
    field.send_keys(TOKEN)
    field.submit()
    wait(driver).until(ec.presence_of_element_located((By.ID, "queue")))
    row = f"//section[@id='queue']//tr[td/a[text()='{task['id']}']]//button[text()='Cancel']"
    click(driver, row)
    wait(driver).until(lambda drv: d.task(task["id"])["status"] == "cancelled")
    wait(driver).until(lambda drv: "Log out" in drv.find_element(By.CSS_SELECTOR, "header").text)
    # An action on a live-updated section still works after the section was swapped in.
    other = d.call("submit", source="alpha", sync_type="a1", allow_duplicate=True)["task"]
    xpath = f"//section[@id='queue']//tr[td/a[text()='{other['id']}']]//button[text()='Cancel']"
    click(driver, xpath)
    wait(driver).until(lambda drv: d.task(other["id"])["status"] == "cancelled")


def test_task_page_follows_a_running_task(site) -> None:
    stack, driver = site
    d = stack.daemon
    task = d.call("submit", source="alpha", sync_type="a2", params={"sleep": "3"})["task"]
    d.wait_status(task["id"], {"running"})
    driver.get(f"{stack.web.url.rstrip('/')}/tasks/{task['id']}")
    wait(driver).until(lambda drv: section_text(drv, "conn") == "live")
    wait(driver).until(lambda drv: "completed" in section_text(drv, "task-fields"))
    wait(driver).until(lambda drv: "job a2 done" in drv.find_element(By.ID, "log").text)
