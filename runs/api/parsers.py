"""orjson for the API's JSON bodies: metric batches are large and json.loads was a visible
share of a 10,000-point POST. NaN/Infinity literals are refused by orjson (a 400)."""

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class OrjsonParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
