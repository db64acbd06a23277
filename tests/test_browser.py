"""Two people chat live in two browser contexts (Playwright driving Debian's chromium)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import PASSWORD, ApiClient, LiveServer

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run scripts/ensure-chromium.sh (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


def log_in(browser: Browser, base_url: str, username: str) -> Page:
    page = browser.new_context(base_url=base_url).new_page()
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Chats")).to_be_visible()
    return page


def test_two_users_chat_live_and_html_shows_as_text(browser: Browser, chat_server: LiveServer, api: ApiClient) -> None:
    alice, bob = api.signup("alice"), api.signup("bob")
    alice_page = log_in(browser, chat_server.base_url, alice.username)  # type: ignore[attr-defined]
    bob_page = log_in(browser, chat_server.base_url, bob.username)  # type: ignore[attr-defined]

    # Alice starts a direct chat from the chat list.
    alice_page.get_by_label("Username").fill(bob.username)  # type: ignore[attr-defined]
    alice_page.get_by_role("button", name="Open chat").click()
    alice_page.wait_for_url("**/chats/*/")
    chat_url = alice_page.url
    expect(alice_page.locator("#connection-status")).to_have_text("● live")

    # Bob's chat list shows the new chat once a message arrives, with an unread count.
    hostile = "<img src=x onerror=\"document.title='pwned'\"><b>bold?</b>"
    alice_page.locator("#body").fill(hostile)
    alice_page.get_by_role("button", name="Send").click()
    mine = alice_page.locator("#messages li.mine").last
    expect(mine.locator(".bubble")).to_have_text(hostile)
    expect(mine).not_to_have_class("pending")  # acked and echoed back

    bob_page.reload()
    row = bob_page.locator("#chat-list li").first
    expect(row.locator(".badge")).to_have_text("1")
    expect(row.locator(".preview")).to_contain_text(hostile)
    row.locator("a").click()
    bob_page.wait_for_url(chat_url)
    expect(bob_page.locator("#messages li .bubble").first).to_have_text(hostile)
    assert bob_page.locator("#messages img").count() == 0
    assert bob_page.locator("#messages b").count() == 0
    assert bob_page.title() != "pwned"

    # Live both ways, with typing shown and a read receipt coming back.
    expect(bob_page.locator("#connection-status")).to_have_text("● live")
    bob_page.locator("#body").press_sequentially("on my way")
    expect(alice_page.locator("#typing")).to_contain_text(f"{bob.username} is typing")  # type: ignore[attr-defined]
    bob_page.locator("#body").press("Enter")
    expect(alice_page.locator("#messages li:not(.mine) .bubble").last).to_have_text("on my way")
    expect(alice_page.locator("#typing")).to_have_text("")  # the message ends the typing notice
    expect(bob_page.locator("#messages li.mine .bubble").last).to_have_text("on my way")
    expect(bob_page.locator("#read-state")).to_have_text(f"Seen by {alice.username}")  # type: ignore[attr-defined]

    # History survives a reload, oldest at the top.
    alice_page.reload()
    expect(alice_page.locator("#messages li .bubble")).to_have_text([hostile, "on my way"])
