def dispatch() -> int:
    """Start queued stage runs; filled in by the execution layer."""
    return 0
