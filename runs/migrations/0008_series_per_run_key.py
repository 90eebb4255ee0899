"""One series per (run, key): a point is identified by (run, key, step), whatever stage label
came with it. Series of one key that were split by stage (or by "no stage") are merged into
the oldest one; where two held the same step, the later-written point is kept. Rollups of
merged series are rebuilt from their points. Points at steps >= 2**53 (only reachable through
the old unbounded API) are dropped: no plan can reach them."""

from django.db import migrations, models

# runs.services.ingest_batch at the time of writing (kept here: a migration must not change
# when the code does).
ROLLUP_BASE, ROLLUP_FANOUT, ROLLUP_LEVELS = 16, 4, 10


def _rebuild_sql() -> str:
    parts = [
        f"""INSERT INTO runs_seriesrollup
              (series_id, level, bucket, min_value, max_value, last_step, last_value, count)
            SELECT series_id, 0, step / {ROLLUP_BASE}, min(value), max(value), max(step),
                   (array_agg(value ORDER BY step DESC))[1], count(*)
            FROM runs_metricpoint WHERE series_id IN (SELECT keep_id FROM series_keep)
            GROUP BY series_id, step / {ROLLUP_BASE}"""
    ]
    for level in range(1, ROLLUP_LEVELS):
        parts.append(
            f"""INSERT INTO runs_seriesrollup
                  (series_id, level, bucket, min_value, max_value, last_step, last_value, count)
                SELECT series_id, {level}, bucket / {ROLLUP_FANOUT}, min(min_value),
                       max(max_value), max(last_step),
                       (array_agg(last_value ORDER BY last_step DESC))[1], sum(count)
                FROM runs_seriesrollup
                WHERE level = {level - 1} AND series_id IN (SELECT keep_id FROM series_keep)
                GROUP BY series_id, bucket / {ROLLUP_FANOUT}"""
        )
    return ";\n".join(parts)


MERGE = f"""
DELETE FROM runs_metricpoint WHERE step >= 9007199254740992;
CREATE TEMP TABLE series_keep AS
    SELECT run_id, key, min(id) AS keep_id FROM runs_series GROUP BY run_id, key
    HAVING count(*) > 1;
CREATE TEMP TABLE series_merge AS
    SELECT s.id AS old_id, k.keep_id FROM runs_series s
    JOIN series_keep k ON k.run_id = s.run_id AND k.key = s.key AND s.id <> k.keep_id;
INSERT INTO runs_metricpoint AS p (series_id, step, value, wall_time)
    SELECT DISTINCT ON (m.keep_id, o.step) m.keep_id, o.step, o.value, o.wall_time
    FROM runs_metricpoint o JOIN series_merge m ON o.series_id = m.old_id
    ORDER BY m.keep_id, o.step, o.wall_time DESC
ON CONFLICT (series_id, step) DO UPDATE
    SET value = EXCLUDED.value, wall_time = EXCLUDED.wall_time
    WHERE p.wall_time < EXCLUDED.wall_time;
DELETE FROM runs_metricpoint WHERE series_id IN (SELECT old_id FROM series_merge);
DELETE FROM runs_seriesrollup
    WHERE series_id IN (SELECT old_id FROM series_merge)
       OR series_id IN (SELECT keep_id FROM series_keep);
{_rebuild_sql()};
UPDATE runs_series s SET first_step = a.lo, last_step = a.hi, count = a.n
    FROM (SELECT series_id, min(step) lo, max(step) hi, count(*) n FROM runs_metricpoint
          WHERE series_id IN (SELECT keep_id FROM series_keep) GROUP BY series_id) a
    WHERE s.id = a.series_id;
DELETE FROM runs_series WHERE id IN (SELECT old_id FROM series_merge);
DROP TABLE series_merge;
DROP TABLE series_keep;
"""


class Migration(migrations.Migration):
    dependencies = [("runs", "0007_pipeline_plan_document")]

    operations = [
        migrations.RunSQL(MERGE, migrations.RunSQL.noop),
        migrations.RemoveConstraint(model_name="series", name="series_unique_run_stage_key"),
        migrations.RemoveIndex(model_name="series", name="runs_series_run_id_7af9b9_idx"),
        migrations.RemoveField(model_name="series", name="stage_run"),
        migrations.AddConstraint(
            model_name="metricpoint",
            constraint=models.CheckConstraint(
                condition=models.Q(("step__lt", 9007199254740992)), name="point_step_lt_2_53"
            ),
        ),
        migrations.AddConstraint(
            model_name="series",
            constraint=models.UniqueConstraint(fields=("run", "key"), name="series_unique_run_key"),
        ),
    ]
