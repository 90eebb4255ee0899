"""Browser tests: a real daphne ASGI server and a real Celery worker on the test database,
driven by the system Chromium through Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from tests.servers import Daphne
from tests.workers import ROOT, Workers

# Playwright's sync API keeps an event loop on this thread; the ORM calls the test makes
# between browser steps are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "pw-for-tests-1"


@pytest.fixture
def stack(transactional_db, tmp_path):
    """A team member, a fresh queue with one worker, and the web server."""
    from tests import factories as f

    team = f.TeamFactory()
    user = f.UserFactory(is_staff=True)
    user.save()  # the factory sets the password without saving it
    f.MembershipFactory(user=user, team=team, role="member")
    queue = f.QueueFactory(name=f"e2e-{uuid.uuid4().hex[:8]}")
    workers = Workers(tmp_path, lease_seconds=30)
    workers.start(queue.name, "e2e")
    server = Daphne(tmp_path)
    yield {"team": team, "user": user, "queue": queue, "server": server, "workers": workers}
    server.stop()
    workers.stop_all()


@pytest.fixture
def page(stack):
    from django.db import connections
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        # Inside sync_playwright() this thread runs in another contextvars context (the main
        # greenlet resumes inside a callback of Playwright's event loop), so Django's
        # ``connections`` (an asgiref Local, per context) gives the test body a second connection
        # of its own. Nothing else closes it, and it would hold the test database open at
        # session teardown ("being accessed by other users"): close it here, in that context.
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.js_errors = errors
            console: list[str] = []
            pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            yield pg
            # Kept for debugging a failure: the browser console and the last screen.
            (ARTIFACTS / "console.log").write_text("\n".join(errors + console))
            pg.screenshot(path=str(ARTIFACTS / "last.png"), full_page=True)
            context.close()
            browser.close()
        finally:
            connections.close_all()


def login(page, stack) -> None:
    page.goto(stack["server"].url + "/accounts/login/")
    page.fill("input[name=username]", stack["user"].username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(stack["server"].url + "/")
