from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0013_run_free_form_config")]

    operations = [
        migrations.CreateModel(
            name="Worker",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(help_text="Celery node name@host", max_length=200, unique=True)),
                ("host", models.CharField(max_length=200)),
                ("pid", models.PositiveIntegerField()),
                ("queues", models.JSONField(default=list, help_text="queue names it consumes")),
                ("devices", models.JSONField(default=list, help_text='[{"kind": "cuda"|"cpu", "name", "memory_bytes"}, ...]')),
                ("memory_bytes", models.BigIntegerField(blank=True, help_text="host memory", null=True)),
                ("version", models.CharField(blank=True, max_length=100)),
                ("state", models.CharField(choices=[("online", "Online"), ("lost", "Lost (no heartbeat)"), ("stopped", "Stopped")], default="online", max_length=10)),
                ("started_at", models.DateTimeField()),
                ("heartbeat_at", models.DateTimeField(db_index=True)),
                ("stopped_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"ordering": ["name"]},
        ),
    ]
