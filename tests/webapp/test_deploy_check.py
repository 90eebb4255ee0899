import os
import re
import subprocess
import sys

from django.conf import settings

# Warnings that only go away behind HTTPS, which a test machine does not have.
HTTPS_ONLY = {"security.W004", "security.W005", "security.W008", "security.W012",
              "security.W016", "security.W021"}  # fmt: skip
# SESSION_COOKIE_SECURE / CSRF_COOKIE_SECURE off: true whenever the site is not served over
# HTTPS, and then the honest answer.
INSECURE_COOKIES = {"security.W012", "security.W016"}


def _check_deploy(**extra: str) -> tuple[set[str], str]:
    env = {
        # browser tests allow sync ORM calls in their event loop; a deployment never does. The
        # embedded mode the test session handed down is not a deployment's either.
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "STAGEWISE_EMBEDDED")
        },
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "x" * 20 + "production-like-secret-key-0123456789-abcdefghij",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "stagewise.example.com",
        **extra,
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
    )
    assert "ERRORS" not in out.stderr, out.stderr
    return set(re.findall(r"\(([a-z_]+\.[EW]\d+)\)", out.stderr)), out.stderr


def test_check_deploy_has_no_errors_with_production_env_and_warns_of_cookies_over_http():
    ids, stderr = _check_deploy()
    assert ids <= HTTPS_ONLY, stderr
    assert INSECURE_COOKIES <= ids, stderr


def test_check_deploy_over_https_has_secure_cookies():
    for declared in ({"STAGEWISE_HTTPS": "true"}, {"BEHIND_TLS_PROXY": "true"}):
        ids, stderr = _check_deploy(**declared)
        assert ids <= HTTPS_ONLY - INSECURE_COOKIES, (declared, stderr)
