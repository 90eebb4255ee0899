from django.urls import path

from frontend import views, views_fork, views_lineage, views_settings
from runs.api import views_ui

urlpatterns = [
    path("", views.runs_page, name="home"),
    path("runs/<int:run_id>/", views.run_page, name="run"),
    path("runs/<int:run_id>/lineage/", views_lineage.lineage_page, name="run-lineage"),
    path("runs/<int:run_id>/fork/<int:checkpoint_id>/", views_fork.fork_page, name="run-fork"),
    path("compare/", views.compare_page, name="compare"),
    path("pipelines/", views.pipelines_page, name="pipelines"),
    path("pipelines/new/", views.pipeline_edit, name="pipeline-new"),
    path("pipelines/<int:pipeline_id>/edit/", views.pipeline_edit, name="pipeline-edit"),
    path("datasets/", views.datasets_page, name="datasets"),
    path("datasets/upload/", views_ui.dataset_upload, name="dataset-upload"),  # the page's JSON
    path("datasets/versions/<int:version_id>/", views.dataset_version_page, name="dataset-version"),
    path("queues/", views.queues_page, name="queues"),
    path("queues/<int:queue_id>/pause/", views.queue_toggle, name="queue-toggle"),
    path("settings/tokens/", views_settings.tokens_page, name="settings-tokens"),
    path(
        "settings/tokens/<int:token_id>/revoke/",
        views_settings.token_revoke_view,
        name="settings-token-revoke",
    ),
    path("vendor/plotly-<str:version>.min.js", views.plotly_js, name="plotly-js"),
]
