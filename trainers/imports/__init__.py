"""``python -m trainers import``: existing logs, each as a Stagewise run with stage marks.

    python -m trainers import tensorboard LOGDIR --stage 0:prose-pt --stage 600:code-cpt
    python -m trainers import table history.parquet --wide --map step=_step
    python -m trainers import table neptune.parquet      # run_id, attribute_path, ... found

``tensorboard``: every scalar tag of the event files becomes a key (``tensorboard_logs``);
each directory holding event files (LOGDIR or below) becomes its own run. ``table``: a long
table of points ``run, key, step, value[, time]`` or, with ``--wide``, a W&B-style history
(``tables``); one run per distinct run value. ``--stage STEP:NAME`` (repeatable) marks where
stage NAME starts: points at steps <= STEP belong to the stage before, ``0:NAME`` names the
first stage (``upload``). Runs are created free-form through ``trainers.client`` (``--report-to
URL`` or $STAGEWISE_URL, token from $STAGEWISE_TOKEN) and a summary is printed at the end.

Every input is read and checked before the first run is created: bad input (a missing file,
an unknown extension, a missing column, a bad ``--stage``, a step that is not a whole number)
is one line on stderr starting with ``error:`` and exit status 2; a server that refuses is
exit status 1. This module needs nothing beyond the standard library until a command runs
(``pip install 'stagewise[imports]'`` brings tensorboard and pyarrow).
"""

from __future__ import annotations

import argparse
import sys

from trainers.imports.common import BadInput, parse_map, parse_marks


def add_import_command(sub, server_args) -> None:
    """Register ``import tensorboard`` and ``import table`` on the CLI's subparsers."""
    p = sub.add_parser("import", help="import existing logs (TensorBoard event files, a table "
                       "of points) as Stagewise runs")  # fmt: skip
    kinds = p.add_subparsers(dest="import_kind", required=True, metavar="{tensorboard,table}")
    _kind(kinds, server_args, cmd_import_tensorboard, "tensorboard", "LOGDIR",
          "a log directory or one event file",
          help="TensorBoard event files: every scalar tag becomes a key",
          description="Import the scalars of TensorBoard event files. Each directory holding "
          "event files (LOGDIR itself or one below it) becomes one run, named after its path.")  # fmt: skip
    t = _kind(kinds, server_args, cmd_import_table, "table", "FILE",
              ".csv, .tsv, .jsonl, .ndjson, .json or .parquet",
              help="a table of points (CSV, JSON Lines or Parquet), one run per run value",
              description="Import a long table (run, key, step, value[, time] per row) or, "
              "with --wide, a history with one column per metric (W&B's run.history()).")  # fmt: skip
    t.add_argument("--map", action="append", default=[], metavar="ROLE=COLUMN[,...]",
                   help="the column of each role (run, key, step, value, time) when it is not "
                   "found by name, e.g. --map run=RunCol,key=metric,step=_step,value=val")  # fmt: skip
    t.add_argument("--wide", action="store_true",
                   help="one row per step: every numeric column other than step, time and run "
                   "(and names starting with '_') becomes a key")  # fmt: skip


def _kind(kinds, server_args, handler, name: str, what: str, what_help: str, **texts):
    """One ``import`` kind: its positional input, the common options, its handler."""
    p = kinds.add_parser(name, **texts)
    p.add_argument(what.lower(), metavar=what, help=what_help)
    _common_args(p, server_args)
    p.set_defaults(handler=handler)
    return p


def _common_args(p: argparse.ArgumentParser, server_args) -> None:
    p.add_argument("--stage", action="append", default=[], metavar="STEP:NAME",
                   help="stage NAME starts at STEP: steps <= STEP are the stage before (repeatable; "
                   "0:NAME names the first stage; applies to every run imported)")  # fmt: skip
    p.add_argument("--name", help="the run's name (with several runs: their names' prefix)")
    p.add_argument("--team", help="the team's slug (default: your first team)")
    p.add_argument("--prefix", default="", help="put before every key, e.g. --prefix tb/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    server_args(p)


def cmd_import_tensorboard(args) -> int:
    def read():
        from trainers.imports.tensorboard_logs import read_logdir

        return read_logdir(args.logdir, prefix=args.prefix, name=args.name)

    return _import(args, read)


def cmd_import_table(args) -> int:
    mapping: dict[str, str] = {}

    def read():
        from trainers.imports.tables import read_table

        return read_table(args.file, mapping=mapping, wide=args.wide, prefix=args.prefix,
                          name=args.name)  # fmt: skip

    try:
        mapping.update(parse_map(args.map))
    except BadInput as e:
        return _error(str(e))
    return _import(args, read)


def _import(args, read) -> int:
    """Check the arguments and read everything, then one run per source; the summary."""
    from trainers.cli_log import server_settings

    try:
        marks = parse_marks(args.stage)
        settings = server_settings(args)
        if isinstance(settings, str):
            raise BadInput(settings)
        sources, notes = read()
    except BadInput as e:
        return _error(str(e))
    except ImportError as e:
        return _error(f"{e.name or e} is not installed: pip install 'stagewise[imports]'")
    from trainers.imports.upload import send, summary, time_note
    from trainers.remote import StagewiseError

    for note in [*notes, time_note(sources)]:
        if note:
            print(f"note: {note}", file=sys.stderr)
    done, status = [], 0
    for src in sources:
        try:
            done.append(send(src, marks, url=settings[0], token=settings[1], team=args.team,
                             progress=not args.no_progress))  # fmt: skip
        except StagewiseError as e:
            print(f"error: {src.name}: {e}", file=sys.stderr)
            status = 1
            break
    if done:
        print(summary(done))
    return status


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
