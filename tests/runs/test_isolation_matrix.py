"""Isolation matrix: every HTTP route (API and pages) and every websocket route, enumerated from
the URL confs (``django.urls.get_resolver()`` and the websocket router of ``webapp.asgi``), so
that an endpoint added tomorrow is checked without anyone writing a test for it.

Each route is filled with the ids of team A's objects (``PARAMS``: URL kwarg -> team A's value;
a kwarg it does not know fails the test, naming the route) and called with every method its
view handles, as:

- a user of team B (browser session, their API token, and the team-B token of a user who is in
  both teams): an object URL answers exactly what it answers when the object does not exist
  (the same status and body, compared against the same request with the object deleted in a
  savepoint), a 404; nothing any of them gets contains team A's names (``MARK``);
- a viewer of team A (session and token): reads are 200, writes 403;
- nobody: the API is a 401 with ``WWW-Authenticate``, pages redirect to the login;
- a revoked and an expired token of a team-A member: 401 (pages: the login redirect).

After every write attempt team A's rows (and the files behind its dataset and checkpoint) are
compared with a snapshot taken before it: a refused write changed nothing. Then a member of
team A sends the same write, to show that the viewer's 403 came from the role and not from a
body the view could not even parse (``BODIES``: a body each write needs to get that far).

Where a route means something else by design (a token belongs to a user, not to the team; a
staff-only page; a POST that only computes), ``OVERRIDES`` says so, with the reason."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient

from runs.models import ApiToken, Membership, Team
from runs.services.ingest import IngestPoint, ingest_points
from runs.services.runs import run_submit
from runs.services.tokens import token_create, token_revoke
from tests import factories as f
from tests.runs.reduced_plan import reduced_lm_plan

# In the name of every team-A object (team, run, pipeline, dataset, token, users): nothing a
# caller outside team A gets back may contain it.
MARK = "isoA7f3c"
MISSING_ID = 2_000_000_000

# ------------------------------------------------------------------ what is out of scope

# Route prefixes (as the URL conf spells them) that are public or guarded by something else.
OUT_OF_SCOPE = {
    "admin/": "Django's admin: staff only, with its own login and model permissions "
    "(tests/runs/test_admin.py)",
    "accounts/login/": "the login page: public by definition",
    "accounts/logout/": "acts only on the caller's own session",
    "vendor/plotly-": "plotly.js from the installed package: a public static asset, no data",
    "^api(?:/|$)": "the JSON 404 for /api/ URLs no endpoint matched: nothing behind it",
    "healthz": "liveness for load balancers: public, says only 'ok' (tests/webapp/test_ops.py)",
    "readyz": "readiness for orchestrators: public, only check names and reasons "
    "(tests/webapp/test_ops.py)",
    "metrics": "Prometheus: its scrape token or staff only (tests/webapp/test_ops.py)",
}

# ------------------------------------------------------------------ team A's objects


@dataclass
class World:
    team: Team
    other: Team
    tmp: Path
    objs: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    users: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # behind team A's dataset and checkpoint

    def __getattr__(self, name: str):
        try:
            return self.__dict__["objs"][name]
        except KeyError:
            raise AttributeError(name) from None


def _gone(obj) -> None:
    """Delete ``obj`` by query (the instance keeps its pk for the rest of the test)."""
    type(obj)._default_manager.filter(pk=obj.pk).delete()


@dataclass(frozen=True)
class Param:
    value: Callable[[World], Any]
    delete: Callable[[World], None]  # makes the object the value names not exist


# URL kwarg -> team A's value, and how to make it not exist (for "like a missing object").
PARAMS: dict[str, Param] = {
    "run_id": Param(lambda w: w.run.pk, lambda w: _gone(w.run)),
    "index": Param(lambda w: w.stage.stage_index, lambda w: _gone(w.stage)),
    "checkpoint_id": Param(lambda w: w.checkpoint.pk, lambda w: _gone(w.checkpoint)),
    "pipeline_id": Param(lambda w: w.pipeline.pk, lambda w: _gone(w.pipeline)),
    "dataset_id": Param(lambda w: w.dataset.pk, lambda w: _gone(w.dataset)),
    "version": Param(lambda w: w.version.version, lambda w: _gone(w.version)),
    "version_id": Param(lambda w: w.version.pk, lambda w: _gone(w.version)),
    "token_id": Param(lambda w: w.token.pk, lambda w: _gone(w.token)),
    "queue_id": Param(
        lambda w: w.queue.pk,
        lambda w: (w.queue.runs.all().delete(), _gone(w.queue)),  # runs PROTECT their queue
    ),
}


def _user(team: Team | None, role: str, name: str, *, extra: Team | None = None):
    user = f.UserFactory(username=f"{name}-{uuid.uuid4().hex[:6]}")
    user.save()  # the factory sets the password without saving it; sessions need it saved
    if team is not None:
        f.MembershipFactory(user=user, team=team, role=role)
    if extra is not None:
        f.MembershipFactory(user=user, team=extra, role="member")
    return user


def _points() -> list[IngestPoint]:
    steps = range(1, 101)
    loss = [IngestPoint("train/loss", s, 2.0 + 3.0 / (1 + s) ** 0.5) for s in steps]
    evals = [IngestPoint("eval/prose/loss", s, 2.5 + 1.0 / s) for s in range(10, 101, 10)]
    return loss + evals


def build_world(tmp: Path) -> World:
    team = f.TeamFactory(name=f"{MARK} team")
    other = f.TeamFactory(name="team B")
    w = World(team=team, other=other, tmp=tmp)
    member = _user(team, "member", f"{MARK}-member")
    w.users = {
        "member": member,
        "viewer": _user(team, "viewer", f"{MARK}-viewer"),
        "outsider": _user(other, "member", "outsider"),
        "both": _user(team, "member", "in-both-teams", extra=other),
    }
    queue = f.QueueFactory(name=f"iso-{uuid.uuid4().hex[:8]}", max_concurrent=4)
    queue.allowed_teams.add(team)
    run = run_submit(team=team, queue=queue, plan=reduced_lm_plan(), name=f"{MARK}-run",
                     user=member, external=True)  # fmt: skip
    ingest_points(run_id=run.pk, points=_points(), publish=False)
    stage = run.stage_runs.get(stage_index=0)
    ckpt_dir = tmp / "ckpt-40"
    ckpt_dir.mkdir()
    (ckpt_dir / "model.pt").write_bytes(b"weights")
    checkpoint = f.CheckpointFactory(run=run, stage_run=stage, step=40, path=str(ckpt_dir),
                                     stage_end=True, size_bytes=7)  # fmt: skip
    pipeline = f.PipelineFactory(team=team, name=f"{MARK}-pipeline")
    data = tmp / "prose.txt"
    data.write_text(f"{MARK} first line\nsecond line\n")
    dataset = f.DatasetFactory(team=team, name=f"{MARK}-dataset")
    version = f.DatasetVersionFactory(dataset=dataset, version=1, format="text",
                                      storage_path=str(data), size_bytes=data.stat().st_size)  # fmt: skip
    token, member_key = token_create(user=member, team=team, name=f"{MARK}-token")
    revoked, revoked_key = token_create(user=member, team=team, name=f"{MARK}-revoked")
    token_revoke(token=revoked, by=member)
    expired, expired_key = token_create(user=member, team=team, name=f"{MARK}-expired")
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    w.objs = {"queue": queue, "run": run, "stage": stage, "checkpoint": checkpoint,
              "pipeline": pipeline, "dataset": dataset, "version": version, "token": token}  # fmt: skip
    w.keys = {
        "member": member_key,
        "revoked": revoked_key,
        "expired": expired_key,
        "viewer": f.api_token_for(w.users["viewer"], team),
        "outsider": f.api_token_for(w.users["outsider"], other),
        "both": f.api_token_for(w.users["both"], other),  # the user is in team A too
    }
    w.files = [data, ckpt_dir / "model.pt"]
    return w


# ------------------------------------------------------------------ callers


def _session(user) -> APIClient:
    c = APIClient()
    c.force_login(user)
    return c


def _bearer(key: str) -> APIClient:
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return c


# name -> (group, how to make its client)
ACTORS: dict[str, tuple[str, Callable[[World], APIClient]]] = {
    "team B session": ("outsider", lambda w: _session(w.users["outsider"])),
    "team B token": ("outsider", lambda w: _bearer(w.keys["outsider"])),
    "team-B token of a user in both teams": ("outsider", lambda w: _bearer(w.keys["both"])),
    "team A viewer session": ("viewer", lambda w: _session(w.users["viewer"])),
    "team A viewer token": ("viewer", lambda w: _bearer(w.keys["viewer"])),
    "anonymous": ("anonymous", lambda w: APIClient()),
    "revoked token of a team A member": ("dead token", lambda w: _bearer(w.keys["revoked"])),
    "expired token of a team A member": ("dead token", lambda w: _bearer(w.keys["expired"])),
}
TOKEN_ACTORS = {name for name in ACTORS if "token" in name}

# ------------------------------------------------------------------ routes


@dataclass(frozen=True)
class Route:
    route: str  # as the URL conf spells it: "api/runs/<int:run_id>/"
    name: str | None
    callback: Callable

    @property
    def kwargs(self) -> list[str]:
        return re.findall(r"<(?:[^>:]+:)?(\w+)>", self.route)

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api/")

    @property
    def is_object(self) -> bool:
        return bool(self.kwargs)

    @property
    def label(self) -> str:
        return f"/{self.route} ({self.name})"


def _walk(patterns, prefix: str = ""):
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            if not any(route.startswith(k) for k in OUT_OF_SCOPE):
                yield from _walk(p.url_patterns, route)
            else:
                yield Route(route, None, None)
        elif isinstance(p, URLPattern):
            yield Route(route, p.name, p.callback)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


def routes_in_scope() -> list[Route]:
    return [r for r in all_routes() if not any(r.route.startswith(k) for k in OUT_OF_SCOPE)]


def _declared_methods(func) -> set[str] | None:
    """The methods a function view restricts itself to (``require_POST`` and friends keep
    their list in a closure), or None."""
    stack, seen = [func], set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if (
                isinstance(value, list | tuple)
                and value
                and all(isinstance(m, str) and m.isupper() for m in value)
            ):
                return {m.lower() for m in value}
            if callable(value):
                stack.append(value)
        if getattr(fn, "__wrapped__", None) is not None:
            stack.append(fn.__wrapped__)
    return None


SAFE = {"get"}


def methods_of(route: Route) -> list[str]:
    cls = getattr(route.callback, "view_class", None) or getattr(route.callback, "cls", None)
    if cls is not None:
        methods = [m for m in cls.http_method_names
                   if m not in ("options", "head", "trace") and callable(getattr(cls, m, None))]  # fmt: skip
    else:  # a function view: what it declares, else try both
        methods = sorted(_declared_methods(route.callback) or {"get", "post"})
    return sorted(methods, key=lambda m: (m == "delete", m))  # deletes last


def is_write(route: Route, method: str) -> bool:
    if method in SAFE:
        return False
    if route.name in READ_LIKE:
        return False
    # A function view that takes GET and POST alike and only renders a page (it is not in
    # PAGE_WRITES) treats a POST as a GET.
    cls = getattr(route.callback, "view_class", None)
    if cls is None and not route.is_api and _declared_methods(route.callback) is None:
        return route.name in PAGE_WRITES
    return True


def url_for(route: Route, w: World) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(1)
        return str(PARAMS[name].value(w))

    path = "/" + re.sub(r"<(?:[^>:]+:)?(\w+)>", fill, route.route)
    query = QUERIES.get(route.name, "")
    return path + (query(w) if callable(query) else query)  # ids of team A's objects


# ------------------------------------------------------------------ bodies, queries, overrides

QUERIES: dict[str, str | Callable[[World], str]] = {
    "api-run-series": "?keys=train/loss",
    # team A's run in the query: team B gets it in "missing", like a run that does not exist
    "api-series-bulk": lambda w: f"?runs={w.run.pk}&keys=train/loss,eval/prose/loss",
    "api-ui-compare": lambda w: f"?runs={w.run.pk}",
    "api-run-export": "?keys=train/loss",
    "api-run-lr-law": "?stage=all",
}


def _upload(name="more.txt") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"one line\nanother line\n", content_type="text/plain")


# (route name, method) -> body a member's request would get past validation with:
# (data, format), where format is "json", "multipart" (DRF) or "form" (a page).
BODIES: dict[tuple[str, str], Callable[[World], tuple[Any, str]]] = {
    ("api-runs", "post"): lambda w: (
        {"plan": reduced_lm_plan(), "queue": w.queue.name, "team": w.team.slug, "name": "new"},
        "json",
    ),
    ("api-run", "patch"): lambda w: ({"name": "renamed", "notes": "n"}, "json"),
    ("api-run-fork", "post"): lambda w: ({"checkpoint": w.checkpoint.pk}, "json"),
    ("api-run-stage-report", "post"): lambda w: ({"state": "running"}, "json"),
    ("api-run-stage-declare", "post"): lambda w: (
        {"index": 0, "name": "pt", "start_step": 0},
        "json",
    ),
    ("api-run-metrics", "post"): lambda w: (
        {"points": [{"key": "train/loss", "step": 5, "value": 9.0}]},
        "json",
    ),
    ("api-run-lr-law-what-if", "post"): lambda w: ({"plan": reduced_lm_plan()}, "json"),
    ("api-pipelines", "post"): lambda w: (
        {"plan": {**reduced_lm_plan(), "name": "new-pipeline"}, "team": w.team.slug},
        "json",
    ),
    ("api-pipeline", "put"): lambda w: (
        {"plan": {**reduced_lm_plan(), "name": "renamed"}},
        "json",
    ),  # fmt: skip
    ("api-pipeline", "patch"): lambda w: ({"description": "d"}, "json"),
    ("api-tokens", "post"): lambda w: ({"name": "new token", "team": w.team.slug}, "json"),
    ("api-datasets", "post"): lambda w: (
        {"file": _upload(), "name": "new-dataset", "team": w.team.slug},
        "multipart",
    ),
    ("api-dataset", "patch"): lambda w: ({"name": "renamed"}, "json"),
    ("api-ui-plan-preview", "post"): lambda w: (
        {"plan": reduced_lm_plan(), "team": w.team.slug},
        "json",
    ),  # fmt: skip
    ("dataset-upload", "post"): lambda w: (
        {"file": _upload(), "name": "new-dataset"},
        "multipart",
    ),  # fmt: skip
    ("settings-tokens", "post"): lambda w: ({"name": "new token", "team": w.team.slug}, "form"),
    ("queue-toggle", "post"): lambda w: ({"paused": "1"}, "form"),
}

# POSTs that compute and store nothing: a viewer may send them (they are reads).
READ_LIKE = {
    "api-run-lr-law-what-if": "predicts a loss curve for another schedule; stores nothing",
    "api-ui-plan-preview": "validates a plan and returns its LR curve; stores nothing",
}
# Function views that change state on POST (the others render the same page for any method).
PAGE_WRITES = {"settings-tokens": "POST makes a token"}

# Lists that show team A's objects to its viewer (so that their absence for team B means
# something); every object URL's 200 for the viewer says the same of it.
SHOWS_TEAM_DATA = {"api-runs", "api-pipelines", "api-datasets", "api-ui-runs", "home",
                   "compare", "pipelines", "pipeline-new", "datasets",
                   "api-ui-compare"}  # fmt: skip

MISSING = "missing"  # the same answer as for an object that does not exist (a 404)
ALLOWED = "allowed"  # a write the caller may make (asserted to succeed, not to change nothing)
SESSION_ONLY = 403  # runs.api.permissions.SessionOnly: tokens cannot manage tokens

# Pages for staff only (Django's staff_member_required: the admin's login for everyone else).
STAFF_ONLY = {"queue-toggle": "pausing a queue is the admins' business"}

# route name -> {(actor group or actor name, method or "*"): expected status | MISSING | ALLOWED}
OVERRIDES: dict[str, dict[tuple[str, str], Any]] = {
    # A token belongs to its user: only they (or a team admin) see it, so to a viewer who is
    # neither, team A's member's token is as missing as to team B. No API token manages tokens.
    "api-token": {("viewer", "*"): MISSING, **{(a, "*"): SESSION_ONLY for a in TOKEN_ACTORS}},
    "api-tokens": {
        ("viewer", "post"): ALLOWED,  # their own token (with their read-only role)
        **{(a, "*"): SESSION_ONLY for a in TOKEN_ACTORS},
    },
    "settings-tokens": {("viewer", "post"): ALLOWED},
    "settings-token-revoke": {("viewer", "*"): MISSING},
    # Staff only, before any lookup: every non-staff caller goes to the admin's login.
    "queue-toggle": {("outsider", "*"): 302, ("viewer", "*"): 302},
}


def override(route: Route, actor: str, group: str, method: str):
    table = OVERRIDES.get(route.name or "", {})
    for key in ((actor, method), (actor, "*"), (group, method), (group, "*")):
        if key in table:
            return table[key]
    return None


# ------------------------------------------------------------------ requests and snapshots


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode(errors="replace")


def _read(resp) -> bytes:
    if not resp.streaming:
        return resp.content
    if resp.is_async:
        assert not connection.in_atomic_block, (
            f"{resp.request['PATH_INFO']} streams from an async iterator, whose queries run on "
            "another connection: add its route name to STREAMING (a transactional test)"
        )

        async def gather() -> bytes:
            return b"".join([c async for c in resp.streaming_content])

        body = async_to_sync(gather)()
        # Close the connection the stream used in asgiref's sync thread, as a server would when
        # the request ends (an idle one left there holds the test database open).
        async_to_sync(sync_to_async(connections.close_all))()
    else:
        body = b"".join(resp.streaming_content)
    resp.close()
    return body


def send(client: APIClient, method: str, url: str, body) -> Answer:
    kw: dict[str, Any] = {}
    if body is not None:
        data, fmt = body
        if fmt == "form":
            kw = {"data": data}  # Django's encoding (multipart), as a browser form
        else:
            kw = {"data": data, "format": fmt}
    resp = getattr(client, method)(url, **kw)
    return Answer(resp.status_code, dict(resp.headers), _read(resp))


_CSRF = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"')


def normalized(answer: Answer) -> tuple[int, bytes]:
    return answer.status, _CSRF.sub(b"csrf", answer.body)


def _team_path(model, depth: int = 0) -> str | None:
    """The lookup from ``model`` to its Team (``run__team``), or None when it has none."""
    if model is Team:
        return "pk"
    if depth > 4:
        return None
    relations = [fl for fl in model._meta.concrete_fields
                 if fl.is_relation and (fl.many_to_one or fl.one_to_one)]  # fmt: skip
    for fl in relations:
        if fl.related_model is Team:
            return fl.name
    for fl in relations:
        if fl.related_model is model:
            continue
        sub = _team_path(fl.related_model, depth + 1)
        if sub is not None:
            return f"{fl.name}__{sub}" if sub != "pk" else fl.name
    return None


VOLATILE = {("runs.ApiToken", "last_used_at")}  # written by any authenticated token request


def snapshot(w: World) -> dict[str, Any]:
    """Every row that is team A's (found through its foreign keys to Team), every row of models
    that belong to no team (queues), team A's users, and the files behind its objects."""
    from django.apps import apps
    from django.contrib.auth import get_user_model

    out: dict[str, Any] = {}
    for model in apps.get_app_config("runs").get_models(include_auto_created=True):
        label = model._meta.label
        path = _team_path(model)
        qs = model._default_manager.all()
        if path is not None:
            qs = qs.filter(**{path: w.team.pk})
        cols = [fl.attname for fl in model._meta.concrete_fields
                if getattr(fl, "column", None) and (label, fl.attname) not in VOLATILE]  # fmt: skip
        out[label] = sorted(qs.values_list(*cols), key=repr)
    users = get_user_model().objects.filter(
        pk__in=Membership.objects.filter(team=w.team).values("user_id")
    )
    out["users"] = sorted(users.values_list(), key=repr)
    out["files"] = [
        (str(p), p.exists() and hashlib.sha256(p.read_bytes()).hexdigest()) for p in w.files
    ]
    return out


def changed(before: dict, after: dict) -> list[str]:
    return [k for k in before if before[k] != after.get(k)]


class _Rollback(Exception):
    pass


def missing_answer(route: Route, w: World, client, method: str, body) -> Answer:
    """The answer to the same request once the object its URL names does not exist (deleted in
    a savepoint, rolled back after)."""
    first = route.kwargs[0]
    out: list[Answer] = []
    try:
        with transaction.atomic():
            PARAMS[first].delete(w)
            out.append(send(client, method, url_for(route, w), body))
            raise _Rollback
    except _Rollback:
        pass
    return out[0]


def _login_redirect(answer: Answer, staff_only: bool) -> bool:
    login = "/admin/login/" if staff_only else settings.LOGIN_URL
    return answer.status == 302 and answer.headers.get("Location", "").startswith(login)


# ------------------------------------------------------------------ the matrix


@pytest.fixture
def world(db, tmp_path, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed
    return build_world(tmp_path)


def test_every_route_is_in_scope_or_listed_out_of_scope_and_every_kwarg_is_known():
    routes = all_routes()
    for prefix in OUT_OF_SCOPE:  # a stale entry hides nothing
        assert any(r.route.startswith(prefix) for r in routes), f"no route starts with {prefix!r}"
    unknown = {
        r.label: [k for k in r.kwargs if k not in PARAMS]
        for r in routes_in_scope()
        if any(k not in PARAMS for k in r.kwargs)
    }
    assert not unknown, (
        f"routes with URL kwargs the isolation matrix cannot fill: {unknown}. Add each kwarg to "
        "PARAMS in tests/runs/test_isolation_matrix.py: the value of team A's object and how "
        "to delete it"
    )
    unnamed = [r.route for r in routes_in_scope() if not r.name]
    assert not unnamed, f"routes without a name (BODIES and OVERRIDES key on names): {unnamed}"
    stale = {n for n, _ in BODIES} | set(QUERIES) | set(READ_LIKE) | set(OVERRIDES)
    stale |= set(STAFF_ONLY) | set(PAGE_WRITES) | set(SHOWS_TEAM_DATA) | STREAMING
    stale -= {r.name for r in routes_in_scope()}
    assert not stale, f"entries for routes that no longer exist: {sorted(stale)}"
    assert len(routes_in_scope()) >= 30


# Routes whose answer streams from an async iterator pulling from the database in asgiref's
# sync thread (runs/api/streaming.py): that thread has its own connection, which sees only
# committed rows, so these run as transactional tests.
STREAMING = {"api-run-export", "api-dataset-version-download"}


def _param(route: Route):
    marks = [pytest.mark.django_db(transaction=True)] if route.name in STREAMING else []
    return pytest.param(route, marks=marks, id=route.route)


@pytest.mark.parametrize("route", [_param(r) for r in routes_in_scope()])
def test_isolation(route: Route, world: World):
    w = world
    missing_kwargs = [k for k in route.kwargs if k not in PARAMS]
    assert not missing_kwargs, (
        f"{route.label}: URL kwargs {missing_kwargs} are not in PARAMS (team A's value for "
        "each URL kwarg); add them"
    )
    url = url_for(route, w)
    match = resolve(url.split("?")[0])
    assert match.route == route.route, f"{url} resolves to {match.route}, not {route.route}"
    staff_only = route.name in STAFF_ONLY
    problems: list[str] = []
    controls: list[tuple[str, Any, Answer]] = []

    def problem(actor: str, method: str, what: str, answer: Answer | None = None) -> None:
        got = f" (got {answer.status}: {answer.text()!r})" if answer is not None else ""
        problems.append(f"{method.upper()} {url} as {actor}: {what}{got}")

    for method in methods_of(route):
        writes = is_write(route, method)
        body_of = BODIES.get((route.name, method))
        for actor, (group, make) in ACTORS.items():
            body = body_of(w) if body_of else None
            client = make(w)
            before = snapshot(w) if writes else None
            answer = send(client, method, url, body)
            expect = override(route, actor, group, method)
            if answer.status >= 500:
                problem(actor, method, "a server error", answer)
            if group != "viewer" and MARK.encode() in answer.body:
                problem(actor, method, f"the answer shows team A's data ({MARK!r})", answer)

            if group in ("anonymous", "dead token") or (not route.is_api and actor in TOKEN_ACTORS):
                # (an API token does not sign anyone in to the pages)
                if route.is_api:
                    if answer.status != 401:
                        problem(actor, method, "expected 401", answer)
                    elif answer.headers.get("WWW-Authenticate") != 'Bearer realm="api"':
                        problem(actor, method, "401 without WWW-Authenticate: Bearer", answer)
                elif not _login_redirect(answer, staff_only):
                    problem(actor, method, "expected a redirect to the login", answer)
            elif group == "outsider" and route.is_object:
                again = missing_answer(route, w, client, method,
                                       body_of(w) if body_of else None)  # fmt: skip
                if normalized(answer) != normalized(again):
                    problem(actor, method, "answers differently than for a missing object "
                            f"(missing: {again.status} {again.text()!r})", answer)  # fmt: skip
                if answer.status != (expect if isinstance(expect, int) else 404):
                    problem(actor, method, f"expected {expect or 404}", answer)
            elif group == "outsider":
                # (a POST names team A in its body where it can: refused or not, the checks
                # above and the snapshot below are what matter)
                if method in SAFE and answer.status != (expect if isinstance(expect, int) else 200):
                    problem(actor, method, f"a list read: expected {expect or 200}", answer)
            elif group == "viewer":
                if expect == MISSING:
                    again = missing_answer(route, w, client, method,
                                           body_of(w) if body_of else None)  # fmt: skip
                    if normalized(answer) != normalized(again) or answer.status != 404:
                        problem(actor, method, "expected the missing-object 404 "
                                f"({again.status} {again.text()!r})", answer)  # fmt: skip
                elif expect == ALLOWED:
                    if not 200 <= answer.status < 300:
                        problem(actor, method, "an allowed write: expected 2xx", answer)
                    continue  # it made something; nothing to compare
                elif isinstance(expect, int):
                    if answer.status != expect or (
                        expect == 302 and not _login_redirect(answer, staff_only)
                    ):
                        problem(actor, method, f"expected {expect}", answer)
                elif writes:
                    if answer.status != 403:
                        hint = "" if body_of else f" (no BODIES entry for {route.name!r}/{method})"
                        problem(actor, method, f"a write: expected 403{hint}", answer)
                    else:
                        controls.append((method, body_of, answer))
                elif answer.status != 200:
                    problem(actor, method, "a read: expected 200", answer)
                elif route.name in SHOWS_TEAM_DATA and MARK.encode() not in answer.body:
                    problem(actor, method, f"the team's own list lacks {MARK!r}: the checks "
                            "that team B does not see it prove nothing", answer)  # fmt: skip
            if writes:
                diff = changed(before, snapshot(w))
                if diff:
                    problem(actor, method, f"a refused write changed team A's {diff}", answer)

    # The viewer's 403 came from the role: a member of team A gets past it with the same body.
    member = _session(w.users["member"])
    done: set[str] = set()
    for method, body_of, _ in controls:
        if method in done:
            continue
        done.add(method)
        answer = send(member, method, url, body_of(w) if body_of else None)
        if answer.status in (400, 401, 403, 404, 405) or answer.status >= 500:
            problem("team A member (control)", method, "a member's write should get past "
                    "validation and the role check (a 2xx, or a 409 for the run's state); "
                    "fix its BODIES entry", answer)  # fmt: skip

    assert not problems, f"{route.label}:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------ content of the downloads


@pytest.mark.django_db(transaction=True)
def test_downloads_give_the_teams_data_to_its_viewer_and_nothing_to_others(world: World):
    """The CSV export and the dataset file (there is no checkpoint download endpoint: checkpoints
    are listed, and forked from, never served)."""
    w = world
    export = f"/api/runs/{w.run.pk}/export/"
    download = f"/api/datasets/{w.dataset.pk}/versions/{w.version.version}/download/"
    viewer = _session(w.users["viewer"])
    csv = send(viewer, "get", export, None)
    assert csv.status == 200 and csv.headers["Content-Type"].startswith("text/csv")
    rows = csv.body.decode().splitlines()
    assert rows[0] == "key,step,value,wall_time,stage"
    assert len(rows) == 1 + len(_points())
    got = send(viewer, "get", download, None)
    assert got.status == 200 and got.body == Path(w.version.storage_path).read_bytes()
    for actor, (group, make) in ACTORS.items():
        if group == "viewer":
            continue
        for url in (export, download):
            answer = send(make(w), "get", url, None)
            assert answer.status in (401, 404), (actor, url, answer)
            assert b"train/loss" not in answer.body and MARK.encode() not in answer.body


def test_a_team_b_reference_in_a_query_string_shows_nothing_of_team_a(world: World):
    """Object ids also travel in query strings: filters and the pages' "from"/"runs" choices."""
    w = world
    urls = [
        f"/api/runs/?pipeline={w.pipeline.pk}",
        f"/api/ui/runs/?pipeline={w.pipeline.pk}",
        f"/api/datasets/?team={w.team.slug}",
        f"/api/datasets/?name={w.dataset.name}",
        f"/api/tokens/?team={w.team.slug}",
        f"/compare/?runs={w.run.pk}&keys=train/loss",
        f"/pipelines/new/?from={w.pipeline.pk}",
        f"/?pipeline={w.pipeline.pk}",
        f"/api/series/?runs={w.run.pk}&keys=train/loss&lineage=true",
        f"/api/ui/compare/?runs={w.run.pk}",
    ]
    for actor, (group, make) in ACTORS.items():
        if group != "outsider":
            continue
        for url in urls:
            answer = send(make(w), "get", url, None)
            assert answer.status < 500, (actor, url, answer.status)
            assert MARK.encode() not in answer.body, (actor, url, answer.text(2000))
    # and the viewer does see them through the same URLs (the check above is not vacuous)
    viewer = _session(w.users["viewer"])
    assert MARK.encode() in send(viewer, "get", urls[3], None).body
    assert MARK.encode() in send(viewer, "get", urls[6], None).body


# Ids of team A's objects inside request bodies (not URLs): team B's answer must be the one it
# gets once the object does not exist (deleted in a savepoint, as for URLs). (URL, body given
# the id, the URL kwarg whose object the id names); the URL is team B's own where it needs one.
BODY_REFERENCES = [
    pytest.param(
        "/api/runs/",
        lambda w, ref: {"pipeline": ref, "queue": w.objs["b_queue"].name},
        "pipeline_id",
        id="submit-from-pipeline",
    ),
    pytest.param(
        "/api/runs/{b_run}/fork/",
        lambda w, ref: {"checkpoint": ref},
        "checkpoint",
        id="fork-from-checkpoint",
    ),
    pytest.param(
        "/api/ui/plan-preview/",
        lambda w, ref: {
            "plan": {
                **reduced_lm_plan(),
                "model": {**reduced_lm_plan()["model"], "path": f"run:{ref}@40"},
            }
        },  # fmt: skip
        "run_id",
        id="plan-model-from-run",
    ),
]
BODY_PARAMS = {
    **PARAMS,
    "checkpoint": Param(lambda w: w.checkpoint.pk, lambda w: _gone(w.checkpoint)),
}


@pytest.mark.parametrize(("path", "body", "kwarg"), BODY_REFERENCES)
def test_an_id_of_team_a_in_a_body_is_answered_like_a_missing_one(world: World, path, body, kwarg):
    w = world
    w.objs["b_queue"] = f.QueueFactory(name=f"b-{uuid.uuid4().hex[:8]}")
    b_run = run_submit(team=w.other, queue=w.objs["b_queue"], plan=reduced_lm_plan(),
                       external=True)  # fmt: skip
    url = path.format(b_run=b_run.pk)
    param = BODY_PARAMS[kwarg]
    for actor, (group, make) in ACTORS.items():
        if group != "outsider":
            continue
        client = make(w)
        before = snapshot(w)
        got = send(client, "post", url, (body(w, param.value(w)), "json"))
        assert got.status < 500 and MARK.encode() not in got.body, (actor, got)
        assert changed(before, snapshot(w)) == [], actor
        out: list[Answer] = []
        try:
            with transaction.atomic():
                param.delete(w)
                out.append(send(client, "post", url, (body(w, param.value(w)), "json")))
                raise _Rollback
        except _Rollback:
            pass
        assert normalized(got) == normalized(out[0]), (actor, got, out[0])


# ------------------------------------------------------------------ websockets


def websocket_routes() -> list[Route]:
    """The websocket routes of webapp.asgi's application, under its middleware."""
    from webapp.asgi import application

    app = application.application_mapping["websocket"]
    while not hasattr(app, "routes"):
        app = getattr(app, "application", None) or app.inner
    out: list[Route] = []

    def walk(routes, prefix: str) -> None:
        for r in routes:
            route = prefix + str(r.pattern)
            inner = getattr(r.callback, "routes", None)
            if inner is not None:
                walk(inner, route)
            else:
                out.append(Route(route, None, r.callback))

    walk(app.routes, "")
    return out


def _cookie(user) -> bytes:
    c = Client()
    c.force_login(user)
    return f"sessionid={c.cookies['sessionid'].value}".encode()


async def _ws(path: str, cookie: bytes | None, origin: bytes = b"http://127.0.0.1"):
    """(accepted, first message) for a connection through webapp.asgi.application."""
    from channels.testing import WebsocketCommunicator

    from webapp.asgi import application

    headers = [(b"host", b"127.0.0.1"), (b"origin", origin)]
    if cookie:
        headers.append((b"cookie", cookie))
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect(timeout=5)
    msg = await comm.receive_output(timeout=5) if connected else None
    # Also after a refused handshake: the consumer that refused it still waits for this, and a
    # consumer task left pending blocks the event loop's shutdown in its channel-layer read.
    await comm.disconnect(timeout=5)
    return connected, msg


@pytest.mark.django_db(transaction=True)
def test_websocket_routes_admit_the_team_only(tmp_path, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    from runs.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED

    w = build_world(tmp_path)
    routes = websocket_routes()
    assert routes, "no websocket routes found in webapp.asgi.application"
    viewer, outsider = _cookie(w.users["viewer"]), _cookie(w.users["outsider"])
    both = _cookie(w.users["both"])
    problems = []
    for route in routes:
        unknown = [k for k in route.kwargs if k not in PARAMS]
        assert not unknown, f"websocket route {route.route}: kwargs {unknown} not in PARAMS"
        path = url_for(route, w)
        missing = "/" + re.sub(r"<(?:[^>:]+:)?(\w+)>", str(MISSING_ID), route.route)

        async def go(path=path, missing=missing):
            return {
                "viewer": await _ws(path, viewer),
                "member of both teams": await _ws(path, both),
                "team B": await _ws(path, outsider),
                "team B, missing object": await _ws(missing, outsider),
                "anonymous": await _ws(path, None),
                "viewer from another site": await _ws(path, viewer, b"http://evil.example"),
            }

        got = asyncio.run(go())
        for who in ("viewer", "member of both teams"):
            ok, msg = got[who]
            if not ok or msg.get("type") != "websocket.send" or '"hello"' not in msg["text"]:
                problems.append(f"{path} as {who}: expected accepted with hello, got {got[who]}")
        closed = {"type": "websocket.close", "code": CLOSE_FORBIDDEN}
        if got["team B"] != (True, closed) or got["team B"] != got["team B, missing object"]:
            problems.append(f"{path} as team B: expected the missing-object close "
                            f"{CLOSE_FORBIDDEN}, got {got['team B']} / "
                            f"{got['team B, missing object']}")  # fmt: skip
        anon = {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
        if got["anonymous"] != (True, anon):
            problems.append(f"{path} anonymous: expected close {CLOSE_UNAUTHENTICATED}, "
                            f"got {got['anonymous']}")  # fmt: skip
        if got["viewer from another site"][0]:
            problems.append(f"{path}: a cross-site Origin was accepted")
    assert not problems, "\n".join(problems)
