"""`manage.py embedded status|stop`: the embedded PostgreSQL and Redis of this data dir."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from webapp.embedded import stop_all


class Command(BaseCommand):
    help = "Show or stop the embedded PostgreSQL and Redis (used when DATABASE_URL is unset)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args, action: str, **opts):
        if not settings.STAGEWISE_EMBEDDED:
            raise CommandError("DATABASE_URL and REDIS_URL are set: no embedded services here")
        data_dir = Path(settings.STAGEWISE_DATA_DIR)
        if action == "stop":
            stop_all(data_dir)
            self.stdout.write("embedded services stopped")
        else:
            self.stdout.write(f"data dir: {data_dir}")
            self.stdout.write(f"database: {settings.DATABASE_URL}")
            self.stdout.write(f"redis:    {settings.REDIS_URL}")
