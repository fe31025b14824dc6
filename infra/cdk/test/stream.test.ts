// The stream path (issue 22), selected by the stack parameter IngestPath: the stream, the rule,
// the event source mappings, the queues, the roles, the box policy, the alarms, the outputs
// with IngestPath=stream, and none of them with IngestPath=direct (the default). The
// counterpart of the stream-path tests in infra/test_template_operations.py.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import { sensorFilter, streamRuleSql } from '../lib/stream';
import { synth, synthRaw } from './conditions';

const SENSORS = { gasdetector: 'Gasdetector', dust: 'Dust', temp: 'Temp' } as const;
const STREAM_TYPES = ['AWS::Kinesis::Stream', 'AWS::SQS::Queue', 'AWS::Lambda::EventSourceMapping'];
const STREAM_OUTPUTS = ['StreamName', 'StreamArn', 'StreamIngestTopic', 'StreamFailureQueueUrl', 'StreamRuleErrorQueueUrl'];
const NUMBERS: Record<string, [number, number, number | undefined]> = {
  StreamShards: [0, 0, undefined],
  StreamBatchSize: [1000, 1, 10000],
  StreamBatchingWindowSeconds: [5, 0, 300],
  StreamMaxRetryAttempts: [5, 0, 10000],
  StreamMaxRecordAgeSeconds: [21600, 60, 86400],
  StreamParallelization: [1, 1, 10],
};

type Json = any;
interface Statement { Sid?: string; Effect: string; Action: string | string[]; Resource: unknown }
const actionsOf = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);

/** Renders an intrinsic as a string, `${...}` for references (as in stack.test.ts). */
function render(value: unknown): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) return value.map(render).join(',');
  const obj = value as Record<string, unknown>;
  if ('Fn::Join' in obj) {
    const [sep, parts] = obj['Fn::Join'] as [string, unknown[]];
    return parts.map(render).join(sep);
  }
  if ('Ref' in obj) return `\${${obj.Ref}}`;
  if ('Fn::GetAtt' in obj) return `\${${(obj['Fn::GetAtt'] as string[]).join('.')}}`;
  return JSON.stringify(value);
}

const functionId = (t: Template, sensor: string) => {
  const found = Object.keys(t.findResources('AWS::Lambda::Function', { Properties: { Description: `POST /${sensor}` } }));
  assert.equal(found.length, 1, sensor);
  return found[0];
};
const roleOf = (t: Template, sensor: string): string =>
  t.toJSON().Resources[functionId(t, sensor)].Properties.Role['Fn::GetAtt'][0];
/** Every statement of the AWS::IAM::Policy resources attached to a role. */
const policyStatements = (t: Template, roleId: string): Statement[] =>
  Object.values(t.findResources('AWS::IAM::Policy'))
    .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
const inlineStatements = (t: Template, roleId: string): Statement[] =>
  t.toJSON().Resources[roleId].Properties.Policies.flatMap((p: Json) => p.PolicyDocument.Statement);
const boxStatements = (t: Template): Statement[] =>
  Object.values(t.findResources('AWS::IoT::Policy'))[0].Properties.PolicyDocument.Statement;
const alarmsOn = (t: Template, metric: string) =>
  Object.values(t.findResources('AWS::CloudWatch::Alarm')).filter((a) => a.Properties.MetricName === metric);

describe('stream path: one parameter', () => {
  const raw = synthRaw().toJSON();

  it('has IngestPath (direct by default) and the stream parameters, in their own group', () => {
    assert.deepEqual([raw.Parameters.IngestPath.Default, raw.Parameters.IngestPath.AllowedValues], ['direct', ['direct', 'stream']]);
    const rule = raw.Parameters.StreamRuleName;
    assert.deepEqual([rule.Default, rule.AllowedPattern], ['sensorbox_readings', '^[a-zA-Z0-9_]+$']);
    for (const [name, [value, min, max]] of Object.entries(NUMBERS)) {
      const p = raw.Parameters[name];
      assert.deepEqual([p.Type, p.Default, p.MinValue, p.MaxValue], ['Number', value, min, max], name);
    }
    const [group] = raw.Metadata['AWS::CloudFormation::Interface'].ParameterGroups;
    assert.deepEqual(group, { Label: { default: 'Stream path' }, Parameters: ['IngestPath', 'StreamRuleName', ...Object.keys(NUMBERS)] });
    assert.deepEqual(raw.Conditions.StreamPath, { 'Fn::Equals': [{ Ref: 'IngestPath' }, 'stream'] });
    assert.deepEqual(raw.Conditions.StreamOnDemand, { 'Fn::Equals': [{ Ref: 'StreamShards' }, '0'] });
  });

  it('takes the parameter defaults from the props (cdk -c ingestPath=stream ...)', () => {
    const p = synthRaw({ ingestPath: 'stream', streamRuleName: 'fleet', streamShards: 4, streamBatchSize: 500 }).toJSON().Parameters;
    assert.deepEqual([p.IngestPath.Default, p.StreamRuleName.Default, p.StreamShards.Default, p.StreamBatchSize.Default],
      ['stream', 'fleet', 4, 500]);
  });

  it('creates nothing of it with IngestPath=direct: every stream resource and output is conditional', () => {
    const conditional = Object.entries<Json>(raw.Resources).filter(([, r]) => r.Condition !== undefined);
    assert.ok(conditional.every(([, r]) => r.Condition === 'StreamPath'), JSON.stringify(conditional.map(([k]) => k)));
    const direct = synth();
    const json = direct.toJSON();
    for (const type of STREAM_TYPES) direct.resourceCountIs(type, 0);
    assert.equal(Object.keys(direct.findResources('AWS::IoT::TopicRule', { Properties: { RuleName: { Ref: 'StreamRuleName' } } })).length, 0);
    for (const output of STREAM_OUTPUTS) assert.equal(json.Outputs[output], undefined, output);
    assert.deepEqual(Object.keys(json.Resources).sort(),
      Object.keys(raw.Resources).filter((k) => raw.Resources[k].Condition === undefined).sort());
    for (const [, r] of conditional) assert.notEqual(r.Type, 'AWS::Lambda::Function', 'the functions are the same in both modes');
    // No stream permission anywhere, no Basic Ingest in the box policy, no stream alarms.
    for (const s of Object.values(direct.findResources('AWS::IAM::Policy')).flatMap((p) => p.Properties.PolicyDocument.Statement)) {
      assert.ok(!actionsOf(s).some((a) => a.startsWith('kinesis:') || a.startsWith('sqs:')), JSON.stringify(s));
    }
    assert.ok(!JSON.stringify(boxStatements(direct)).includes('$aws/rules'));
    assert.equal(alarmsOn(direct, 'IteratorAge').length, 0);
    assert.equal(alarmsOn(direct, 'ApproximateNumberOfMessagesVisible').length, 0);
    // The direct path's rules are there in both modes.
    const stream = synth({}, { IngestPath: 'stream' });
    for (const t of [direct, stream]) {
      for (const sensor of Object.keys(SENSORS)) {
        assert.equal(Object.keys(t.findResources('AWS::IoT::TopicRule', {
          Properties: { TopicRulePayload: { Sql: `SELECT topic(2) AS thing, encode(*, 'base64') AS payload FROM 'devices/+/data/${sensor}'` } },
        })).length, 1, sensor);
      }
    }
  });
});

describe('stream path: IngestPath=stream', () => {
  const t = synth({}, { IngestPath: 'stream' });
  const json = t.toJSON();
  const r = json.Resources;

  it('has one stream: on demand by default, provisioned with StreamShards, 24 h, the AWS managed key', () => {
    t.resourceCountIs('AWS::Kinesis::Stream', 1);
    assert.deepEqual(r.ReadingsStream.Properties, {
      Name: 'Test-readings',
      RetentionPeriodHours: 24,
      StreamModeDetails: { StreamMode: 'ON_DEMAND' },
      StreamEncryption: { EncryptionType: 'KMS', KeyId: 'alias/aws/kinesis' },
    });
    const provisioned = synth({}, { IngestPath: 'stream', StreamShards: 3 }).toJSON().Resources.ReadingsStream.Properties;
    assert.deepEqual(provisioned.StreamModeDetails, { StreamMode: 'PROVISIONED' });
    assert.deepEqual(provisioned.ShardCount, { Ref: 'StreamShards' });
  });

  it('has the two queues: 14 days, SSE-SQS', () => {
    t.resourceCountIs('AWS::SQS::Queue', 2);
    for (const queue of ['StreamFailureQueue', 'StreamRuleErrorQueue']) {
      assert.deepEqual(r[queue].Properties, { MessageRetentionPeriod: 1209600, SqsManagedSseEnabled: true }, queue);
    }
  });

  it('has the rule: Basic Ingest SQL, partition key groupid, its own put role, failed messages to StreamRuleErrorQueue', () => {
    const rule = r.StreamRule.Properties;
    assert.deepEqual(rule.RuleName, { Ref: 'StreamRuleName' });
    const payload = rule.TopicRulePayload;
    assert.equal(payload.Sql, streamRuleSql('devices'));
    assert.equal(payload.Sql, "SELECT topic(2) AS thing, topic(4) AS sensor, topic(5) AS groupid, encode(*, 'base64') AS payload "
      + "FROM 'devices/+/data/+/+'");
    assert.equal(payload.AwsIotSqlVersion, '2016-03-23');
    assert.equal(payload.Actions.length, 1);
    const kinesis = payload.Actions[0].Kinesis;
    assert.deepEqual(kinesis.StreamName, { Ref: 'ReadingsStream' });
    assert.equal(kinesis.PartitionKey, '${topic(5)}');
    const sqs = payload.ErrorAction.Sqs;
    assert.deepEqual([sqs.QueueUrl, sqs.UseBase64], [{ Ref: 'StreamRuleErrorQueue' }, false]);
    for (const [roleArn, action, resource] of [
      [kinesis.RoleArn, 'kinesis:PutRecord', '${ReadingsStream.Arn}'],
      [sqs.RoleArn, 'sqs:SendMessage', '${StreamRuleErrorQueue.Arn}'],
    ] as const) {
      const roleId = roleArn['Fn::GetAtt'][0];
      const role = r[roleId].Properties;
      assert.deepEqual(role.AssumeRolePolicyDocument.Statement, [{
        Effect: 'Allow', Principal: { Service: 'iot.amazonaws.com' }, Action: 'sts:AssumeRole',
        Condition: { StringEquals: { 'aws:SourceAccount': '123456789012' } },
      }]);
      const statements = inlineStatements(t, roleId);
      assert.deepEqual(statements.map((s) => [s.Effect, s.Action, render(s.Resource)]), [['Allow', action, resource]], roleId);
      assert.deepEqual(policyStatements(t, roleId), [], `${roleId}: nothing else`);
      assert.equal(role.ManagedPolicyArns, undefined);
    }
  });

  it('has one event source mapping per sensor function, filtered to its sensor, failures to StreamFailureQueue', () => {
    t.resourceCountIs('AWS::Lambda::EventSourceMapping', 3);
    for (const [sensor, id] of Object.entries(SENSORS)) {
      const mapping = r[`${id}StreamMapping`];
      const p = { ...mapping.Properties };
      const [filter] = p.FilterCriteria.Filters;
      assert.deepEqual(JSON.parse(filter.Pattern), { data: { sensor: [sensor] } });
      assert.equal(filter.Pattern, sensorFilter(sensor));
      assert.equal(p.FilterCriteria.Filters.length, 1);
      delete p.FilterCriteria;
      assert.deepEqual(p, {
        FunctionName: { Ref: functionId(t, sensor) },
        EventSourceArn: { 'Fn::GetAtt': ['ReadingsStream', 'Arn'] },
        StartingPosition: 'TRIM_HORIZON',
        BatchSize: { Ref: 'StreamBatchSize' },
        MaximumBatchingWindowInSeconds: { Ref: 'StreamBatchingWindowSeconds' },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        BisectBatchOnFunctionError: true,
        MaximumRetryAttempts: { Ref: 'StreamMaxRetryAttempts' },
        MaximumRecordAgeInSeconds: { Ref: 'StreamMaxRecordAgeSeconds' },
        ParallelizationFactor: { Ref: 'StreamParallelization' },
        DestinationConfig: { OnFailure: { Destination: { 'Fn::GetAtt': ['StreamFailureQueue', 'Arn'] } } },
      }, sensor);
      // Lambda checks the role's permissions when it creates the mapping: after the policy.
      const [policyId] = mapping.DependsOn;
      assert.ok(r[policyId].Properties.Roles.some((role: Json) => role.Ref === roleOf(t, sensor)), sensor);
    }
  });

  it("lets each function's role read only the stream and send only to StreamFailureQueue", () => {
    for (const sensor of Object.keys(SENSORS)) {
      const stream = policyStatements(t, roleOf(t, sensor))
        .filter((s) => actionsOf(s).some((a) => a.startsWith('kinesis:') || a.startsWith('sqs:')));
      assert.deepEqual(stream.map((s) => [s.Sid, actionsOf(s), render(s.Resource)]), [
        ['ReadReadingsStream', ['kinesis:DescribeStream', 'kinesis:DescribeStreamSummary', 'kinesis:GetRecords',
          'kinesis:GetShardIterator', 'kinesis:ListShards'], '${ReadingsStream.Arn}'],
        ['StreamOnFailure', ['sqs:SendMessage'], '${StreamFailureQueue.Arn}'],
      ], sensor);
      // The rest is the direct path's, unchanged.
      assert.equal(policyStatements(t, roleOf(t, sensor)).length, policyStatements(synth(), roleOf(synth(), sensor)).length + 2);
    }
    for (const description of ['GET / (the fleet page) and GET /api/* (read API)', 'scheduled no-data check (every minute)']) {
      const [fn] = Object.values(t.findResources('AWS::Lambda::Function', { Properties: { Description: description } }));
      const actions = policyStatements(t, fn.Properties.Role['Fn::GetAtt'][0]).flatMap(actionsOf);
      assert.ok(!actions.some((a) => a.startsWith('kinesis:') || a.startsWith('sqs:')), description);
    }
  });

  it('lets a box publish to the Basic Ingest topic only as its own thing and group', () => {
    const ingest = boxStatements(t).filter((s) => JSON.stringify(s).includes('$aws/rules'));
    assert.deepEqual(ingest.map((s) => [s.Effect, s.Action, (s.Resource as unknown[]).map(render)]), [[
      'Allow', 'iot:Publish',
      ['gasdetector', 'dust', 'temp'].map((sensor) =>
        'arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/$aws/rules/${StreamRuleName}/devices/'
        + `\${iot:Connection.Thing.ThingName}/data/${sensor}/\${iot:Connection.Thing.Attributes[groupid]}`),
    ]]);
    assert.equal(boxStatements(t).length, boxStatements(synth()).length + 1);
  });

  it("alarms on each consumer's iterator age and on both queues, to the alarm topic", () => {
    const [topic] = Object.keys(t.findResources('AWS::SNS::Topic'));
    const ages = alarmsOn(t, 'IteratorAge');
    assert.deepEqual(ages.map((a) => a.Properties.Dimensions[0].Value.Ref).sort(),
      Object.keys(SENSORS).map((s) => functionId(t, s)).sort());
    for (const a of ages) {
      const p = a.Properties;
      assert.deepEqual([p.Namespace, p.Statistic, p.Period, p.EvaluationPeriods, p.DatapointsToAlarm, p.Threshold, p.ComparisonOperator],
        ['AWS/Lambda', 'Maximum', 60, 5, 5, 60000, 'GreaterThanThreshold']);
    }
    const queues = alarmsOn(t, 'ApproximateNumberOfMessagesVisible');
    assert.deepEqual(queues.map((a) => render(a.Properties.Dimensions[0].Value)).sort(),
      ['${StreamFailureQueue.QueueName}', '${StreamRuleErrorQueue.QueueName}']);
    for (const a of queues) {
      const p = a.Properties;
      assert.deepEqual([p.Namespace, p.Statistic, p.Threshold, p.ComparisonOperator], ['AWS/SQS', 'Maximum', 0, 'GreaterThanThreshold']);
    }
    for (const a of [...ages, ...queues]) {
      assert.deepEqual([a.Properties.AlarmActions, a.Properties.OKActions], [[{ Ref: topic }], [{ Ref: topic }]]);
      assert.equal(a.Properties.TreatMissingData, 'notBreaching');
    }
    assert.equal(Object.keys(t.findResources('AWS::CloudWatch::Alarm')).length, 3 * 3 + 4 + 5 + 5);
    const [dashboard] = Object.values(t.findResources('AWS::CloudWatch::Dashboard'));
    const body = JSON.stringify(dashboard.Properties.DashboardBody);
    assert.ok(body.includes('\\"IteratorAge\\"'), 'iterator age on the dashboard');
  });

  it('outputs the stream, the Basic Ingest topic prefix and the queue URLs', () => {
    const o = json.Outputs;
    assert.deepEqual(o.StreamName.Value, { Ref: 'ReadingsStream' });
    assert.deepEqual(o.StreamArn.Value, { 'Fn::GetAtt': ['ReadingsStream', 'Arn'] });
    assert.equal(render(o.StreamIngestTopic.Value), '$aws/rules/${StreamRuleName}/devices');
    assert.match(o.StreamIngestTopic.Description, /transport = "stream"/);
    assert.deepEqual(o.StreamFailureQueueUrl.Value, { Ref: 'StreamFailureQueue' });
    assert.deepEqual(o.StreamRuleErrorQueueUrl.Value, { Ref: 'StreamRuleErrorQueue' });
  });

  it('follows a custom device topic root', () => {
    const custom = synth({ deviceTopicRoot: 'sensors' }, { IngestPath: 'stream' });
    const [rule] = Object.values(custom.findResources('AWS::IoT::TopicRule', { Properties: { RuleName: { Ref: 'StreamRuleName' } } }));
    assert.match(rule.Properties.TopicRulePayload.Sql, /FROM 'sensors\/\+\/data\/\+\/\+'$/);
    assert.match(render(boxStatements(custom).find((s) => JSON.stringify(s).includes('$aws/rules'))!.Resource), /\/sensors\/\$\{iot:Connection/);
  });
});
