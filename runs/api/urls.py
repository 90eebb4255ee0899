from django.urls import path

from runs.api import views, views_analysis

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

# Dashboard endpoints (frontend/), kept in their own module.
from runs.api import views_ui  # noqa: E402

urlpatterns += [
    path("ui/runs/", views_ui.UiRunRows.as_view(), name="api-ui-runs"),
    path("ui/runs/<int:run_id>/", views_ui.UiRunSummary.as_view(), name="api-ui-run"),
    path("ui/runs/<int:run_id>/analysis/", views_ui.UiRunAnalysis.as_view(), name="api-ui-gaps"),
    path("ui/plan-preview/", views_ui.UiPlanPreview.as_view(), name="api-ui-plan-preview"),
]
