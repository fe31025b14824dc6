#!/usr/bin/env python3
"""The cost and capacity model of docs/scale.md, with no dependencies.

    python3 docs/scale_model.py            # print the tables (Markdown)
    python3 docs/scale_model.py --write    # put them into docs/scale.md between the markers
    python3 docs/scale_model.py --check    # exit 1 when docs/scale.md is not what --write gives

Every price and every assumption is a constant below, named, with its source in
docs/scale.md ("Prices" and "Assumptions"). Change one, run --write, and the doc follows.
Prices are us-east-1, USD, a 30-day month.
"""

import math
import pathlib
import sys

# ----------------------------------------------------------------------------- the fleet
FLEETS = [100, 10_000, 100_000]
READING_EVERY_S = 10
MONTH_S = 30 * 86_400  # 2,592,000 s
MONTH_H = 30 * 24  # 720 h
MONTH_MIN = 30 * 24 * 60  # 43,200 min
BOXES_PER_GROUP = 10  # a group (site) of boxes shares one alarm-state shadow
SENSOR_FUNCTIONS = 3  # gasdetector, dust, temp: readings split evenly between them

# ------------------------------------------------------------------------------- sizes
READING_BYTES = 442  # events/gasdetector/direct.json, compact JSON (dust 350, temp 266)
DOC_SOURCE_BYTES = 606  # the indexed document's _source for that reading (dust 507, temp 423)
RECORD_OVERHEAD_BYTES = 100  # the rule's {"thing","sensor","groupid","payload"} around base64
TOPIC_BYTES = 60  # $aws/rules/sensorbox_readings/devices/<thing>/data/gasdetector/<group>
LOG_BYTES_PER_INVOCATION = 1_000  # `request done` + the EMF line (platform lines off: SystemLogLevel WARN)
ACCESS_LOG_BYTES = 360  # the stacks' API access log line, + 26 B CloudWatch per-event overhead
SHADOW_STATE_KB = 1  # the group's alarm document (bounded lists) is ~1 KB: 1 metered op

# -------------------------------------------------------------------------------- prices
# API Gateway, per million requests, tiers per month
REST_TIERS = [(333e6, 3.50), (667e6, 2.80), (19_000e6, 2.38), (math.inf, 1.51)]
HTTP_TIERS = [(300e6, 1.00), (math.inf, 0.90)]
# Lambda, arm64
LAMBDA_PER_M_REQUESTS = 0.20
LAMBDA_GBS_TIERS = [(7.5e9, 0.0000133334), (11.25e9, 0.0000120001), (math.inf, 0.0000106667)]
LAMBDA_MEMORY_GB = 128 / 1024
DIRECT_MS = 5  # billed duration of one warm direct request (the brief; measured mean 4.9-6.7 ms)
STREAM_MS_FIXED = 20  # stream batch, measured (BENCHMARKS.md, issue 22): 4-44 ms fixed
STREAM_MS_PER_READING = 0.6  # stream batch, measured: 0.52-0.61 ms per reading, mostly _bulk
# IoT Core
IOT_CONNECTIVITY_PER_M_MIN = 0.08
IOT_RULES_PER_M = 0.15
IOT_ACTIONS_PER_M = 0.15
IOT_SHADOW_REGISTRY_PER_M = 1.25
# Kinesis Data Streams
KDS_SHARD_HOUR = 0.015
KDS_PUT_UNITS_PER_M = 0.014  # 25 KB units
KDS_OD_STREAM_HOUR = 0.04  # on-demand: not shown in the stored pricing page (verify)
KDS_OD_GB_IN = 0.08  # on-demand: records rounded up to 1 KB (verify the rate)
KDS_OD_GB_OUT = 0.04  # on-demand (verify the rate)
KDS_OD_MIN_SHARDS = 4  # on-demand starts at 4 MB/s, 4,000 records/s
# CloudWatch Logs, Lambda logs tiered (Standard class), other logs flat
CWL_LAMBDA_TIERS = [(10 * 1024, 0.50), (20 * 1024, 0.25), (20 * 1024, 0.10), (math.inf, 0.05)]
CWL_PER_GB = 0.50
# OpenSearch Service
OS_R6G_LARGE_HOUR = 0.167  # r6g.large.search; xlarge = 2x, 2xlarge = 4x (same family, linear)
OS_M6G_LARGE_HOUR = 0.128  # m6g.large.search, dedicated cluster managers
OS_GP3_GB_MONTH = 0.122  # gp3 on OpenSearch (verify; derived, see docs/scale.md)

# ----------------------------------------------------------------------- the stream path
BATCH_SIZE = 1_000  # StreamBatchSize: Kinesis records per invocation, at most
BATCH_WINDOW_S = 5  # StreamBatchingWindowSeconds
SHARD_HEADROOM = 0.7  # plan shards at 70 % of a shard's limits (hot partition keys)
SHARD_IN_BYTES = 1 << 20  # 1 MiB/s written per shard
SHARD_IN_RECORDS = 1_000  # records/s written per shard
SHARD_OUT_BYTES = 2 << 20  # 2 MiB/s read per shard, shared by every standard consumer
REGISTRY_TTL_S = 60  # REGISTRY_CACHE_TTL default
LEAN_TRANSITIONS_PER_GROUP_DAY = 4  # c6*: alarm transitions a group a day

# ------------------------------------------------------------------------------ helpers
GIB = 1 << 30


def tiered(quantity, tiers):
    """Cost of `quantity` units priced per million in consecutive tiers (size, price)."""
    cost, left = 0.0, quantity
    for size, price in tiers:
        take = min(left, size)
        cost += take / 1e6 * price
        left -= take
        if left <= 0:
            break
    return cost


def tiered_gb(gb, tiers):
    cost, left = 0.0, gb
    for size, price in tiers:
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    return cost


def lambda_cost(invocations, seconds_each):
    gbs = invocations * seconds_each * LAMBDA_MEMORY_GB
    cost, left = 0.0, gbs
    for size, price in LAMBDA_GBS_TIERS:
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    return invocations / 1e6 * LAMBDA_PER_M_REQUESTS, cost


def money(x):
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 1:
        return f"{x:,.2f}"
    if x == 0:
        return "0"
    return f"{x:.2f}" if x >= 0.005 else "<0.01"


def count(x):
    if x >= 1e9:
        return f"{x / 1e9:,.2f} B"
    if x >= 1e6:
        return f"{x / 1e6:,.1f} M"
    if x >= 1e3:
        return f"{x / 1e3:,.1f} k"
    return f"{x:,.0f}" if x >= 10 else f"{x:,.2f}"


def distinct(groups, draws):
    """Expected distinct groups among `draws` records spread evenly over `groups`."""
    if groups <= 0 or draws <= 0:
        return 0.0
    return groups * (1 - (1 - 1 / groups) ** draws)


# ------------------------------------------------------------------------------- model
def common(boxes):
    readings = boxes * MONTH_S / READING_EVERY_S
    return {
        "readings": readings,
        "rps": boxes / READING_EVERY_S,
        "groups": max(1, boxes // BOXES_PER_GROUP),
        "connectivity": boxes * MONTH_MIN / 1e6 * IOT_CONNECTIVITY_PER_M_MIN,
    }


def direct(boxes, api):
    c = common(boxes)
    n = c["readings"]
    requests, gbs = lambda_cost(n, DIRECT_MS / 1000)
    # Warm instances per sensor function and how often the registry cache misses: a box's
    # six readings a minute land on random instances of its function, and each instance
    # looks a box up once per TTL.
    instances = max(1.0, c["rps"] * DIRECT_MS / 1000 / SENSOR_FUNCTIONS)
    per_ttl = REGISTRY_TTL_S / READING_EVERY_S
    lookups_per_box_s = instances * (1 - (1 - 1 / instances) ** per_ttl) / REGISTRY_TTL_S
    lookups = boxes * lookups_per_box_s * MONTH_S
    rows = {
        "API Gateway": tiered(n, REST_TIERS if api == "rest" else HTTP_TIERS),
        "Lambda requests": requests,
        "Lambda GB-s": gbs,
        # Today every request commits the group's state (its staleness mark, receive time
        # and applied ids change with each reading): one UPDATE, plus a GET after a lost
        # race or on a cold instance. The model counts 2 operations a reading.
        "IoT shadow ops": n * 2 * SHADOW_STATE_KB / 1e6 * IOT_SHADOW_REGISTRY_PER_M,
        "IoT registry (DescribeThing)": lookups / 1e6 * IOT_SHADOW_REGISTRY_PER_M,
        "IoT connectivity": c["connectivity"],
        "IoT rules + actions": 0.0,
        "Kinesis": 0.0,
        "CloudWatch Logs": tiered_gb(n * LOG_BYTES_PER_INVOCATION / GIB, CWL_LAMBDA_TIERS)
        + n * (ACCESS_LOG_BYTES + 26) / GIB * CWL_PER_GB,
    }
    facts = {
        "invocations": n,
        "invocations per 1,000 readings": 1000.0,
        "concurrency": c["rps"] * DIRECT_MS / 1000,
        "registry lookups/s": lookups / MONTH_S,
        "shadow updates/s per group": c["rps"] / c["groups"],
    }
    return rows, facts


def stream_shape(boxes, per_message):
    """Messages, Kinesis records and shards for a fleet whose boxes put `per_message`
    readings in each Basic Ingest message."""
    messages_s = boxes / READING_EVERY_S / per_message
    payload = per_message * READING_BYTES + per_message + 1  # a JSON array
    record = RECORD_OVERHEAD_BYTES + 4 * math.ceil(payload / 3)
    bytes_s = messages_s * record
    need = max(
        messages_s / SHARD_IN_RECORDS,
        bytes_s / SHARD_IN_BYTES,
        SENSOR_FUNCTIONS * bytes_s / SHARD_OUT_BYTES,
    )
    shards = max(1, math.ceil(need / SHARD_HEADROOM))
    return {
        "messages_s": messages_s,
        "payload": payload,
        "message_kb": math.ceil((payload + TOPIC_BYTES) / 5120),
        "record": record,
        "bytes_s": bytes_s,
        "need": need,
        "shards": shards,
    }


def stream(boxes, per_message, kinesis, lean=False):
    c = common(boxes)
    s = stream_shape(boxes, per_message)
    messages = s["messages_s"] * MONTH_S
    shards = s["shards"] if kinesis == "provisioned" else max(KDS_OD_MIN_SHARDS, s["shards"])
    # Invocations per (shard, function): a batch closes at BatchSize records or when the
    # window ends with at least one record in it.
    r = s["messages_s"] / shards / SENSOR_FUNCTIONS
    per_pair_s = max(r / BATCH_SIZE, (1 - math.exp(-r * BATCH_WINDOW_S)) / BATCH_WINDOW_S)
    invocations_s = per_pair_s * shards * SENSOR_FUNCTIONS
    invocations = invocations_s * MONTH_S
    records_per_invocation = r / per_pair_s
    readings_per_invocation = records_per_invocation * per_message
    seconds = (STREAM_MS_FIXED + STREAM_MS_PER_READING * readings_per_invocation) / 1000
    requests, gbs = lambda_cost(invocations, seconds)
    # One state commit per group with readings in a batch: GET + UPDATE.
    groups_per_pair = c["groups"] / shards
    commits_s = invocations_s * distinct(groups_per_pair, records_per_invocation)
    # One warm instance per (shard, function): a box is looked up once per TTL, or once
    # per message when its messages are further apart than the TTL.
    lookups = boxes * min(s["messages_s"] / boxes, 1 / REGISTRY_TTL_S) * MONTH_S
    if lean:
        # Hypothetical (a code change): the group taken from the policy-pinned topic, no
        # lookups; the state written only on alarm transitions (a few a group a day).
        lookups = 0.0
        commits_s = c["groups"] * LEAN_TRANSITIONS_PER_GROUP_DAY / 86_400
    if kinesis == "provisioned":
        units = messages * math.ceil(s["record"] / 25_600)
        kds = shards * MONTH_H * KDS_SHARD_HOUR + units / 1e6 * KDS_PUT_UNITS_PER_M
    else:
        gb_in = messages * math.ceil(s["record"] / 1024) * 1024 / GIB
        gb_out = SENSOR_FUNCTIONS * messages * s["record"] / GIB
        kds = MONTH_H * KDS_OD_STREAM_HOUR + gb_in * KDS_OD_GB_IN + gb_out * KDS_OD_GB_OUT
    rows = {
        "API Gateway": 0.0,
        "Lambda requests": requests,
        "Lambda GB-s": gbs,
        "IoT shadow ops": commits_s * MONTH_S * 2 * SHADOW_STATE_KB / 1e6
        * IOT_SHADOW_REGISTRY_PER_M,
        "IoT registry (DescribeThing)": lookups / 1e6 * IOT_SHADOW_REGISTRY_PER_M,
        "IoT connectivity": c["connectivity"],
        "IoT rules + actions": messages * s["message_kb"] / 1e6
        * (IOT_RULES_PER_M + IOT_ACTIONS_PER_M),
        "Kinesis": kds,
        "CloudWatch Logs": tiered_gb(invocations * LOG_BYTES_PER_INVOCATION / GIB, CWL_LAMBDA_TIERS),
    }
    facts = {
        "invocations": invocations,
        "invocations per 1,000 readings": invocations / c["readings"] * 1000,
        "concurrency": shards * SENSOR_FUNCTIONS,
        "registry lookups/s": lookups / MONTH_S,
        "shadow updates/s per group": commits_s / c["groups"],
        "readings per invocation": readings_per_invocation,
        "shards": shards,
        "kinesis": kds,
    }
    return rows, facts


DESIGNS = [
    ("a. direct, REST API", lambda b: direct(b, "rest")),
    ("b. direct, HTTP API", lambda b: direct(b, "http")),
    ("c1. stream, 1 reading/message, provisioned", lambda b: stream(b, 1, "provisioned")),
    ("c6. stream, 6 readings/message, provisioned", lambda b: stream(b, 6, "provisioned")),
    ("c6'. stream, 6 readings/message, on-demand", lambda b: stream(b, 6, "on-demand")),
    ("c6*. c6 with no lookups and state written on transitions only (not built)",
     lambda b: stream(b, 6, "provisioned", lean=True)),
]


# ------------------------------------------------------------------------------ output
def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def headline():
    rows = []
    for name, model in DESIGNS:
        rows.append([name] + [money(sum(model(b)[0].values())) for b in FLEETS])
    return table(["design ($/month, before OpenSearch)"] + [f"{b:,} boxes" for b in FLEETS], rows)


def per_component(boxes):
    results = [(name, model(boxes)) for name, model in DESIGNS]
    components = list(results[0][1][0].keys())
    rows = []
    for comp in components:
        rows.append([comp] + [money(r[0][comp]) for _, r in results])
    rows.append(["**total**"] + [f"**{money(sum(r[0].values()))}**" for _, r in results])
    for fact in ["invocations", "invocations per 1,000 readings", "concurrency",
                 "registry lookups/s", "shadow updates/s per group"]:
        rows.append([f"_{fact}_"] + [count(r[1][fact]) for _, r in results])
    names = [n.split(".")[0] for n, _ in DESIGNS]
    return table([f"{boxes:,} boxes, $/month"] + names, rows)


def kinesis_table():
    rows = []
    for per_message in (1, 6):
        for b in FLEETS:
            s = stream_shape(b, per_message)
            rows.append([
                f"{b:,}", str(per_message), f"{s['messages_s']:,.1f}", f"{s['record']:,}",
                f"{s['bytes_s'] / 1024:,.1f}",
                f"{s['messages_s'] / SHARD_IN_RECORDS:.2f}",
                f"{s['bytes_s'] / SHARD_IN_BYTES:.2f}",
                f"{SENSOR_FUNCTIONS * s['bytes_s'] / SHARD_OUT_BYTES:.2f}",
                str(s["shards"]),
            ])
    return table(["boxes", "readings/message", "records/s", "bytes/record", "KiB/s in",
                  "shards by records", "by bytes in", "by bytes out (3 readers)",
                  "shards (at 70 %)"], rows)


def lambda_table():
    rows = []
    for per_message in (1, 6):
        for b in FLEETS:
            _, f = stream(b, per_message, "provisioned")
            rows.append([f"{b:,}", str(per_message), str(f["shards"]),
                         count(f["invocations"] / MONTH_S), f"{f['readings per invocation']:,.1f}",
                         f"{f['invocations per 1,000 readings']:.2f}",
                         f"{STREAM_MS_FIXED + STREAM_MS_PER_READING * f['readings per invocation']:,.0f}"])
    return table(["boxes", "readings/message", "shards", "invocations/s", "readings/invocation",
                  "invocations per 1,000 readings", "billed ms/invocation"], rows)


def tradeoff_table():
    rows = []
    for per_message in (1, 6, 11):
        rows_, _ = stream(100_000, per_message, "provisioned")
        s = stream_shape(100_000, per_message)
        wait = per_message * READING_EVERY_S
        rows.append([str(per_message), f"{wait} s", f"{wait - READING_EVERY_S} s",
                     f"{s['payload'] + TOPIC_BYTES:,} B", str(s["shards"]),
                     money(rows_["IoT rules + actions"] + rows_["Kinesis"])])
    return table(["readings per message", "a message every", "added wait (worst)",
                  "message size", "shards at 100,000 boxes",
                  "rules + actions + Kinesis at 100,000 boxes, $/month"], rows)


# OpenSearch: (retention days, index period, data node type, hourly, max GiB per node, masters)
OS_PLAN = {
    100: (400, "monthly (`-%Y.%m`)", "r6g.large.search", OS_R6G_LARGE_HOUR, 1024, 0),
    10_000: (90, "daily (`-%Y.%m.%d`)", "r6g.2xlarge.search", 4 * OS_R6G_LARGE_HOUR, 3072, 3),
    100_000: (30, "daily (`-%Y.%m.%d`)", "r6g.2xlarge.search", 4 * OS_R6G_LARGE_HOUR, 3072, 3),
}
INDEX_OVERHEAD = 1.1  # source + index ~ 110 % of the source (AWS sizing guide)
STORAGE_FACTOR = 1.45  # AWS: source x (1 + replicas) x 1.45 = minimum storage
SHARD_TARGET_GIB = 40  # 30-50 GiB for time series


def opensearch_table():
    rows = []
    for b in FLEETS:
        retention, period, node, hourly, cap, masters = OS_PLAN[b]
        docs_day = b * 86_400 / READING_EVERY_S
        source_gib_day = docs_day * DOC_SOURCE_BYTES / GIB
        primary_gib_day = source_gib_day * INDEX_OVERHEAD
        per_index_day = primary_gib_day / SENSOR_FUNCTIONS
        per_index = per_index_day * (30 if "monthly" in period else 1)
        primaries = max(1, math.ceil(per_index / SHARD_TARGET_GIB))
        storage = source_gib_day * retention * 2 * STORAGE_FACTOR
        nodes = max(2, math.ceil(storage / cap))
        nodes += nodes % 2  # two zones
        ebs_gib = math.ceil(storage / nodes / 10) * 10
        cost = (nodes * hourly + masters * OS_M6G_LARGE_HOUR) * MONTH_H \
            + nodes * ebs_gib * OS_GP3_GB_MONTH
        rows.append([
            f"{b:,}", count(docs_day), f"{source_gib_day:,.1f}", f"{primary_gib_day:,.1f}",
            period, f"{per_index:,.1f}", str(primaries), f"{retention} d",
            f"{storage / 1024:,.2f} TiB" if storage >= 1024 else f"{storage:,.0f} GiB",
            f"{nodes} x {node}" + (f" + {masters} x m6g.large.search" if masters else ""),
            f"{ebs_gib:,} GiB", money(cost),
        ])
    return table(["boxes", "docs/day", "source GiB/day", "primary GiB/day", "index period",
                  "GiB per index (one sensor)", "primary shards", "raw retention",
                  "storage (1 replica, x1.45)", "domain", "gp3 per node", "$/month"], rows)


def render():
    parts = [
        "### Headline: $/month before OpenSearch\n\n" + headline(),
        *[f"### {b:,} boxes, per component\n\n" + per_component(b) for b in FLEETS],
        "### Kinesis shards: records/s = boxes / 10 / readings per message\n\n" + kinesis_table(),
        "### The box's setting: readings per message (gasdetector readings)\n\n"
        + tradeoff_table(),
        "### Stream path invocations (BatchSize 1,000 records, window 5 s, 3 functions)\n\n"
        + lambda_table(),
        "### OpenSearch sizing\n\n" + opensearch_table(),
    ]
    return "\n\n".join(parts) + "\n"


BEGIN = "<!-- scale_model.py: begin (generated; edit docs/scale_model.py, then run it with --write) -->"
END = "<!-- scale_model.py: end -->"


def main(argv):
    text = render()
    if len(argv) < 2:
        sys.stdout.write(text)
        return 0
    doc = pathlib.Path(__file__).with_name("scale.md")
    current = doc.read_text()
    head, sep, rest = current.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        print(f"{doc}: the markers are missing", file=sys.stderr)
        return 2
    wanted = head + BEGIN + "\n\n" + text + "\n" + END + tail
    if argv[1] == "--write":
        doc.write_text(wanted)
        return 0
    if argv[1] == "--check":
        if wanted != current:
            print(f"{doc} is stale: run python3 docs/scale_model.py --write", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
