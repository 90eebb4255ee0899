"""Settings mean the same in every process: a child started by an embedded-mode process (as
``up`` starts its web server and workers) inherits the URLs of the embedded servers, and still
reads embedded mode and the same cookie settings."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

SHOW = (
    "from django.conf import settings as s; "
    "print('mode', s.STAGEWISE_EMBEDDED, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
)
# The parent prints its settings, then starts a child with its environment, as `up` does.
PARENT = f"""
import os, subprocess, sys
{SHOW}
child = subprocess.run([sys.executable, "manage.py", "shell", "-c", {SHOW!r}],
                       env=dict(os.environ), capture_output=True, text=True)
print("child", (child.stdout.strip().splitlines() or [""])[-1], child.stderr.strip()[-2000:])
"""


def _shell(code: str, **extra: str) -> str:
    unset = ("DATABASE_URL", "REDIS_URL", "STAGEWISE_EMBEDDED", "DEBUG", "STAGEWISE_HTTPS",
             "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(STAGEWISE_DATA_DIR=str(settings.STAGEWISE_DATA_DIR), **extra)
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_child_of_an_embedded_process_reads_the_same_mode_and_cookie_settings():
    lines = [ln.strip() for ln in _shell(PARENT).splitlines()]
    assert "mode True False False" in lines, lines
    assert "child mode True False False" in lines, lines


def test_declared_https_makes_cookies_secure_in_parent_and_child():
    lines = [ln.strip() for ln in _shell(PARENT, STAGEWISE_HTTPS="true").splitlines()]
    assert "mode True True True" in lines, lines
    assert "child mode True True True" in lines, lines
