import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0014_worker_registry")]

    operations = [
        migrations.CreateModel(
            name="RunMergeParent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("stage_index", models.PositiveSmallIntegerField()),
                (
                    "position",
                    models.PositiveSmallIntegerField(help_text="J in stages.N.init_merge.J"),
                ),
                (
                    "weight",
                    models.FloatField(
                        help_text="as written in the plan (merges normalise the weights)"
                    ),
                ),
                (
                    "reference",
                    models.CharField(help_text="run:<run_id>@<step>", max_length=100),
                ),
                (
                    "checkpoint",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="merged_into",
                        to="runs.checkpoint",
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="merge_parents",
                        to="runs.run",
                    ),
                ),
            ],
            options={
                "ordering": ["run", "stage_index", "position"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("run", "stage_index", "position"),
                        name="runmergeparent_unique_entry",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("weight__gt", 0)), name="runmergeparent_weight_gt_0"
                    ),
                ],
            },
        ),
    ]
