"""Model signals, for changes made outside the services (the Django admin, ``manage.py shell``)."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from runs.models import Queue
from runs.services.queues import queue_consumers_add_on_commit


@receiver(post_save, sender=Queue, dispatch_uid="runs.queue_consumers")
def queue_saved(sender, instance: Queue, raw: bool = False, **kwargs) -> None:
    # Every save, not only creation: a rename is a new queue name for the workers.
    if not raw:
        queue_consumers_add_on_commit(name=instance.name)
