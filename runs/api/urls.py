from django.urls import path

from runs.api import views, views_analysis, views_external

urlpatterns = [
    path("runs/", views.RunListCreate.as_view(), name="api-runs"),
    path("runs/<int:run_id>/", views.RunDetail.as_view(), name="api-run"),
    path("runs/<int:run_id>/cancel/", views.RunCancel.as_view(), name="api-run-cancel"),
    path("runs/<int:run_id>/fork/", views.RunFork.as_view(), name="api-run-fork"),
    path("runs/<int:run_id>/checkpoints/", views.RunCheckpoints.as_view(), name="api-run-ckpts"),
    path(
        "runs/<int:run_id>/stages/<int:index>/",
        views.RunStageReport.as_view(),
        name="api-run-stage-report",
    ),
    path(
        "runs/<int:run_id>/stages/",
        views_external.RunStageDeclare.as_view(),
        name="api-run-stage-declare",
    ),
    path("runs/<int:run_id>/metrics/", views.RunMetrics.as_view(), name="api-run-metrics"),
    path("runs/<int:run_id>/series/", views.RunSeries.as_view(), name="api-run-series"),
    path("runs/<int:run_id>/export/", views.RunExport.as_view(), name="api-run-export"),
    path(
        "runs/<int:run_id>/analysis/",
        views_analysis.RunAnalysisView.as_view(),
        name="api-run-analysis",
    ),
    path("runs/<int:run_id>/lr-law/", views_analysis.RunLrLaw.as_view(), name="api-run-lr-law"),
    path(
        "runs/<int:run_id>/lr-law/what-if/",
        views_analysis.RunLrLawWhatIf.as_view(),
        name="api-run-lr-law-what-if",
    ),
    path("pipelines/", views.PipelineListCreate.as_view(), name="api-pipelines"),
    path("pipelines/<int:pipeline_id>/", views.PipelineDetail.as_view(), name="api-pipeline"),
    path("queues/", views.QueueList.as_view(), name="api-queues"),
]

# Personal API tokens (session only).
from runs.api import views_tokens  # noqa: E402

urlpatterns += [
    path("tokens/", views_tokens.TokenListCreate.as_view(), name="api-tokens"),
    path("tokens/<int:token_id>/", views_tokens.TokenDetail.as_view(), name="api-token"),
]

# Datasets (upload, versions, preview, download, delete) and the workers that serve the queues.
from runs.api import views_datasets, views_workers  # noqa: E402

_version = "datasets/<int:dataset_id>/versions/<int:version>/"
urlpatterns += [
    path("datasets/", views_datasets.DatasetListCreate.as_view(), name="api-datasets"),
    path("datasets/<int:dataset_id>/", views_datasets.DatasetDetail.as_view(), name="api-dataset"),
    path(_version, views_datasets.DatasetVersionDetail.as_view(), name="api-dataset-version"),
    path(
        _version + "preview/",
        views_datasets.DatasetVersionPreview.as_view(),
        name="api-dataset-version-preview",
    ),
    path(
        _version + "download/",
        views_datasets.DatasetVersionDownload.as_view(),
        name="api-dataset-version-download",
    ),
    path("workers/", views_workers.WorkerList.as_view(), name="api-workers"),
]

# Dashboard endpoints (frontend/), kept in their own module.
from runs.api import views_ui  # noqa: E402

urlpatterns += [
    path("ui/runs/", views_ui.UiRunRows.as_view(), name="api-ui-runs"),
    path("ui/runs/<int:run_id>/", views_ui.UiRunSummary.as_view(), name="api-ui-run"),
    path("ui/runs/<int:run_id>/analysis/", views_ui.UiRunAnalysis.as_view(), name="api-ui-gaps"),
    path("ui/plan-preview/", views_ui.UiPlanPreview.as_view(), name="api-ui-plan-preview"),
]

# The run page's events, forks, failure, x-axis maps and rendered notes (read-only).
from runs.api import views_run_events  # noqa: E402

urlpatterns += [
    path("runs/<int:run_id>/events/", views_run_events.RunEvents.as_view(), name="api-run-events"),
    path("runs/<int:run_id>/notes/", views_run_events.RunNotes.as_view(), name="api-run-notes"),
]

# Many runs in one request (the compare page, the runs list): runs/api/views_bulk.py.
from runs.api import views_bulk  # noqa: E402

urlpatterns += [
    path("series/", views_bulk.SeriesBulk.as_view(), name="api-series-bulk"),
    path("ui/compare/", views_bulk.UiCompareRuns.as_view(), name="api-ui-compare"),
]
