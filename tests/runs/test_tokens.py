"""Personal API tokens: made, listed and revoked by a signed-in session (never by a token), the
key shown once and only its hash stored, Bearer and Token headers, 401 with WWW-Authenticate
for anonymous/revoked/expired, one team per token with the user's role there, team admins
managing their team's tokens, last_used_at, and throttling (429 with Retry-After)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from runs.models import ApiToken, MetricPoint, Run
from runs.services.runs import run_submit
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

pytestmark = pytest.mark.django_db

WWW_AUTHENTICATE = 'Bearer realm="api"'


def _session(user, **kw) -> APIClient:
    client = APIClient(**kw)
    client.force_login(user)
    return client


def _bearer(key: str, scheme: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    return client


def _member(team, role: str = "member", user=None):
    user = user or f.UserFactory()
    f.MembershipFactory(user=user, team=team, role=role)
    return user


@pytest.fixture
def two_teams(queue):
    """A user who is a member of teams A and B, and a run in each."""
    a, b = f.TeamFactory(slug="alpha"), f.TeamFactory(slug="beta")
    user = _member(a)
    _member(b, user=user)
    run_a = run_submit(team=a, queue=queue, plan=reduced_lm_plan(), external=True)
    run_b = run_submit(team=b, queue=queue, plan=reduced_lm_plan(), external=True)
    return user, a, b, run_a, run_b


# ------------------------------------------------------------------ create, list, key once


def test_post_answers_the_key_once_and_the_database_holds_only_its_hash(user, team):
    api = _session(user)
    r = api.post("/api/tokens/", {"name": "laptop", "team": team.slug}, format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    key = body["key"]
    assert key.startswith("sw_") and len(key) >= 40
    assert body["team"] == team.slug and body["user"] == user.username
    assert body["prefix"] == key[: len(body["prefix"])] and len(body["prefix"]) < 16
    assert body["expires_at"] is None and body["last_used_at"] is None

    token = ApiToken.objects.get(pk=body["id"])
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    # Nowhere in the row (every column, as text) is the key.
    with connection.cursor() as cur:
        cur.execute("SELECT row_to_json(t)::text FROM runs_apitoken t WHERE id = %s", [token.pk])
        (row,) = cur.fetchone()
    assert key not in row and key[len(body["prefix"]) :] not in row

    listed = api.get("/api/tokens/").json()
    assert listed["count"] == 1
    (item,) = listed["results"]
    assert item["id"] == token.pk and "key" not in item and key not in str(listed)
    detail = api.get(f"/api/tokens/{token.pk}/").json()
    assert "key" not in detail and detail["name"] == "laptop"

    # The key works, once made.
    assert _bearer(key).get("/api/runs/").status_code == 200


def test_a_member_of_one_team_need_not_name_it_but_of_several_must(two_teams, user, team):
    r = _session(user).post("/api/tokens/", {"name": "ci"}, format="json")
    assert r.status_code == 201 and r.json()["team"] == team.slug

    two_team_user = two_teams[0]
    r = _session(two_team_user).post("/api/tokens/", {"name": "ci"}, format="json")
    assert r.status_code == 400
    assert "several teams" in str(r.json()) and "team" in str(r.json())
    r = _session(two_team_user).post(
        "/api/tokens/", {"name": "ci", "team": team.slug}, format="json"
    )
    assert r.status_code == 400 and "not a member" in str(r.json())
    assert not ApiToken.objects.filter(user=two_team_user).exists()


def test_expiry_by_date_or_days_and_bad_values_are_400(user, team):
    api = _session(user)
    r = api.post("/api/tokens/", {"name": "week", "expires_in_days": 7}, format="json")
    assert r.status_code == 201
    expires = ApiToken.objects.get(pk=r.json()["id"]).expires_at
    assert abs(expires - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)

    at = (timezone.now() + timedelta(hours=5)).replace(microsecond=0)
    r = api.post("/api/tokens/", {"name": "day", "expires_at": at.isoformat()}, format="json")
    assert r.status_code == 201 and ApiToken.objects.get(pk=r.json()["id"]).expires_at == at

    past = (timezone.now() - timedelta(hours=1)).isoformat()
    for bad, field in [
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": 100_000}, "expires_in_days"),
        ({"expires_at": past}, "expires_at"),
        ({"expires_at": at.isoformat(), "expires_in_days": 3}, "expires_at"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
    ]:
        r = api.post("/api/tokens/", {"name": "bad", **bad}, format="json")
        assert r.status_code == 400, bad
        assert field in str(r.json()), (bad, r.json())
    assert ApiToken.objects.count() == 2


def test_session_posts_need_the_csrf_token_and_token_requests_do_not(user, team, queue):
    browser = _session(user, enforce_csrf_checks=True)
    r = browser.post("/api/tokens/", {"name": "no csrf"}, format="json")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    assert not ApiToken.objects.exists()

    key = f.api_token_for(user, team)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    r = client.post("/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name}, format="json")
    assert r.status_code == 201, r.json()


# ------------------------------------------------------------------ headers and 401s


def test_bearer_and_token_headers_use_the_same_tokens(user, team):
    key = f.api_token_for(user, team)
    for scheme in ("Bearer", "Token", "bearer"):
        r = _bearer(key, scheme).get("/api/runs/")
        assert r.status_code == 200, scheme
    # Another scheme is not ours: no credentials, so a 401.
    r = _bearer(key, "Basic").get("/api/runs/")
    assert r.status_code == 401


def test_anonymous_and_bad_tokens_get_401_with_www_authenticate(user, team):
    for client, detail in [
        (APIClient(), "credentials were not provided"),
        (_bearer("sw_not-a-real-key"), "invalid token"),
        (_bearer(f.api_token_for(user, team) + "x"), "invalid token"),
        (_bearer("two parts"), "invalid Authorization header"),
    ]:
        r = client.get("/api/runs/")
        assert r.status_code == 401, detail
        assert r["WWW-Authenticate"] == WWW_AUTHENTICATE
        assert detail in r.json()["detail"]
    r = APIClient().post("/api/tokens/", {"name": "x"}, format="json")
    assert r.status_code == 401 and r["WWW-Authenticate"] == WWW_AUTHENTICATE


def test_revoked_and_expired_tokens_get_401(user, team):
    revoked = f.api_token_for(user, team)
    expired = f.api_token_for(user, team, expires_in_days=1)
    (revoked_row,) = [t for t in ApiToken.objects.all() if t.key_hash == _hash(revoked)]
    r = _session(user).delete(f"/api/tokens/{revoked_row.pk}/")
    assert r.status_code == 204
    ApiToken.objects.filter(key_hash=_hash(expired)).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    for key, detail in [(revoked, "token revoked"), (expired, "token expired")]:
        r = _bearer(key).get("/api/runs/")
        assert (r.status_code, r.json()["detail"]) == (401, detail)
        assert r["WWW-Authenticate"] == WWW_AUTHENTICATE
    # A revoked token is gone from the list; an expired one is listed as expired.
    items = _session(user).get("/api/tokens/").json()["results"]
    assert [(i["id"] == revoked_row.pk, i["expired"]) for i in items] == [(False, True)]
    assert _session(user).get(f"/api/tokens/{revoked_row.pk}/").status_code == 404


def test_an_inactive_users_tokens_get_401(user, team):
    key = f.api_token_for(user, team)
    user.is_active = False
    user.save()
    r = _bearer(key).get("/api/runs/")
    assert (r.status_code, r.json()["detail"]) == (401, "user inactive")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ------------------------------------------------------------------ one team per token


def test_a_token_sees_and_writes_only_its_team(two_teams, queue):
    user, a, b, run_a, run_b = two_teams
    token_a = _bearer(f.api_token_for(user, a))

    ids = {r["id"] for r in token_a.get("/api/runs/").json()["results"]}
    assert ids == {run_a.pk}
    assert token_a.get(f"/api/runs/{run_a.pk}/").status_code == 200
    r = token_a.get(f"/api/runs/{run_b.pk}/")
    assert r.status_code == 404
    for url in (f"/api/runs/{run_b.pk}/series/?keys=k", f"/api/runs/{run_b.pk}/export/",
                f"/api/runs/{run_b.pk}/analysis/", f"/api/ui/runs/{run_b.pk}/"):  # fmt: skip
        assert token_a.get(url).status_code == 404, url
    points = {"points": [{"key": "k", "step": 1, "value": 1.0}]}
    assert token_a.post(f"/api/runs/{run_b.pk}/metrics/", points, format="json").status_code == 404
    r = token_a.post(
        "/api/runs/",
        {"plan": reduced_lm_plan(), "queue": queue.name, "team": b.slug},
        format="json",
    )
    assert r.status_code == 403
    assert not MetricPoint.objects.filter(series__run=run_b).exists()
    assert Run.objects.filter(team=b).count() == 1
    pipeline_b = f.PipelineFactory(team=b)
    assert token_a.get(f"/api/pipelines/{pipeline_b.pk}/").status_code == 404
    assert pipeline_b.pk not in {p["id"] for p in token_a.get("/api/pipelines/").json()["results"]}

    # Writes to its own team work, and a run submitted without a team lands in the token's.
    r = token_a.post("/api/runs/", {"plan": reduced_lm_plan(), "queue": queue.name}, format="json")
    assert r.status_code == 201, r.json()
    assert Run.objects.get(pk=r.json()["id"]).team == a

    # The same user's session still sees both teams.
    session = _session(user)
    assert {r["id"] for r in session.get("/api/runs/").json()["results"]} >= {run_a.pk, run_b.pk}
    assert session.get(f"/api/runs/{run_b.pk}/").status_code == 200


def test_the_users_role_in_the_tokens_team_applies(two_teams):
    user, a, b, run_a, run_b = two_teams
    viewer = _member(a, role="viewer")
    _member(b, role="member", user=viewer)
    token = _bearer(f.api_token_for(viewer, a))
    assert token.get(f"/api/runs/{run_a.pk}/").status_code == 200
    points = {"points": [{"key": "k", "step": 1, "value": 1.0}]}
    r = token.post(f"/api/runs/{run_a.pk}/metrics/", points, format="json")
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    # A member's token of the same team writes.
    writer = _bearer(f.api_token_for(user, a))
    r = writer.post(f"/api/runs/{run_a.pk}/metrics/", points, format="json")
    assert r.status_code == 200, r.json()
    assert MetricPoint.objects.filter(series__run=run_a).count() == 1


def test_a_token_outlives_no_membership(user, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan())
    token = _bearer(f.api_token_for(user, team))
    assert token.get(f"/api/runs/{run.pk}/").status_code == 200
    user.memberships.all().delete()
    assert token.get(f"/api/runs/{run.pk}/").status_code == 404


# ------------------------------------------------------------------ who manages tokens


def test_a_token_cannot_make_list_or_revoke_tokens(user, team):
    key = f.api_token_for(user, team)
    token_id = ApiToken.objects.get().pk
    for scheme in ("Bearer", "Token"):
        client = _bearer(key, scheme)
        r = client.post("/api/tokens/", {"name": "successor"}, format="json")
        assert r.status_code == 403 and "cannot manage tokens" in r.json()["detail"]
        assert client.get("/api/tokens/").status_code == 403
        assert client.get(f"/api/tokens/{token_id}/").status_code == 403
        assert client.delete(f"/api/tokens/{token_id}/").status_code == 403
    assert ApiToken.objects.count() == 1 and ApiToken.objects.get().revoked_at is None


def test_team_admin_lists_and_revokes_the_teams_tokens(two_teams):
    user, a, b, run_a, run_b = two_teams  # user: member of both
    admin = _member(a, role="admin")
    _member(b, role="member", user=admin)
    member_key_a = f.api_token_for(user, a, name="member in a")
    member_key_b = f.api_token_for(user, b, name="member in b")
    admin_key = f.api_token_for(admin, a, name="admin in a")
    by_name = {t.name: t for t in ApiToken.objects.all()}

    admin_api = _session(admin)
    r = admin_api.get(f"/api/tokens/?team={a.slug}")
    assert r.status_code == 200
    assert {(i["name"], i["user"]) for i in r.json()["results"]} == {
        ("member in a", user.username),
        ("admin in a", admin.username),
    }
    # Without ?team: only their own.
    assert [i["name"] for i in admin_api.get("/api/tokens/").json()["results"]] == ["admin in a"]
    # Not an admin of B: neither B's list nor B's tokens.
    r = admin_api.get(f"/api/tokens/?team={b.slug}")
    assert r.status_code == 403 and "not an admin" in r.json()["detail"]
    r = admin_api.get("/api/tokens/?team=no-such-team")  # the same answer: no team oracle
    assert (r.status_code, r.json()["detail"]) == (
        403,
        "you are not an admin of team 'no-such-team'",
    )
    assert admin_api.delete(f"/api/tokens/{by_name['member in b'].pk}/").status_code == 404

    assert admin_api.get(f"/api/tokens/{by_name['member in a'].pk}/").status_code == 200
    assert admin_api.delete(f"/api/tokens/{by_name['member in a'].pk}/").status_code == 204
    revoked = ApiToken.objects.get(pk=by_name["member in a"].pk)
    assert revoked.revoked_at is not None and revoked.revoked_by == admin
    assert _bearer(member_key_a).get("/api/runs/").status_code == 401
    assert _bearer(member_key_b).get("/api/runs/").status_code == 200
    assert _bearer(admin_key).get("/api/runs/").status_code == 200


def test_a_member_sees_and_revokes_only_their_own_tokens(two_teams):
    user, a, b, run_a, run_b = two_teams
    other = _member(a, role="member")
    other_key = f.api_token_for(other, a, name="other's")
    f.api_token_for(user, a, name="mine")
    theirs = ApiToken.objects.get(name="other's")

    api = _session(user)
    assert [i["name"] for i in api.get("/api/tokens/").json()["results"]] == ["mine"]
    r = api.get(f"/api/tokens/?team={a.slug}")
    assert r.status_code == 403
    assert api.get(f"/api/tokens/{theirs.pk}/").status_code == 404
    assert api.delete(f"/api/tokens/{theirs.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is None
    assert _bearer(other_key).get("/api/runs/").status_code == 200


# ------------------------------------------------------------------ last_used_at


def test_last_used_at_is_set_on_use_and_written_at_most_once_a_minute(user, team):
    key = f.api_token_for(user, team)
    token = ApiToken.objects.get()
    assert token.last_used_at is None
    client = _bearer(key)
    assert client.get("/api/runs/").status_code == 200
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=30)

    assert client.get("/api/runs/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at == first  # within the minute: not written again

    old = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=old)
    assert client.get("/api/runs/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > first


def test_a_recently_used_token_costs_no_write(user, team):
    key = f.api_token_for(user, team)
    client = _bearer(key)
    client.get("/api/queues/")  # sets last_used_at
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/api/queues/").status_code == 200
    writes = [
        q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")
    ]
    assert writes == []


# ------------------------------------------------------------------ throttling


@pytest.fixture
def low_rates(settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {"user": "3/min", "ingest": "5/min"}
    settings.REST_FRAMEWORK = rest
    cache.clear()
    yield
    cache.clear()


def test_over_the_rate_a_token_gets_429_with_retry_after(low_rates, user, team, queue):
    key = f.api_token_for(user, team)
    client = _bearer(key)
    assert [client.get("/api/queues/").status_code for _ in range(3)] == [200] * 3
    r = client.get("/api/queues/")
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    assert "throttled" in r.json()["detail"].lower()
    # The count is the token's: another token of the same user, and the session, still pass.
    assert _bearer(f.api_token_for(user, team)).get("/api/queues/").status_code == 200
    assert _session(user).get("/api/queues/").status_code == 200


def test_metric_batches_count_in_their_own_higher_scope(low_rates, user, team, queue):
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan(), external=True)
    client = _bearer(f.api_token_for(user, team))
    url = f"/api/runs/{run.pk}/metrics/"
    codes = [
        client.post(url, {"points": [{"key": "k", "step": s, "value": 1.0}]}, format="json")
        for s in range(1, 7)
    ]
    assert [r.status_code for r in codes] == [200] * 5 + [429]
    assert int(codes[-1]["Retry-After"]) >= 1
    assert MetricPoint.objects.filter(series__run=run).count() == 5
    # The batches took nothing from the token's other requests.
    assert [client.get("/api/queues/").status_code for _ in range(3)] == [200] * 3


def test_the_throttle_counts_live_in_redis(low_rates, user, team):
    """Shared by all web processes: the counts are in the Redis cache, not per process."""
    from django.core.cache import caches

    assert caches["default"].__class__.__name__ == "RedisCache"
    key = f.api_token_for(user, team)
    _bearer(key).get("/api/queues/")
    token = ApiToken.objects.get()
    assert len(cache.get(f"throttle_user_token-{token.pk}")) == 1


def test_the_schema_lists_the_token_endpoints_and_bearer_auth(user):
    schema = _session(user).get("/api/schema/?format=json").json()
    assert {"/api/tokens/", "/api/tokens/{token_id}/"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    created = schema["components"]["schemas"]["TokenCreatedOut"]["properties"]
    assert (
        "key" in created and "key" not in schema["components"]["schemas"]["TokenOut"]["properties"]
    )


def test_staff_see_and_revoke_tokens_in_the_django_admin(client, user, team):
    key = f.api_token_for(user, team, name="leaked")
    token = ApiToken.objects.get()
    staff = f.UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get("/admin/runs/apitoken/").content.decode()
    assert token.prefix in page and key not in page
    assert key not in client.get(f"/admin/runs/apitoken/{token.pk}/change/").content.decode()
    r = client.post("/admin/runs/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert r.status_code == 302
    token.refresh_from_db()
    assert token.revoked_by == staff
    assert _bearer(key).get("/api/runs/").status_code == 401
