"""/settings/tokens/: make a token (its key shown once, in the answer to the POST), list and
revoke one's own, a team admin's view of the team's tokens, CSRF, and the nav link."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from runs.models import ApiToken
from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/settings/tokens/"


def _browser(user, **kw) -> Client:
    c = Client(**kw)
    c.force_login(user)
    return c


def _key_in(html: str) -> str | None:
    m = re.search(r'id="new-token-key"[^>]*>([^<]+)<', html)
    return m.group(1) if m else None


def test_the_nav_links_the_page_and_anonymous_users_are_sent_to_login(user):
    assert f'href="{URL}"' in _browser(user).get("/").content.decode()
    r = Client().get(URL)
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")
    r = Client().post(URL, {"name": "x"})
    assert r.status_code == 302 and not ApiToken.objects.exists()


def test_make_a_token_see_its_key_once_and_use_it(user, team):
    c = _browser(user)
    page = c.get(URL)
    assert page.status_code == 200
    assert "No tokens yet" in page.content.decode()

    r = c.post(URL, {"name": "cluster job", "team": team.slug, "expires_in_days": "30"})
    assert r.status_code == 201
    assert "no-store" in r["Cache-Control"]
    html = r.content.decode()
    key = _key_in(html)
    assert key and key.startswith("sw_")
    assert "will not be shown again" in html
    token = ApiToken.objects.get()
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert (token.name, token.team, token.user) == ("cluster job", team, user)
    assert token.expires_at is not None

    # Shown once: the list afterwards has the prefix, never the key.
    listed = c.get(URL).content.decode()
    assert key not in listed and _key_in(listed) is None
    assert f"{token.prefix}…" in listed and "cluster job" in listed

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/runs/").status_code == 200


def test_bad_input_is_a_form_error_and_makes_nothing(user, team):
    c = _browser(user)
    for data, field in [
        ({"name": "", "team": team.slug}, "name"),
        ({"name": "x", "team": team.slug, "expires_in_days": "0"}, "expires_in_days"),
        ({"name": "x", "team": f.TeamFactory().slug}, "team"),  # not a member
    ]:
        r = c.post(URL, data)
        assert r.status_code == 400, data
        html = r.content.decode()
        assert f'data-field="{field}"' in html, (data, html)
        assert _key_in(html) is None
    assert not ApiToken.objects.exists()


def test_revoke_own_token_and_not_someone_elses(user, team):
    key = f.api_token_for(user, team, name="mine")
    other = f.UserFactory()
    f.MembershipFactory(user=other, team=team, role="member")
    other_key = f.api_token_for(other, team, name="theirs")
    mine, theirs = ApiToken.objects.get(name="mine"), ApiToken.objects.get(name="theirs")
    c = _browser(user)

    page = c.get(URL).content.decode()
    assert "mine" in page and "theirs" not in page  # a member sees only their own tokens

    assert c.get(f"/settings/tokens/{mine.pk}/revoke/").status_code == 405  # POST only
    assert c.post(f"/settings/tokens/{theirs.pk}/revoke/").status_code == 404
    r = c.post(f"/settings/tokens/{mine.pk}/revoke/", follow=True)
    assert r.redirect_chain[-1] == (URL, 302)
    assert "revoked" in r.content.decode()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None and theirs.revoked_at is None
    assert "mine" not in c.get(URL).content.decode().split('id="my-tokens"')[1]

    def status(k):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {k}")
        return api.get("/api/runs/").status_code

    assert (status(key), status(other_key)) == (401, 200)


def test_a_team_admin_sees_and_revokes_the_teams_tokens(user, team):
    admin = f.UserFactory()
    f.MembershipFactory(user=admin, team=team, role="admin")
    f.api_token_for(user, team, name="member token")
    elsewhere = f.TeamFactory()
    f.MembershipFactory(user=user, team=elsewhere, role="member")
    f.api_token_for(user, elsewhere, name="other team token")
    token = ApiToken.objects.get(name="member token")

    c = _browser(admin)
    html = c.get(URL).content.decode()
    section = html.split(f'data-team="{team.slug}"')[1]
    assert "member token" in section and user.username in section
    assert "other team token" not in html
    assert c.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == admin
    other = ApiToken.objects.get(name="other team token")
    assert c.post(f"/settings/tokens/{other.pk}/revoke/").status_code == 404


def test_page_posts_need_the_csrf_token(user, team):
    c = _browser(user, enforce_csrf_checks=True)
    assert c.post(URL, {"name": "x", "team": team.slug}).status_code == 403
    assert not ApiToken.objects.exists()
    page = c.get(URL).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    r = c.post(URL, {"name": "x", "team": team.slug, "csrfmiddlewaretoken": csrf})
    assert r.status_code == 201 and ApiToken.objects.count() == 1
