"""A minimal Lambda runtime-interface loop (urllib only), standing in for the managed
Python runtime: import the handler (init), then poll /next, call it, POST the result."""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"


def post(path, payload):
    data = json.dumps(payload).encode()
    req = urllib.request.Request(API + path, data=data, method="POST",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()


try:
    import handler  # noqa: E402  (init: boto3 and requests clients)
except Exception as e:  # report init failures like the managed runtime does
    post("/init/error", {"errorMessage": str(e), "errorType": type(e).__name__})
    raise

while True:
    with urllib.request.urlopen(API + "/invocation/next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    try:
        result = handler.handler(event, None)
        post("/invocation/" + request_id + "/response", result)
    except Exception as e:
        post("/invocation/" + request_id + "/error",
             {"errorMessage": str(e), "errorType": type(e).__name__})
