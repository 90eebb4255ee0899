from runs.models.access import DataRoot, RunDatasetVersion
from runs.models.analysis import RunAnalysis
from runs.models.datasets import Dataset, DatasetVersion
from runs.models.merges import RunMergeParent
from runs.models.metrics import MetricPoint, Series, SeriesRollup
from runs.models.pipelines import Pipeline
from runs.models.queues import Queue, Worker, WorkerLease, WorkerState
from runs.models.runs import Checkpoint, InvalidTransition, Run, RunState, StageRun, StageState
from runs.models.teams import Membership, Role, Team
from runs.models.tokens import ApiToken

__all__ = [
    "ApiToken",
    "Checkpoint",
    "DataRoot",
    "Dataset",
    "DatasetVersion",
    "InvalidTransition",
    "Membership",
    "MetricPoint",
    "Pipeline",
    "Queue",
    "Role",
    "RunAnalysis",
    "Run",
    "RunDatasetVersion",
    "RunMergeParent",
    "RunState",
    "Series",
    "SeriesRollup",
    "StageRun",
    "StageState",
    "Team",
    "Worker",
    "WorkerLease",
    "WorkerState",
]
