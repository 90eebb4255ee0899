from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0012_analysis_every_eval_metric")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="free_form",
            field=models.BooleanField(
                default=False,
                help_text="an external run without a plan: its client declares the stages as "
                "they happen (trainers.client), and its last stage is open",
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="config",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="the client's configuration (hyperparameters) as logged",
            ),
        ),
    ]
