"""A run's raw points as CSV, streamed by PostgreSQL (``COPY .. TO STDOUT``): the server
formats the rows and the web process only passes chunks through, so an export of millions of
points never sits in memory."""

from __future__ import annotations

from collections.abc import Iterator

from django.db import connection
from psycopg import sql

EXPORT_COLUMNS = ("key", "step", "value", "wall_time", "stage")
CHUNK_BYTES = 64 * 1024


def export_csv(*, run_id: int, keys: list[str] | None = None) -> Iterator[bytes]:
    """CSV with a header row, ordered by key then step. ``keys`` narrows it to some series.
    A point's stage follows from its step (stage i owns start < step <= end; step 0 is
    stage 0's), the same rule as everywhere else."""
    query = sql.SQL(
        """COPY (
            SELECT s.key, p.step, p.value, p.wall_time, sr.name AS stage
            FROM runs_metricpoint p
            JOIN runs_series s ON s.id = p.series_id
            LEFT JOIN runs_stagerun sr ON sr.run_id = s.run_id AND p.step <= sr.end_step
                 AND (p.step > sr.start_step OR (p.step = 0 AND sr.stage_index = 0))
            WHERE s.run_id = {run_id} AND ({keys}::text[] IS NULL OR s.key = ANY({keys}::text[]))
            ORDER BY s.key, p.step
        ) TO STDOUT (FORMAT csv, HEADER)"""
    ).format(run_id=sql.Literal(run_id), keys=sql.Literal(keys))
    buffer = bytearray()
    with connection.cursor() as cur, cur.cursor.copy(query) as copy:
        for row in copy:  # PostgreSQL sends one message per row: pass on ~64 KiB at a time
            buffer += row
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)
