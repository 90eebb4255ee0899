from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_run_external"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="last_report_at",
            field=models.DateTimeField(
                blank=True,
                help_text="an external run's last accepted metrics batch or stage report (its "
                "only liveness signal); null for runs our workers execute, whose leases track "
                "liveness",
                null=True,
            ),
        ),
    ]
