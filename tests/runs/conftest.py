"""Fixtures of the tests that talk to Stagewise over HTTP from a client."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def server(transactional_db, tmp_path):
    """A real daphne on the test database (``tests.servers.Daphne``)."""
    from tests.servers import Daphne

    daphne = Daphne(tmp_path)
    yield daphne
    daphne.stop()


@pytest.fixture
def token(transactional_db):
    """The API token of a new team's member (the team has a queue for external runs)."""
    from tests import factories as f

    team = f.TeamFactory()
    user = f.UserFactory()
    f.MembershipFactory(user=user, team=team, role="member")
    f.QueueFactory(name=f"ext-{uuid.uuid4().hex[:8]}")
    return f.api_token_for(user, team)
