"""Serializer fields for JSON bodies that take only the JSON type the OpenAPI schema names.

DRF's fields coerce: a CharField takes 5 (as "5"), an IntegerField "5" and 5.0, a
BooleanField "yes" and 1. A client reading the schema (``type: string``) cannot know that,
and a typo'd type is then silently accepted. Query parameters, which are always strings,
keep DRF's fields."""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# In the schema as its ``pattern``: not empty and not only (ASCII) spaces. An explicit class,
# not \S, which Python and the regex engines of JSON Schema validators read differently.
NOT_BLANK = RegexValidator(r"[^ \t\n\r\f\v]", "must not be blank")


class StrictCharField(serializers.CharField):
    """Also kept as sent (no trimming), so that lengths are what the schema counts."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.INT)
class TeamPipelineField(StrictPrimaryKeyRelatedField):
    """A pipeline of the requesting user's teams: another team's id answers exactly like an
    id that does not exist (no existence oracle)."""

    def get_queryset(self):
        from runs.models import Pipeline
        from runs.selectors.teams import team_ids_for

        request = self.context.get("request")
        user = getattr(request, "user", None)
        if user is None:
            return Pipeline.objects.none()
        return Pipeline.objects.filter(team_id__in=team_ids_for(user))


class StrictSlugRelatedField(serializers.SlugRelatedField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
