class QueueAccessDenied(Exception):
    """The run's team may not use the chosen queue (API: 403 with the reason)."""


class Conflict(Exception):
    """The request does not fit the run's current state (API: 409 with the reason)."""


class RunCanceled(Conflict):
    """An external run was canceled in Stagewise: its client should stop (API: 409)."""

    def __init__(self) -> None:
        super().__init__("run canceled")
