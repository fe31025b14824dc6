"""Schemathesis hooks for tests/tests/schemathesis.rs (the contract fuzz run).

Three checks replace built-in ones whose rule differs from the contract on purpose, and a
hook records every answer so the Rust test can prove that nothing the fuzzer sent left a
document or a message it should not:

- `server_errors_are_503_with_retry_after` (instead of `not_a_server_error`): the contract
  allows one 5xx, 503 with Retry-After ("resend later"); any other 5xx is a failure.
- `answers_follow_the_request_schema` (instead of `negative_data_rejection` and
  `positive_data_acceptance`): a batch is judged per item (DESIGN.md: invalid items are
  answered in `items` and the valid ones are stored, with HTTP 200), so the built-in
  "schema-violating request must get a 4xx" would fail on every batch with one bad item.
  This check is stricter: it validates the body the fuzzer sent against the document's
  request schema itself, and requires a 400/413 for an invalid single reading or body, a
  2xx/503 for a valid one, and for a batch an `items` entry per reading whose status agrees
  with that reading's own validity. One exception, by design: a number beyond what a
  64-bit float holds (e.g. a 400-digit integer) makes the whole body unparseable for the
  function (400, field `body`) even inside a batch; the document refuses such numbers too
  (each numeric field has a maximum), so the request is refused either way.
- `unsigned_requests_are_403` (instead of `missing_required_header`): a request without
  credentials to an IAM-authorized route (`sigv4`, `/things/{thing}/<sensor>`) gets what
  API Gateway answers, 403 `Missing Authentication Token`, not the 401 the built-in check
  expects; and an unsigned request is never stored.

Environment: CONTRACT_DOCUMENT (api/openapi.yaml), CONTRACT_RECORD (a JSON-lines file the
hook appends one line per answer to: route, status, ids of the readings the answer says
are stored).
"""

import json
import os

import jsonschema_rs
import schemathesis
import yaml
from schemathesis.core import NOT_SET

with open(os.environ["CONTRACT_DOCUMENT"], encoding="utf-8") as file:
    DOCUMENT = yaml.safe_load(file)

SCHEMA_NAMES = {"/gasdetector": "Gasdetector", "/dust": "Dust", "/temp": "Temp"}


def _validator(name):
    schema = {"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


REQUEST = {route: _validator(f"{name}Request") for route, name in SCHEMA_NAMES.items()}
READING = {route: _validator(f"{name}Reading") for route, name in SCHEMA_NAMES.items()}
STORED = {"stored", "already_stored"}


def _json(response):
    try:
        return json.loads(response.content)
    except (ValueError, TypeError):
        return None


def _beyond_f64(value):
    """Whether the JSON holds a number a 64-bit float cannot hold (serde_json refuses it)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= 2**1024
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return any(_beyond_f64(v) for v in value)
    if isinstance(value, dict):
        return any(_beyond_f64(v) for v in value.values())
    return False


def _header(response, name):
    values = response.headers.get(name.lower()) or []
    return values[0] if values else None


@schemathesis.check
def server_errors_are_503_with_retry_after(ctx, response, case):
    status = response.status_code
    if status >= 500 and not (status == 503 and _header(response, "retry-after")):
        raise AssertionError(f"{status} is a server error the contract does not allow")


@schemathesis.check
def answers_follow_the_request_schema(ctx, response, case):
    route = case.operation.path
    if case.method.upper() != "POST" or route not in REQUEST or response.status_code == 403:
        return None  # other methods (405) and missing keys are other checks' business
    status = response.status_code
    answer = _json(response)
    body = case.body
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            body = NOT_SET  # not JSON: refused like a missing body
    if body is NOT_SET:
        if status != 400:
            raise AssertionError(f"a request without a JSON body got {status}, expected 400")
        return None
    if _beyond_f64(body):
        if status != 400 or not isinstance(answer, dict) or answer.get("field") != "body":
            raise AssertionError(f"a number beyond f64 got {status}: {answer}")
        return None
    if isinstance(body, list) and 1 <= len(body) <= 500:
        if status not in (200, 503) or not isinstance(answer, dict):
            raise AssertionError(f"a batch of {len(body)} got {status}, expected 200 or 503")
        items = answer.get("items")
        if not isinstance(items, list) or len(items) != len(body):
            raise AssertionError(f"a batch of {len(body)} was answered with {items!r}")
        for index, (reading, item) in enumerate(zip(body, items)):
            valid = READING[route].is_valid(reading)
            refused = item.get("status") == "invalid"
            if valid == refused:
                what = "refused a valid" if refused else "accepted an invalid"
                raise AssertionError(f"item {index}: the function {what} reading: {item}")
        return None
    valid = REQUEST[route].is_valid(body)
    if valid and status not in (200, 503):
        raise AssertionError(f"a reading valid by the document got {status}: {answer}")
    if not valid and status not in (400, 413):
        raise AssertionError(f"a reading invalid by the document got {status}: {answer}")
    return None


@schemathesis.check
def unsigned_requests_are_403(ctx, response, case):
    if not case.operation.path.startswith("/things/"):
        return None
    if "authorization" in {name.lower() for name in (case.headers or {})}:
        return None
    if response.status_code != 403:
        raise AssertionError(f"an unsigned request to an IAM route got {response.status_code}")
    if (_json(response) or {}).get("message") != "Missing Authentication Token":
        raise AssertionError(f"an unsigned request got {response.text!r}, not API Gateway's answer")
    return None


@schemathesis.hook
def after_call(context, case, response):
    answer = _json(response)
    ids = []
    if isinstance(answer, dict):
        if answer.get("status") == "ok" and isinstance(answer.get("id"), str):
            ids.append(answer["id"])
        for item in answer.get("items") or []:
            if isinstance(item, dict) and item.get("status") in STORED:
                ids.append(item.get("id"))
    line = {"method": case.method, "route": case.operation.path, "status": response.status_code, "stored": ids}
    if response.status_code >= 500:
        line["answer"] = answer
        line["body"] = case.body if not isinstance(case.body, bytes) else repr(case.body)
    with open(os.environ["CONTRACT_RECORD"], "a", encoding="utf-8") as record:
        record.write(json.dumps(line) + "\n")
