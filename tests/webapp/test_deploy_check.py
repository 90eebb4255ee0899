import os
import re
import subprocess
import sys

from django.conf import settings

# Warnings that only go away behind HTTPS, which a test machine does not have.
HTTPS_ONLY = {"security.W004", "security.W005", "security.W008", "security.W012",
              "security.W016", "security.W021"}  # fmt: skip


def test_check_deploy_has_no_errors_with_production_env():
    env = {
        # browser tests allow sync ORM calls in their event loop; a deployment never does
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "x" * 20 + "production-like-secret-key-0123456789-abcdefghij",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "stagewise.example.com",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    ids = set(re.findall(r"\(([a-z_]+\.[EW]\d+)\)", out.stderr))
    assert ids <= HTTPS_ONLY, out.stderr
    assert "ERRORS" not in out.stderr, out.stderr
