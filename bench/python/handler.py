"""The gasdetector function as the original system ran it: boto3 iot-data publish and a
requests POST to OpenSearch. Baseline for the cold-start and warm-path benchmarks; it does
the same work as the Rust function for one reading (a warning per tripped rule, one
indexed document), without the Rust function's validation and retries."""

import base64
import datetime
import json
import os

import boto3
import requests

RULES = {"no2": 88.0, "co": 50.0, "c2h5oh": 1000.0, "h2": 4000.0}

iot = boto3.client(
    "iot-data",
    endpoint_url=os.environ["AWS_ENDPOINT_URL_IOT_DATA_PLANE"],
    region_name=os.environ.get("AWS_REGION", "us-east-1"),
)
session = requests.Session()
OPENSEARCH_URL = os.environ["OPENSEARCH_URL"].rstrip("/")
INDEX = os.environ.get("INDEX", "gasdetect-python")


def handler(event, context):
    body = event.get("body") if isinstance(event, dict) and "body" in event else event
    if isinstance(event, dict) and event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    reading = json.loads(body) if isinstance(body, str) else body
    groupid = str(reading["groupid"])
    warnings = []
    for measure, high in RULES.items():
        if measure in reading and float(reading[measure]["value"]) >= high:
            warnings.append(measure)
            iot.publish(
                topic="pi/" + groupid,
                qos=1,
                payload=json.dumps({
                    "warning": measure + " warning",
                    "sensor": "gasdetector",
                    "groupid": groupid,
                    "measure": measure,
                    "value": float(reading[measure]["value"]),
                    "threshold": high,
                    "bound": "high",
                }),
            )
    doc = dict(reading)
    doc["date"] = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
    doc["warnings"] = warnings
    r = session.post(OPENSEARCH_URL + "/" + INDEX + "/_doc", json=doc, timeout=10)
    r.raise_for_status()
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"status": "ok", "id": r.json().get("_id"), "warnings": warnings}),
    }
