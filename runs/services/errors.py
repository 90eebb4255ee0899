class QueueAccessDenied(Exception):
    """The run's team may not use the chosen queue (API: 403 with the reason)."""
