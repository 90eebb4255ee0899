"""Commands that bring logs from elsewhere: ``sync`` (an offline spool) and ``import``
(TensorBoard event files, a table of points). Bad input: one line on stderr, exit 2."""

from __future__ import annotations

import argparse
import os
import sys

URL_ENV, TOKEN_ENV = "STAGEWISE_URL", "STAGEWISE_TOKEN"


def add_commands(sub) -> None:
    s = sub.add_parser("sync", help="upload an offline spool directory to a Stagewise server")
    s.add_argument("dirs", nargs="+", metavar="DIR", help="spool directories (one run each)")
    _server_args(s)
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(handler=cmd_sync)
    try:
        from trainers.imports import add_import_command
    except ImportError:  # the importers are optional
        return
    add_import_command(sub, _server_args)


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-to", metavar="URL",
                   help=f"the Stagewise server (default: ${URL_ENV}, or the URL the spool "
                   f"recorded); API token from ${TOKEN_ENV}")  # fmt: skip


def server_settings(args, recorded: str = "") -> tuple[str, str] | str:
    """(url, token), or the reason they cannot be used."""
    url = (args.report_to or os.environ.get(URL_ENV, "") or recorded).strip().rstrip("/")
    if not url:
        return f"no server: pass --report-to URL or set ${URL_ENV}"
    if not url.startswith(("http://", "https://")):
        return f"--report-to: not an http(s) URL: {url!r}"
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        return f"no API token: set ${TOKEN_ENV} (Stagewise: Settings, API tokens)"
    return url, token


def cmd_sync(args) -> int:
    from trainers.remote import StagewiseError
    from trainers.spool import SpoolError, read_spool
    from trainers.sync import sync_spool

    failed = 0
    for d in args.dirs:
        try:
            meta, _ = read_spool(d)
            settings = server_settings(args, meta.get("url") or "")
            if isinstance(settings, str):
                print(f"error: {settings}", file=sys.stderr)
                return 2
            result = sync_spool(d, *settings, progress=not args.no_progress)
        except (SpoolError, StagewiseError) as e:
            print(f"error: {d}: {e}", file=sys.stderr)
            failed += 1
            continue
        if result.already:
            print(f"{d}: already synced to run {result.run_id}")
        else:
            print(f"{d}: run {result.run_id}: stored {result.points:,} points "
                  f"({result.events} events)")  # fmt: skip
    return 1 if failed else 0
