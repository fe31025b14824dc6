"""Assertions on the operations part of infra/template.yaml (SAM), the counterpart of
infra/cdk/test/operations.test.ts: JSON logs, access logs and stage metrics, the alarms'
metrics and thresholds (all to the SNS topic), the dashboard, the options; the read
API's function (read-only role, its routes, the viewer key, CORS off by default), the
counterpart of the query assertions in infra/cdk/test/stack.test.ts; and each box's
identity (issue 21: the per-box SigV4 routes in api/openapi.yaml, LegacyKeyRoutes, the
registry lookup, the credentials provider's role and alias, the data rules' SQL, the
optional HTTP API's routes), the counterpart of the identity and HTTP API assertions in
infra/cdk/test/stack.test.ts; and the stream path (issue 22, IngestPath=stream: the stream, the
rule, the event source mappings, the queues, the roles, the box policy, the alarms, the
outputs; none of them with IngestPath=direct), the counterpart of infra/cdk/test/stream.test.ts.

Run by `cargo xtask infra-check` with the venv's python (cfn-lint's YAML decoder reads the
short-form intrinsics). Prints `N passed, M failed`; exits non-zero on any failure.
"""

import json
import sys
from pathlib import Path

import yaml
from cfnlint.decode import decode

TEMPLATE = Path(__file__).with_name("template.yaml")
CONTRACT = Path(__file__).parent.parent / "api" / "openapi.yaml"
SENSORS = {"Gasdetector": "gasdetector", "Dust": "dust", "Temp": "temp"}


def load():
    template, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return template


def resources(t, kind):
    return {k: v for k, v in t["Resources"].items() if v["Type"] == kind}


NO_VALUE = {"Ref": "AWS::NoValue"}


def resolve(t, **parameters):
    """The template as CloudFormation would deploy it with these parameter values (the others
    at their defaults): resources and outputs whose condition is false dropped, each `Fn::If`
    replaced by its chosen branch, `AWS::NoValue` removed. Only what the conditions use is
    evaluated (`Fn::Equals` on parameters, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`)."""
    values = {name: str(p.get("Default", "")) for name, p in t["Parameters"].items()}
    values.update({name: str(v) for name, v in parameters.items()})

    def value(x):
        if isinstance(x, dict):
            [(key, ref)] = x.items()
            assert key == "Ref" and ref in values, x
            return values[ref]
        return str(x)

    def condition(name):
        return evaluate(t["Conditions"][name])

    def evaluate(expr):
        [(key, args)] = expr.items()
        if key == "Fn::Equals":
            return value(args[0]) == value(args[1])
        if key == "Fn::Not":
            return not evaluate(args[0])
        if key == "Fn::And":
            return all(evaluate(a) for a in args)
        if key == "Fn::Or":
            return any(evaluate(a) for a in args)
        if key == "Condition":
            return condition(args)
        raise AssertionError(f"condition {expr}")

    def walk(x):
        if isinstance(x, dict):
            if set(x) == {"Fn::If"}:
                name, yes, no = x["Fn::If"]
                return walk(yes if condition(name) else no)
            out = {}
            for k, v in x.items():
                v = walk(v)
                if v != NO_VALUE:
                    out[k] = v
            return out
        if isinstance(x, list):
            return [v for v in (walk(v) for v in x) if v != NO_VALUE]
        return x

    out = json.loads(json.dumps(t))
    for section in ["Resources", "Outputs"]:
        out[section] = {k: walk(v) for k, v in out[section].items()
                        if "Condition" not in v or condition(v["Condition"])}
    return out


def environment(t, function):
    """A function's environment as Lambda sees it: the Globals' variables, then its own."""
    glob = t["Globals"]["Function"].get("Environment", {}).get("Variables", {})
    own = t["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {**glob, **own}


# What the template gives each kind of function. Each is read by that kind's settings type
# in crates/lambda/src/settings.rs (Lambda itself sets AWS_REGION and the credentials), so a
# function never sees a variable it does not use: the query function no IoT endpoint, the
# no-data check no sensor.
OPENSEARCH = {"OPENSEARCH_URL", "OPENSEARCH_AUTH", "OPENSEARCH_SERVICE", "RUST_LOG"}
INGEST_VARIABLES = OPENSEARCH | {
    "INDEX", "AWS_ENDPOINT_URL_IOT_DATA_PLANE", "TOPIC_TEMPLATE", "RULES", "ACK_MESSAGES",
    "DEVICE_TIMEZONE", "METRICS_NAMESPACE", "ALARM_MODE", "ALARM_THING_TEMPLATE", "ALARM_SHADOW",
    "LEGACY_KEY_ROUTES",
}
QUERY_VARIABLES = OPENSEARCH | {"QUERY_INDICES", "RULES", "CORS_ORIGIN", "VIEWER_KEY_IDS"}
NO_DATA_VARIABLES = OPENSEARCH | {
    "NO_DATA_AFTER", "AWS_ENDPOINT_URL_IOT_DATA_PLANE", "TOPIC_TEMPLATE", "ALARM_THING_TEMPLATE",
    "ALARM_SHADOW",
}


def test_each_function_gets_only_the_variables_its_settings_read(t):
    for name in SENSORS:
        assert set(environment(t, f"{name}Function")) == INGEST_VARIABLES, name
    assert set(environment(t, "QueryFunction")) == QUERY_VARIABLES
    assert set(environment(t, "NodataFunction")) == NO_DATA_VARIABLES


def alarms_on(t, metric):
    return [a for a in resources(t, "AWS::CloudWatch::Alarm").values() if a["Properties"].get("MetricName") == metric]


def test_functions_log_json_with_the_level_parameter_and_metrics_namespace(t):
    for name in SENSORS:
        logging = t["Resources"][f"{name}Function"]["Properties"]["LoggingConfig"]
        assert logging["LogFormat"] == "JSON", logging
        assert logging["ApplicationLogLevel"] == {"Ref": "LogLevel"}
        assert environment(t, f"{name}Function")["METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}, name
    glob = t["Globals"]["Function"]
    assert glob["Tracing"] == {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}


def test_rest_api_has_json_access_logs_stage_metrics_and_optional_tracing(t):
    api = t["Resources"]["RestApi"]["Properties"]
    fmt = json.loads(api["AccessLogSetting"]["Format"])
    for key, value in {
        "requestId": "$context.requestId",
        "status": "$context.status",
        "responseLatency": "$context.responseLatency",
        "apiKeyId": "$context.identity.apiKeyId",
    }.items():
        assert fmt[key] == value, key
    assert api["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert api["MethodSettings"] == [
        {"ResourcePath": "/*", "HttpMethod": "*", "MetricsEnabled": True, "DataTraceEnabled": False}
    ]
    assert api["TracingEnabled"] == {"Fn::If": ["TracingEnabled", True, False]}
    account = t["Resources"]["ApiGatewayAccount"]
    assert account["Condition"] == "CreateApiGatewayAccount"


def test_function_errors_throttles_and_503_rate_alarms(t):
    for metric in ["Errors", "Throttles"]:
        found = alarms_on(t, metric)
        assert len(found) == 3, metric
        for a in found:
            p = a["Properties"]
            assert p["Namespace"] == "AWS/Lambda"
            assert p["Threshold"] == 1 and p["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    for name, sensor in SENSORS.items():
        p = t["Resources"][f"{name}UnavailableRateAlarm"]["Properties"]
        assert p["Threshold"] == {"Ref": "UnavailablePercent"}
        assert p["Metrics"][0]["Expression"] == "100 * unavailable / requests"
        stats = {m["Id"]: m["MetricStat"]["Metric"] for m in p["Metrics"][1:]}
        assert stats["unavailable"]["MetricName"] == "RequestsUnavailable"
        assert stats["requests"]["MetricName"] == "Requests"
        for metric in stats.values():
            assert metric["Namespace"] == {"Ref": "MetricsNamespace"}
            assert metric["Dimensions"] == [
                {"Name": "function", "Value": {"Fn::Sub": f"${{AWS::StackName}}-{sensor}"}},
                {"Name": "sensor", "Value": sensor},
            ]
        # The function dimension is the deployed function's name (AWS_LAMBDA_FUNCTION_NAME).
        assert t["Resources"][f"{name}Function"]["Properties"]["FunctionName"] == {
            "Fn::Sub": f"${{AWS::StackName}}-{sensor}"
        }


def test_api_iot_and_opensearch_alarms(t):
    expect = {
        "5XXError": (0.05, "Average", "GreaterThanThreshold", "AWS/ApiGateway"),
        "4XXError": (0.25, "Average", "GreaterThanThreshold", "AWS/ApiGateway"),
        "IotRuleErrors": (1, "Sum", "GreaterThanOrEqualToThreshold", {"Ref": "MetricsNamespace"}),
        "ClusterStatus.red": (1, "Maximum", "GreaterThanOrEqualToThreshold", "AWS/ES"),
        "ClusterStatus.yellow": (1, "Maximum", "GreaterThanOrEqualToThreshold", "AWS/ES"),
        "FreeStorageSpace": ({"Ref": "OpenSearchFreeStorageMb"}, "Minimum", "LessThanThreshold", "AWS/ES"),
        "JVMMemoryPressure": (80, "Maximum", "GreaterThanThreshold", "AWS/ES"),
        "ThreadpoolWriteRejected": (1, "Sum", "GreaterThanOrEqualToThreshold", "AWS/ES"),
    }
    for metric, (threshold, statistic, comparison, namespace) in expect.items():
        found = alarms_on(t, metric)
        assert len(found) == 1, metric
        p = found[0]["Properties"]
        assert (p["Threshold"], p["Statistic"], p["ComparisonOperator"], p["Namespace"]) == (
            threshold, statistic, comparison, namespace), (metric, p)
        if namespace == "AWS/ES":
            assert found[0]["Condition"] == "CreateDomain", metric
    [latency] = alarms_on(t, "Latency")
    assert latency["Properties"]["ExtendedStatistic"] == "p99"
    assert latency["Properties"]["Threshold"] == {"Ref": "ApiLatencyP99Ms"}
    assert t["Parameters"]["ApiLatencyP99Ms"]["Default"] == 3000
    f = t["Resources"]["IotRuleErrorsMetricFilter"]["Properties"]
    assert f["LogGroupName"] == {"Ref": "IotRuleErrorLogGroup"} and f["FilterPattern"] == ""


def test_every_alarm_notifies_the_topic_and_email_is_optional(t):
    all_alarms = resources(t, "AWS::CloudWatch::Alarm")
    # Per function 3, API 3 + IoT rules 1, OpenSearch 5; the stream path's 3 + 2.
    assert len(all_alarms) == 3 * 3 + 4 + 5 + 5, sorted(all_alarms)
    assert len(resources(resolve(t), "AWS::CloudWatch::Alarm")) == 3 * 3 + 4 + 5
    for name, a in all_alarms.items():
        p = a["Properties"]
        assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert p["OKActions"] == [{"Ref": "AlarmTopic"}], name
        assert p["TreatMissingData"] == "notBreaching", name
    sub = t["Resources"]["AlarmEmailSubscription"]
    assert sub["Condition"] == "HasAlarmEmail"
    assert sub["Properties"]["Protocol"] == "email"


def test_dashboard_shows_ingest_warnings_errors_and_latency_per_sensor(t):
    body = t["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(body)
    titles = " ".join(w["properties"]["title"] for w in dashboard["widgets"])
    for word in ["ingest rate", "Warnings published", "Function errors", "latency"]:
        assert word in titles, word
    metrics = [m for w in dashboard["widgets"] for m in w["properties"]["metrics"]]
    names = {m[1] for m in metrics}
    for name in ["ReadingsStored", "WarningsPublished", "ReadingsInvalid", "RequestsUnavailable",
                 "PublishLatency", "IndexLatency", "Errors", "Throttles", "5XXError", "Latency"]:
        assert name in names, name
    for sensor in SENSORS.values():
        assert any(m[1] == "ReadingsStored" and m[5] == sensor for m in metrics), sensor


def test_query_function_is_read_only_with_its_own_role_and_routes(t):
    fn = t["Resources"]["QueryFunction"]
    p = fn["Properties"]
    assert p["CodeUri"] == "../functions/query"
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert p["LoggingConfig"]["LogFormat"] == "JSON"
    env = p["Environment"]["Variables"]
    assert env["QUERY_INDICES"] == "gasdetector=gasdetect*,dust=dust*,temp=temp*"
    assert env["CORS_ORIGIN"] == {"Ref": "CorsOrigin"}
    assert t["Parameters"]["CorsOrigin"]["Default"] == ""
    assert env["VIEWER_KEY_IDS"] == {"Ref": "ViewerApiKey"}
    # No `Role`: SAM makes the function its own role, apart from the ingest functions'.
    assert "Role" not in p
    [policy] = p["Policies"]
    [statement] = policy["Statement"]
    domain, existing = statement["Fn::If"][1:]
    assert statement["Fn::If"][0] == "UseServerless"
    assert sorted(existing["Action"]) == ["es:ESHttpGet", "es:ESHttpPost"], existing
    resources = existing["Resource"]["Fn::If"][1:]
    for variant in resources:
        paths = [r["Fn::Sub"] for r in variant]
        assert len(paths) == 3 and all(r.endswith("*/_search") for r in paths), paths
    routes = sorted(e["Properties"]["Path"] for e in p["Events"].values())
    assert routes == ["/", "/api/boxes", "/api/readings", "/api/rules", "/api/warnings"], routes
    assert all(e["Type"] == "Api" and e["Properties"]["Method"] == "ANY" for e in p["Events"].values())
    # Ingest roles keep their write access and nothing of the query's.
    for name in SENSORS:
        assert "Role" not in t["Resources"][f"{name}Function"]["Properties"]


def test_viewers_have_their_own_usage_plan_and_key(t):
    plan = t["Resources"]["ViewerUsagePlan"]["Properties"]
    assert plan["Throttle"] == {"RateLimit": {"Ref": "ViewerThrottleRateLimit"}, "BurstLimit": {"Ref": "ViewerThrottleBurstLimit"}}
    assert plan["Quota"] == {"Limit": {"Ref": "ViewerQuotaLimit"}, "Period": "DAY"}
    link = t["Resources"]["ViewerUsagePlanKey"]["Properties"]
    assert link == {"KeyId": {"Ref": "ViewerApiKey"}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": "ViewerUsagePlan"}}
    assert t["Outputs"]["ViewerApiKeyId"]["Value"] == {"Ref": "ViewerApiKey"}
    assert "PageUrl" in t["Outputs"]


# ---------------------------------------------------------------- identity: one per box (issue 21)
def arn(kind_and_path):
    return f"arn:${{AWS::Partition}}:{kind_and_path}"


def statements(t, function):
    """The function's inline policy statements (SAM `Policies`), `!If` variants flattened."""
    out = []
    for policy in t["Resources"][function]["Properties"]["Policies"]:
        for s in policy["Statement"]:
            out.extend(s["Fn::If"][1:] if "Fn::If" in s else [s])
    return [s for s in out if s != NO_VALUE]


def test_per_box_routes_are_sigv4_only_and_legacy_routes_keep_the_key(t):
    contract = yaml.safe_load(CONTRACT.read_text())
    assert contract["components"]["securitySchemes"]["sigv4"] == {
        "type": "apiKey", "name": "Authorization", "in": "header",
        "x-amazon-apigateway-authtype": "awsSigv4",
        "description": contract["components"]["securitySchemes"]["sigv4"]["description"],
    }
    assert contract["security"] == [{"api_key": []}]
    thing = contract["components"]["parameters"]["Thing"]
    assert (thing["name"], thing["in"], thing["required"]) == ("thing", "path", True)
    assert thing["schema"] == {"type": "string", "pattern": "^[a-zA-Z0-9:_-]+$", "minLength": 1, "maxLength": 128}
    forbidden = {"$ref": "#/components/responses/ReadingForbidden"}
    for name, sensor in SENSORS.items():
        legacy = contract["paths"][f"/{sensor}"]
        item = contract["paths"][f"/things/{{thing}}/{sensor}"]
        assert "security" not in legacy["post"], sensor  # the document's: api_key
        assert "LegacyKeyRoutes" in legacy["post"]["description"], sensor
        assert set(item) == {"post", "x-amazon-apigateway-any-method"}, sensor  # no OPTIONS, as /<sensor>
        for operation in item.values():
            assert operation["security"] == [{"sigv4": []}], sensor  # no api_key
            assert operation["parameters"] == [{"$ref": "#/components/parameters/Thing"}], sensor
            assert operation["x-amazon-apigateway-integration"]["uri"] == {
                "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/"
                           f"functions/${{{name}Function.Arn}}/invocations"}, sensor
        # Same body, answers and function as the legacy route; 403 from the function too.
        assert item["post"]["requestBody"] == legacy["post"]["requestBody"], sensor
        assert item["post"]["responses"] == legacy["post"]["responses"], sensor
        assert item["post"]["responses"]["403"] == forbidden, sensor
    refusal = contract["components"]["schemas"]["ForbiddenReading"]
    assert refusal["required"] == ["error", "field", "message"]
    assert refusal["properties"]["error"] == {"type": "string", "enum": ["forbidden"]}
    batch_item = contract["components"]["schemas"]["BatchItemForbidden"]
    assert batch_item["required"] == ["index", "status", "error", "field", "message"]
    assert batch_item["properties"]["status"] == {"type": "string", "enum": ["forbidden"]}
    assert batch_item["properties"]["error"] == {"type": "string", "enum": ["forbidden"]}
    batch = contract["components"]["schemas"]["BatchAnswer"]
    assert "forbidden" in batch["required"] and batch["properties"]["forbidden"]["minimum"] == 0
    assert {"$ref": "#/components/schemas/BatchItemForbidden"} in contract["components"]["schemas"]["BatchItem"]["oneOf"]
    # The invoke permission covers the per-box routes (SAM makes it .../*/things/*/<sensor>).
    for name, sensor in SENSORS.items():
        paths = sorted(e["Properties"]["Path"] for e in t["Resources"][f"{name}Function"]["Properties"]["Events"].values())
        assert paths == sorted([f"/{sensor}", f"/things/{{thing}}/{sensor}"]), paths


def test_legacy_key_routes_default_off_and_reach_exactly_the_ingest_functions(t):
    parameter = t["Parameters"]["LegacyKeyRoutes"]
    assert parameter["Default"] == "false"
    assert parameter["AllowedValues"] == ["true", "false"]
    assert "Weaker" in parameter["Description"]
    for name in SENSORS:
        assert environment(t, f"{name}Function")["LEGACY_KEY_ROUTES"] == {"Ref": "LegacyKeyRoutes"}, name
    for name in ["QueryFunction", "NodataFunction"]:
        assert "LEGACY_KEY_ROUTES" not in environment(t, name), name


def test_only_the_ingest_functions_read_the_registry_and_only_things(t):
    describe = {"Sid": "ResolveThingGroup", "Effect": "Allow", "Action": "iot:DescribeThing",
                "Resource": {"Fn::Sub": "arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:thing/*"}}
    for name in SENSORS:
        found = [s for s in statements(t, f"{name}Function") if "iot:DescribeThing" in json.dumps(s["Action"])]
        assert found == [describe], (name, found)
    for name in ["QueryFunction", "NodataFunction"]:
        actions = json.dumps([s["Action"] for s in statements(t, name)])
        assert "DescribeThing" not in actions and "iot:List" not in actions, (name, actions)


def test_the_box_https_role_may_invoke_only_its_own_thing_routes(t):
    role = t["Resources"]["SensorBoxHttpsRole"]["Properties"]
    assert role["MaxSessionDuration"] == 3600
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "credentials.iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    [policy] = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [{
        "Effect": "Allow",
        "Action": "execute-api:Invoke",
        # ${!...}: !Sub leaves ${credentials-iot:ThingName} for IAM to resolve per session.
        "Resource": [
            {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
                        "${RestApi}/${StageName}/POST/things/${!credentials-iot:ThingName}/*"},
            # The same routes on the HTTP API (any stage: it has $default), only when it exists.
            {"Fn::If": ["CreateHttpApi",
                        {"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
                                    "${HttpApi}/*/POST/things/${!credentials-iot:ThingName}/*"},
                        {"Ref": "AWS::NoValue"}]},
        ],
    }]
    assert set(role) == {"Description", "MaxSessionDuration", "AssumeRolePolicyDocument", "Policies"}
    alias = t["Resources"]["SensorBoxHttpsRoleAlias"]
    assert alias["Type"] == "AWS::IoT::RoleAlias"
    assert alias["Properties"] == {
        "RoleAlias": {"Fn::Sub": "${AWS::StackName}-sensor-box"},
        "RoleArn": {"Fn::GetAtt": ["SensorBoxHttpsRole", "Arn"]},
        "CredentialDurationSeconds": 3600,
    }
    assert t["Outputs"]["SensorBoxRoleAlias"]["Value"] == {"Ref": "SensorBoxHttpsRoleAlias"}
    endpoint = t["Outputs"]["IotCredentialsEndpoint"]
    assert endpoint["Value"] == {"Fn::GetAtt": ["IotCredentialsEndpointLookup", "Url"]}
    assert endpoint["Condition"] == "LookUpIotEndpoint"
    assert "--endpoint-type iot:CredentialProvider" in endpoint["Description"]
    lookup = t["Resources"]["IotCredentialsEndpointLookup"]["Properties"]
    assert lookup == {"ServiceToken": {"Fn::GetAtt": ["IotEndpointLookupFunction", "Arn"]},
                      "EndpointType": "iot:CredentialProvider"}
    code = t["Resources"]["IotEndpointLookupFunction"]["Properties"]["Code"]["ZipFile"]
    assert 'describe_endpoint(endpointType=endpoint_type)' in code


def test_http_api_has_the_boxes_iam_routes_and_the_legacy_routes(t):
    """EnableHttpApi: per sensor, POST /things/{thing}/<sensor> always AWS_IAM and
    POST /<sensor> with HttpApiAuthorization, both on the function's one integration, each
    with its own invoke permission scoped to its route."""
    assert t["Conditions"]["CreateHttpApi"] == {"Fn::Equals": [{"Ref": "EnableHttpApi"}, "true"]}
    assert t["Parameters"]["HttpApiAuthorization"]["AllowedValues"] == ["AWS_IAM", "NONE"]
    assert "legacy routes" in t["Parameters"]["HttpApiAuthorization"]["Description"]
    assert "/things/<thing>/<sensor>" in t["Parameters"]["EnableHttpApi"]["Description"]
    http = {k: v for k, v in t["Resources"].items() if v["Type"].startswith("AWS::ApiGatewayV2::")
            or (v["Type"] == "AWS::Lambda::Permission" and "HttpApi" in json.dumps(v))}
    for resource in http.values():
        assert resource.get("Condition") == "CreateHttpApi", resource
    routes = {r["Properties"]["RouteKey"]: r["Properties"] for r in resources(t, "AWS::ApiGatewayV2::Route").values()}
    assert sorted(routes) == sorted([f"POST /{s}" for s in SENSORS.values()]
                                    + [f"POST /things/{{thing}}/{s}" for s in SENSORS.values()]), sorted(routes)
    base = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*/POST"
    for name, sensor in SENSORS.items():
        integration = t["Resources"][f"{name}HttpIntegration"]["Properties"]
        assert integration["IntegrationUri"] == {"Fn::GetAtt": [f"{name}Function", "Arn"]}
        assert integration["PayloadFormatVersion"] == "2.0"
        target = {"Fn::Sub": f"integrations/${{{name}HttpIntegration}}"}
        legacy = routes[f"POST /{sensor}"]
        assert legacy["AuthorizationType"] == {"Ref": "HttpApiAuthorization"}, sensor
        assert legacy["Target"] == target, sensor
        # Always SigV4: HttpApiAuthorization governs the legacy route only.
        thing = t["Resources"][f"{name}ThingHttpRoute"]["Properties"]
        assert thing == {"ApiId": {"Ref": "HttpApi"}, "RouteKey": f"POST /things/{{thing}}/{sensor}",
                         "AuthorizationType": "AWS_IAM", "Target": target}, sensor
        for permission, path in [(f"{name}HttpPermission", f"/{sensor}"),
                                 (f"{name}ThingHttpPermission", f"/things/*/{sensor}")]:
            assert t["Resources"][permission]["Properties"] == {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Ref": f"{name}Function"},
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": {"Fn::Sub": base + path},
            }, permission
    permissions = [k for k, v in http.items() if v["Type"] == "AWS::Lambda::Permission"]
    assert len(permissions) == 6, permissions


def test_the_box_policy_may_assume_the_role_through_the_alias_only(t):
    policy = resolve(t)["Resources"]["SensorBoxPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assume = [s for s in policy if "AssumeRole" in json.dumps(s["Action"])]
    assert assume == [{"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate",
                       "Resource": {"Fn::GetAtt": ["SensorBoxHttpsRoleAlias", "RoleAliasArn"]}}], assume
    # No box group id in the HTTPS identity: the function checks the group in the registry.
    identity = json.dumps([t["Resources"]["SensorBoxHttpsRole"], t["Resources"]["SensorBoxHttpsRoleAlias"]])
    assert "groupid" not in identity.lower(), identity


def test_data_rules_hand_the_function_the_thing_and_the_raw_payload(t):
    for name, sensor in SENSORS.items():
        rule = t["Resources"][f"{name}DataRule"]["Properties"]["TopicRulePayload"]
        assert rule["Sql"] == {"Fn::Sub": "SELECT topic(2) AS thing, encode(*, 'base64') AS payload "
                                          f"FROM '${{DeviceTopicRoot}}/+/data/{sensor}'"}, rule["Sql"]
        assert rule["AwsIotSqlVersion"] == "2016-03-23"
        assert rule["Actions"] == [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [f"{name}Function", "Arn"]}}}]


# ---------------------------------------------------------------- the stream path (issue 22)
STREAM_PARAMETERS = {
    # name: (default, min, max)
    "StreamShards": (0, 0, None),
    "StreamBatchSize": (1000, 1, 10000),
    "StreamBatchingWindowSeconds": (5, 0, 300),
    "StreamMaxRetryAttempts": (5, 0, 10000),
    "StreamMaxRecordAgeSeconds": (21600, 60, 86400),
    "StreamParallelization": (1, 1, 10),
}
STREAM_RESOURCES = {
    "ReadingsStream": "AWS::Kinesis::Stream",
    "StreamFailureQueue": "AWS::SQS::Queue",
    "StreamRuleErrorQueue": "AWS::SQS::Queue",
    "StreamRuleRole": "AWS::IAM::Role",
    "StreamRuleErrorRole": "AWS::IAM::Role",
    "StreamRule": "AWS::IoT::TopicRule",
    **{f"{name}StreamMapping": "AWS::Lambda::EventSourceMapping" for name in SENSORS},
    **{f"{name}IteratorAgeAlarm": "AWS::CloudWatch::Alarm" for name in SENSORS},
    "StreamFailureQueueAlarm": "AWS::CloudWatch::Alarm",
    "StreamRuleErrorQueueAlarm": "AWS::CloudWatch::Alarm",
}
STREAM_OUTPUTS = ["StreamName", "StreamArn", "StreamIngestTopic", "StreamFailureQueueUrl", "StreamRuleErrorQueueUrl"]
STREAM_ACTIONS = ("kinesis:", "sqs:")
BASIC_INGEST = [("arn:${AWS::Partition}:iot:${AWS::Region}:${AWS::AccountId}:topic/$aws/rules/${StreamRuleName}/"
                 f"${{DeviceTopicRoot}}/${{!iot:Connection.Thing.ThingName}}/data/{sensor}/${{!iot:Connection.Thing.Attributes[groupid]}}")
                for sensor in ("gasdetector", "dust", "temp")]


def stream(t, **parameters):
    return resolve(t, IngestPath="stream", **parameters)


def actions_of(statement):
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def role_statements(role):
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_the_stream_path_is_one_parameter_with_its_own_group(t):
    ingest = t["Parameters"]["IngestPath"]
    assert (ingest["Default"], ingest["AllowedValues"]) == ("direct", ["direct", "stream"])
    rule = t["Parameters"]["StreamRuleName"]
    assert (rule["Default"], rule["AllowedPattern"]) == ("sensorbox_readings", "^[a-zA-Z0-9_]+$")
    for name, (default, low, high) in STREAM_PARAMETERS.items():
        p = t["Parameters"][name]
        assert (p["Type"], p["Default"], p.get("MinValue"), p.get("MaxValue")) == ("Number", default, low, high), name
    groups = t["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    [group] = [g for g in groups if g["Label"]["default"] == "Stream path"]
    assert group["Parameters"] == ["IngestPath", "StreamRuleName", *STREAM_PARAMETERS], group
    assert t["Conditions"]["StreamPath"] == {"Fn::Equals": [{"Ref": "IngestPath"}, "stream"]}
    assert t["Conditions"]["StreamOnDemand"] == {"Fn::Equals": [{"Ref": "StreamShards"}, "0"]}


def test_every_stream_resource_and_output_exists_only_with_ingest_path_stream(t):
    for name, kind in STREAM_RESOURCES.items():
        assert t["Resources"][name]["Type"] == kind, name
        assert t["Resources"][name]["Condition"] == "StreamPath", name
    for name in STREAM_OUTPUTS:
        assert t["Outputs"][name]["Condition"] == "StreamPath", name
    # Nothing else is conditional on it: the direct path is the same in both modes.
    conditional = sorted(k for k, v in t["Resources"].items() if v.get("Condition") == "StreamPath")
    assert conditional == sorted(STREAM_RESOURCES), conditional
    direct, streaming = resolve(t), stream(t)
    for kind in ["AWS::Kinesis::Stream", "AWS::SQS::Queue", "AWS::Lambda::EventSourceMapping"]:
        assert resources(direct, kind) == {}, kind
    assert not set(STREAM_RESOURCES) & set(direct["Resources"])
    assert not set(STREAM_OUTPUTS) & set(direct["Outputs"])
    assert set(STREAM_RESOURCES) <= set(streaming["Resources"])
    assert set(STREAM_OUTPUTS) <= set(streaming["Outputs"])
    assert set(direct["Resources"]) | set(STREAM_RESOURCES) == set(streaming["Resources"])
    # The direct path's rules and routes are there in both modes.
    for view in [direct, streaming]:
        for name in SENSORS:
            assert f"{name}DataRule" in view["Resources"], name
            assert sorted(view["Resources"][f"{name}Function"]["Properties"]["Events"]) == ["Rest", "Thing"]
    # No stream permission in any role, no Basic Ingest in the box policy.
    for name in [*(f"{n}Function" for n in SENSORS), "QueryFunction", "NodataFunction"]:
        actions = json.dumps([s["Action"] for s in statements(direct, name)])
        assert "kinesis:" not in actions and "sqs:" not in actions, (name, actions)
    assert "$aws/rules" not in json.dumps(direct["Resources"]["SensorBoxPolicy"])


def test_the_stream_is_on_demand_or_provisioned_encrypted_and_keeps_24_hours(t):
    on_demand = stream(t)["Resources"]["ReadingsStream"]["Properties"]
    assert on_demand == {
        "Name": {"Fn::Sub": "${AWS::StackName}-readings"},
        "RetentionPeriodHours": 24,
        "StreamModeDetails": {"StreamMode": "ON_DEMAND"},
        "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
    }, on_demand
    provisioned = stream(t, StreamShards=4)["Resources"]["ReadingsStream"]["Properties"]
    assert provisioned["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert provisioned["ShardCount"] == {"Ref": "StreamShards"}
    for queue in ["StreamFailureQueue", "StreamRuleErrorQueue"]:
        assert stream(t)["Resources"][queue]["Properties"] == {
            "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}, queue


def test_the_stream_rule_puts_basic_ingest_batches_by_groupid_and_keeps_failures(t):
    r = stream(t)["Resources"]
    rule = r["StreamRule"]["Properties"]
    assert rule["RuleName"] == {"Ref": "StreamRuleName"}
    payload = rule["TopicRulePayload"]
    # Basic Ingest: the rule sees the topic without $aws/rules/<rule>/ (topic(1) = the root).
    assert payload["Sql"] == {"Fn::Sub": "SELECT topic(2) AS thing, topic(4) AS sensor, topic(5) AS groupid, "
                                         "encode(*, 'base64') AS payload FROM '${DeviceTopicRoot}/+/data/+/+'"}
    assert payload["AwsIotSqlVersion"] == "2016-03-23" and payload["RuleDisabled"] is False
    assert payload["Actions"] == [{"Kinesis": {
        "StreamName": {"Ref": "ReadingsStream"},
        "PartitionKey": "${topic(5)}",
        "RoleArn": {"Fn::GetAtt": ["StreamRuleRole", "Arn"]},
    }}]
    assert payload["ErrorAction"] == {"Sqs": {
        "QueueUrl": {"Ref": "StreamRuleErrorQueue"},
        "RoleArn": {"Fn::GetAtt": ["StreamRuleErrorRole", "Arn"]},
        "UseBase64": False,
    }}
    trust = [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole",
              "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]
    for role, action, resource in [
        ("StreamRuleRole", "kinesis:PutRecord", {"Fn::GetAtt": ["ReadingsStream", "Arn"]}),
        ("StreamRuleErrorRole", "sqs:SendMessage", {"Fn::GetAtt": ["StreamRuleErrorQueue", "Arn"]}),
    ]:
        p = r[role]["Properties"]
        assert p["AssumeRolePolicyDocument"]["Statement"] == trust, role
        assert role_statements(r[role]) == [{"Effect": "Allow", "Action": action, "Resource": resource}], role
        assert set(p) == {"AssumeRolePolicyDocument", "Policies"}, role


def test_one_event_source_mapping_per_sensor_function_filtered_to_its_sensor(t):
    r = stream(t)["Resources"]
    mappings = resources(stream(t), "AWS::Lambda::EventSourceMapping")
    assert sorted(mappings) == sorted(f"{name}StreamMapping" for name in SENSORS)
    for name, sensor in SENSORS.items():
        m = r[f"{name}StreamMapping"]
        # Lambda checks the role's stream and queue permissions when it creates the mapping.
        assert m["DependsOn"] == f"{name}FunctionRole", name
        p = dict(m["Properties"])
        [pattern] = [f["Pattern"] for f in p.pop("FilterCriteria")["Filters"]]
        assert json.loads(pattern) == {"data": {"sensor": [sensor]}}, pattern
        assert p == {
            "FunctionName": {"Ref": f"{name}Function"},
            "EventSourceArn": {"Fn::GetAtt": ["ReadingsStream", "Arn"]},
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": {"Ref": "StreamBatchSize"},
            "MaximumBatchingWindowInSeconds": {"Ref": "StreamBatchingWindowSeconds"},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": {"Ref": "StreamMaxRetryAttempts"},
            "MaximumRecordAgeInSeconds": {"Ref": "StreamMaxRecordAgeSeconds"},
            "ParallelizationFactor": {"Ref": "StreamParallelization"},
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}}},
        }, (name, p)


def test_the_functions_may_only_read_the_stream_and_park_failed_batches(t):
    view = stream(t)
    for name in SENSORS:
        found = [s for s in statements(view, f"{name}Function")
                 if any(a.startswith(STREAM_ACTIONS) for a in actions_of(s))]
        assert found == [
            {"Sid": "ReadReadingsStream", "Effect": "Allow",
             "Action": ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                        "kinesis:GetShardIterator", "kinesis:ListShards"],
             "Resource": {"Fn::GetAtt": ["ReadingsStream", "Arn"]}},
            {"Sid": "StreamOnFailure", "Effect": "Allow", "Action": "sqs:SendMessage",
             "Resource": {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}},
        ], (name, found)
        # The other statements are the direct path's, unchanged.
        assert len(statements(view, f"{name}Function")) == len(statements(resolve(t), f"{name}Function")) + 2
    for name in ["QueryFunction", "NodataFunction"]:
        actions = json.dumps([s["Action"] for s in statements(view, name)])
        assert "kinesis:" not in actions and "sqs:" not in actions, (name, actions)


def test_the_box_may_publish_to_basic_ingest_only_as_its_thing_and_group(t):
    policy = stream(t)["Resources"]["SensorBoxPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    ingest = [s for s in policy if "$aws/rules" in json.dumps(s)]
    assert ingest == [{"Effect": "Allow", "Action": "iot:Publish", "Resource": [{"Fn::Sub": r} for r in BASIC_INGEST]}], ingest
    assert len(policy) == len(resolve(t)["Resources"]["SensorBoxPolicy"]["Properties"]["PolicyDocument"]["Statement"]) + 1


def test_the_stream_path_alarms_on_iterator_age_and_both_queues(t):
    r = stream(t)["Resources"]
    for name in SENSORS:
        p = r[f"{name}IteratorAgeAlarm"]["Properties"]
        assert (p["Namespace"], p["MetricName"], p["Dimensions"]) == (
            "AWS/Lambda", "IteratorAge", [{"Name": "FunctionName", "Value": {"Ref": f"{name}Function"}}]), name
        # More than a minute behind (ms) in each of 5 one-minute periods.
        assert (p["Statistic"], p["Period"], p["EvaluationPeriods"], p["DatapointsToAlarm"], p["Threshold"],
                p["ComparisonOperator"]) == ("Maximum", 60, 5, 5, 60000, "GreaterThanThreshold"), name
    for queue in ["StreamFailureQueue", "StreamRuleErrorQueue"]:
        p = r[f"{queue}Alarm"]["Properties"]
        assert (p["Namespace"], p["MetricName"], p["Dimensions"]) == (
            "AWS/SQS", "ApproximateNumberOfMessagesVisible",
            [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]), queue
        assert (p["Statistic"], p["Threshold"], p["ComparisonOperator"]) == ("Maximum", 0, "GreaterThanThreshold")
    for name in STREAM_RESOURCES:
        if name.endswith("Alarm"):
            p = r[name]["Properties"]
            assert p["AlarmActions"] == [{"Ref": "AlarmTopic"}] and p["OKActions"] == [{"Ref": "AlarmTopic"}], name
    dashboard = json.loads(t["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"])
    ages = [m for w in dashboard["widgets"] for m in w["properties"]["metrics"] if m[1] == "IteratorAge"]
    assert [m[3] for m in ages] == [f"${{{name}Function}}" for name in SENSORS], ages


def test_the_stream_path_outputs_the_stream_the_topic_and_the_queues(t):
    o = stream(t)["Outputs"]
    assert o["StreamName"]["Value"] == {"Ref": "ReadingsStream"}
    assert o["StreamArn"]["Value"] == {"Fn::GetAtt": ["ReadingsStream", "Arn"]}
    assert o["StreamIngestTopic"]["Value"] == {"Fn::Sub": "$aws/rules/${StreamRuleName}/${DeviceTopicRoot}"}
    assert 'transport = "stream"' in o["StreamIngestTopic"]["Description"]
    assert o["StreamFailureQueueUrl"]["Value"] == {"Ref": "StreamFailureQueue"}
    assert o["StreamRuleErrorQueueUrl"]["Value"] == {"Ref": "StreamRuleErrorQueue"}


def main():
    t = load()
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    failed = 0
    for test in tests:
        try:
            test(t)
            print(f"ok {test.__name__}")
        except AssertionError as e:
            failed += 1
            print(f"FAILED {test.__name__}: {e!r}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
