from django.urls import path

from runs.api import views

urlpatterns = [
    path("runs/", views.RunListCreate.as_view(), name="api-runs"),
    path("runs/<int:run_id>/", views.RunDetail.as_view(), name="api-run"),
    path("runs/<int:run_id>/cancel/", views.RunCancel.as_view(), name="api-run-cancel"),
    path("runs/<int:run_id>/fork/", views.RunFork.as_view(), name="api-run-fork"),
    path("runs/<int:run_id>/checkpoints/", views.RunCheckpoints.as_view(), name="api-run-ckpts"),
    path("runs/<int:run_id>/metrics/", views.RunMetrics.as_view(), name="api-run-metrics"),
    path("runs/<int:run_id>/series/", views.RunSeries.as_view(), name="api-run-series"),
    path("pipelines/", views.PipelineListCreate.as_view(), name="api-pipelines"),
    path("pipelines/<int:pipeline_id>/", views.PipelineDetail.as_view(), name="api-pipeline"),
    path("queues/", views.QueueList.as_view(), name="api-queues"),
]
