"""The OpenAPI document (/api/schema/): drf-spectacular postprocessing hooks (settings
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]).

- ``add_plan_components``: a trainers plan is typed by its own JSON schema
  (``trainers.plan.plan_schema()``, pydantic): the component ``Plan`` and one ``Plan<Def>``
  component per definition in it (``PlanStageSpec``...). Fields declared with
  ``PLAN_REF``/``PLAN_STAGE_REF`` point at them, and so does any other property named ``plan``
  left untyped by its serializer.
- ``json_request_bodies``: JSON bodies are documented as JSON only (the form parsers that
  browsers' forms use stay accepted, undocumented: a plan does not fit in a form).
- ``empty_query_values``: an optional query parameter sent empty (``?limit=``, what an HTML
  form sends for an empty field) means the same as leaving it out, everywhere in this API
  (the filters, the pagination, DRF's query serializers): ``allowEmptyValue`` says so.
- ``add_error_responses``: the error answers every operation can give, in the API's error
  shape (``ErrorOut``; a 400 as ``InvalidInputOut``, see there): 400, 401, 403 and 429
  everywhere (a query value with NUL is a 400 on any URL, throttling applies to every call),
  404 where the path names an object, 413 and 415 where there is a body. An operation's own
  declaration of a code wins.

And the views of /api/schema/, /api/docs/ (Swagger UI) and /api/redoc/: for signed-in users
and token holders only, their errors as JSON.

The document is OpenAPI 3.1 (JSON Schema 2020-12), the dialect pydantic writes."""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer

PLAN_COMPONENT = "Plan"
PLAN_REF = {"$ref": f"#/components/schemas/{PLAN_COMPONENT}"}
PLAN_STAGE_REF = {"$ref": f"#/components/schemas/{PLAN_COMPONENT}StageSpec"}
ERROR_COMPONENT = "ErrorOut"
ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")

# The same shape as serializers.ErrorOut (used when no view references it).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every 4xx answer: a reason, and for invalid input the reasons per field.",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "description": "invalid input: field -> reasons",
        },
    },
    "required": ["detail"],
}

INVALID_COMPONENT = "InvalidInputOut"
INVALID_REF = {"$ref": f"#/components/schemas/{INVALID_COMPONENT}"}
# A 400 comes in the API's shape ({"detail": "invalid input", "errors": {...}}: services,
# query checks, the JSON parser) or, for a DRF serializer's field errors, as DRF writes them:
# {field: [reasons]} at the top level, nested for nested fields.
INVALID_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Invalid input. Either the API's shape, `detail` with `errors` "
    "(field -> reasons; nested fields by dotted path), or a serializer's field errors at the "
    "top level (`{field: [reasons]}`, nested for nested fields).",
    "properties": {
        "detail": {"type": "string"},
        "errors": ERROR_SCHEMA["properties"]["errors"],
    },
    "additionalProperties": True,
}

STANDARD_ERRORS = {
    "400": "Invalid input: `errors` names each bad field (a query value with NUL, a value out "
    "of range, a body that is not valid JSON or nests too deep).",
    "401": "No credentials, or an invalid, expired or revoked token (`WWW-Authenticate: Bearer`).",
    "403": "Not allowed: a viewer's write, a team you are not in, a queue your team may not "
    "use, an API token where a session is needed, a session request without its CSRF token.",
    "404": "Not found, or not visible to your teams (the same answer either way).",
    "413": "The request body is over the limit (STAGEWISE_MAX_BODY_BYTES; uploads: "
    "STAGEWISE_MAX_UPLOAD_BYTES).",
    "415": "The body's Content-Type is not one this operation reads.",
    "429": "Over the rate limit; `Retry-After` says when to try again.",
}


def plan_components() -> dict[str, dict[str, Any]]:
    """``Plan`` and its definitions as OpenAPI components (refs rewritten)."""
    from trainers.plan import plan_schema

    schema = copy.deepcopy(plan_schema())
    defs = schema.pop("$defs", {})
    names = {name: _plan_name(name) for name in defs}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                    out[key] = f"#/components/schemas/{names[value.removeprefix('#/$defs/')]}"
                else:
                    out[key] = rewrite(value)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    out = {names[name]: rewrite(d) for name, d in defs.items()}
    top = rewrite(schema)
    top["description"] = (
        "A staged training plan, validated by trainers/plan.py. The schema gives its shape; "
        "the server also checks its rules (stage budgets, replay of earlier stages, what your "
        "team may read) and answers 400 naming each bad field by its dotted path."
    )
    out[PLAN_COMPONENT] = top
    return out


def _plan_name(name: str) -> str:
    return name if name.startswith(PLAN_COMPONENT) else f"{PLAN_COMPONENT}{name}"


def _untyped(prop: Any) -> bool:
    return isinstance(prop, dict) and not (set(prop) - {"description", "readOnly", "writeOnly"})


def add_plan_components(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(plan_components())
    for name, component in schemas.items():
        if name.startswith(PLAN_COMPONENT):
            continue
        props = component.get("properties") or {}
        if _untyped(props.get("plan")):
            # e.g. a serializer's plain JSONField named plan (what-if, plan preview)
            props["plan"] = {**props["plan"], **PLAN_REF}
    return result


def _op_has_path_params(op: dict, path_item: dict) -> bool:
    params = [*(path_item.get("parameters") or []), *(op.get("parameters") or [])]
    return any(p.get("in") == "path" for p in params)


def add_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_COMPONENT, copy.deepcopy(ERROR_SCHEMA))
    schemas.setdefault(INVALID_COMPONENT, copy.deepcopy(INVALID_SCHEMA))
    for path_item in (result.get("paths") or {}).values():
        for method in METHODS:
            op = path_item.get(method)
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            codes = ["400", "401", "403", "429"]
            if _op_has_path_params(op, path_item):
                codes.append("404")
            if "requestBody" in op:
                codes += ["413", "415"]
            for code in codes:
                if code in responses:
                    continue
                answer: dict[str, Any] = {
                    "description": STANDARD_ERRORS[code],
                    "content": {
                        "application/json": {"schema": INVALID_REF if code == "400" else ERROR_REF}
                    },
                }
                if code == "401":
                    answer["headers"] = {
                        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
                    }
                if code == "429":
                    answer["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
                responses[code] = answer
            op["responses"] = dict(sorted(responses.items()))
    return result


def empty_query_values(result, generator, request, public):
    for path_item in (result.get("paths") or {}).values():
        for method in METHODS:
            for param in (path_item.get(method) or {}).get("parameters") or []:
                if param.get("in") == "query" and not param.get("required"):
                    param["allowEmptyValue"] = True
    return result


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def json_request_bodies(result, generator, request, public):
    for path_item in (result.get("paths") or {}).values():
        for method in METHODS:
            content = ((path_item.get(method) or {}).get("requestBody") or {}).get("content")
            if content and "application/json" in content:
                for media in FORM_TYPES:
                    content.pop(media, None)
    return result


# ------------------------------------------------------------------ the schema and docs views


class JsonErrorsMixin:
    """Errors (an anonymous 401, a throttled 429) as the API's JSON, not rendered by the
    view's YAML or HTML renderer."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400 and isinstance(getattr(response, "data", None), dict):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response


class SchemaView(JsonErrorsMixin, SpectacularAPIView):
    """The OpenAPI document (YAML; JSON with ``?format=json`` or by Accept)."""


class SwaggerView(JsonErrorsMixin, SpectacularSwaggerView):
    """Swagger UI, its assets served by this server (drf-spectacular-sidecar)."""


class RedocView(JsonErrorsMixin, SpectacularRedocView):
    """Redoc, its assets served by this server (drf-spectacular-sidecar; no web fonts)."""

    template_name = "runs/redoc.html"
