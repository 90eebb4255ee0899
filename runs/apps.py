from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Stagewise runs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from runs import signals  # noqa: F401 - connects the receivers
