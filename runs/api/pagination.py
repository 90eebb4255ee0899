"""Limit/offset pagination that refuses bad values instead of guessing: DRF's falls back to
the default for ``limit=abc`` or ``-1``, clamps nothing without ``max_limit``, and passed
``limit=99999999999999999999`` to Postgres (a bigint overflow, a 500)."""

from __future__ import annotations

from rest_framework import pagination

from runs.input_checks import int_value

MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request):
        raw = request.query_params.get(self.limit_query_param)
        if raw in (None, ""):  # absent or empty: the default, as for the filters
            return self.default_limit
        return int_value(raw, self.limit_query_param, min_value=1, max_value=self.max_limit)

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param)
        if raw in (None, ""):
            return 0
        return int_value(raw, self.offset_query_param, min_value=0, max_value=MAX_OFFSET)

    def get_schema_operation_parameters(self, view):
        # The bounds get_limit/get_offset enforce, so that the schema promises no more.
        params = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0, "maximum": MAX_OFFSET},
        }
        for param in params:
            param["schema"].update(bounds.get(param["name"], {}))
            if param["name"] == self.limit_query_param:
                param["description"] = (
                    f"results per page (1 to {self.max_limit}; default {self.default_limit})"
                )
        return params

    def get_paginated_response_schema(self, schema):
        # OpenAPI 3.1 (runs/api/schema.py): null is a type, not ``nullable``.
        link = {"type": ["string", "null"], "format": "uri"}
        return {
            "type": "object",
            "required": ["count", "next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "minimum": 0, "description": "results in all pages"},
                "next": {**link, "description": "the next page, or null"},
                "previous": {**link, "description": "the previous page, or null"},
                "results": schema,
            },
        }
