"""One error shape for the whole API: {"detail": ..., "errors": {field: [reasons]}}."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from runs.models import InvalidTransition
from runs.services.errors import Conflict


def exception_handler(exc, context):
    if isinstance(exc, InvalidTransition | Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response({"detail": "invalid input", "errors": errors}, status=400)
    return drf_exception_handler(exc, context)
