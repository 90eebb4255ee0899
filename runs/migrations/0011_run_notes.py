from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0010_data_roots"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="notes",
            field=models.TextField(blank=True, help_text="free text the team keeps about the run"),
        ),
    ]
