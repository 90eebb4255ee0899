"""``manage.py bootstrap [--demo]``: migrations, the first admin, the default team and queue,
the example pipelines; idempotent (a second call changes nothing). ``up`` runs it on every
start; a multi-machine deployment runs it once as a one-shot service (docker/compose.yml)."""

from __future__ import annotations

import os

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Apply migrations and create what a first start needs (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--demo", action="store_true", help="also submit a demo run")

    def handle(self, *args, **opts) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        from runs.services.bootstrap import bootstrap_install
        from runs.services.demo import seed_examples, submit_demo_run

        given = os.environ.get("STAGEWISE_ADMIN_PASSWORD") or None
        result = bootstrap_install(admin_password=given)
        if result.admin_username:
            shown = "(from STAGEWISE_ADMIN_PASSWORD)" if given else result.admin_password
            self.stdout.write(
                f"First start: admin login is  {result.admin_username} / {shown}  "
                "(shown once; change it in /admin/)"
            )
        seed_examples(team=result.team)
        if opts["demo"]:
            run = submit_demo_run(team=result.team, queue=result.queue)
            self.stdout.write(f"Demo run #{run.pk} submitted: {run.name}")
