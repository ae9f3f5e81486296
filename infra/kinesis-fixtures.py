#!/usr/bin/env python3
"""Regenerates the Kinesis event fixtures in events/kinesis/ from the readable sources in
events/kinesis/readable/.

A readable source is {"shard": "shardId-…", "records": [...]}, each record either
{"data": {<envelope>}} (serialised as compact JSON; partition key = the profile key, i.e.
user_id, else "anon:<anonymous_id>") or {"raw": "<any text>", "partition_key": "…"} for
records that are not valid JSON. The output has the exact shape Lambda delivers
(aws_lambda_events KinesisEvent), with base64 data and increasing sequence numbers.

    python3 infra/kinesis-fixtures.py
"""
import base64
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "events" / "kinesis" / "readable"
OUT = ROOT / "events" / "kinesis"
SEQ_BASE = 49590338271490256608559692538361571095921575989136588800
ARRIVAL = 1795600000.125


def profile_key(env):
    if env.get("user_id"):
        return env["user_id"]
    if env.get("anonymous_id"):
        return "anon:" + env["anonymous_id"]
    return "unknown"


def build(src):
    shard = src.get("shard", "shardId-000000000000")
    stream = src.get("stream", "ember-events")
    out = []
    for i, rec in enumerate(src["records"]):
        if "data" in rec:
            data = json.dumps(rec["data"], separators=(",", ":")).encode()
            key = rec.get("partition_key") or profile_key(rec["data"])
        else:
            data = rec["raw"].encode()
            key = rec["partition_key"]
        seq = str(SEQ_BASE + 100 * (i + 1))
        out.append({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": key,
                "sequenceNumber": seq,
                "data": base64.b64encode(data).decode(),
                "approximateArrivalTimestamp": ARRIVAL + i,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/ember-enrich",
            "awsRegion": "us-east-1",
            "eventSourceARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}",
        })
    return {"Records": out}


def main():
    for path in sorted(SRC.glob("*.json")):
        event = build(json.loads(path.read_text()))
        target = OUT / path.name
        target.write_text(json.dumps(event, indent=2) + "\n")
        print(f"wrote {target.relative_to(ROOT)} ({len(event['Records'])} records)")


if __name__ == "__main__":
    main()
