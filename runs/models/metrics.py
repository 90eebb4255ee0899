"""Metric storage shaped for the hot path (DESIGN.md "Metrics: the hot path").

Points live in a narrow table whose primary key is (series, step): ingest is a COPY into a
temporary table then INSERT .. ON CONFLICT (series_id, step) DO UPDATE, so a replayed batch
never duplicates. Rollups hold min/max/last per bucket at geometrically growing bucket widths.
"""

from django.db import models
from django.db.models import F, Q

ROLLUP_BASE = 16  # steps per bucket at level 0
ROLLUP_FANOUT = 4  # each level's buckets are 4x wider than the level below
ROLLUP_LEVELS = 10  # level 9 buckets span 16 * 4**9 ≈ 4.2M steps
MAX_KEY_LENGTH = 200  # Series.key


def bucket_width(level: int) -> int:
    """Steps per rollup bucket at ``level``."""
    return ROLLUP_BASE * ROLLUP_FANOUT**level


class Series(models.Model):
    """All points of one key of one run, across its stages: a point is identified by (run,
    key, step), and the stage it belongs to follows from its step and the run's stage
    bounds (``StageRun.start_step`` < step <= ``end_step``; step 0 is stage 0's)."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="series")
    key = models.CharField(max_length=MAX_KEY_LENGTH)
    first_step = models.BigIntegerField(null=True, blank=True)
    last_step = models.BigIntegerField(null=True, blank=True)
    count = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "series"
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="series_unique_run_key"),
            models.CheckConstraint(condition=~Q(key=""), name="series_key_not_empty"),
            models.CheckConstraint(condition=Q(count__gte=0), name="series_count_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.key}"


class MetricPoint(models.Model):
    pk = models.CompositePrimaryKey("series_id", "step")
    # No database FK: its deferred per-row trigger was ~20 % of an ingest batch. Ingest only
    # writes series ids it just joined from runs_series in the same statement, and deletes
    # cascade through Django's collector (one DELETE .. WHERE series_id IN (...)).
    series = models.ForeignKey(
        Series, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    step = models.BigIntegerField()
    value = models.FloatField()
    wall_time = models.FloatField(help_text="unix seconds")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(step__gte=0), name="point_step_gte_0"),
            # trainers.plan.MAX_STEP: steps stay exact in float64 and no bucket arithmetic
            # on them overflows a bigint.
            models.CheckConstraint(condition=Q(step__lt=2**53), name="point_step_lt_2_53"),
            models.CheckConstraint(
                condition=Q(value__gt=float("-inf")) & Q(value__lt=float("inf")),
                name="point_value_finite",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.series_id}@{self.step}={self.value}"


class SeriesRollup(models.Model):
    """One bucket of a downsampled level: bucket b of level l covers steps [b*w, (b+1)*w)
    with w = ROLLUP_BASE * 4**l."""

    pk = models.CompositePrimaryKey("series_id", "level", "bucket")
    series = models.ForeignKey(  # no database FK, as for MetricPoint
        Series, on_delete=models.CASCADE, db_index=False, db_constraint=False
    )
    level = models.SmallIntegerField()
    bucket = models.BigIntegerField()
    min_value = models.FloatField()
    max_value = models.FloatField()
    last_step = models.BigIntegerField()
    last_value = models.FloatField()
    count = models.IntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(level__gte=0), name="rollup_level_gte_0"),
            models.CheckConstraint(
                condition=Q(min_value__lte=F("max_value")), name="rollup_min_le_max"
            ),
            models.CheckConstraint(condition=Q(count__gt=0), name="rollup_count_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.series_id} L{self.level} b{self.bucket}"
