// The stream path for large fleets (issue 22), the counterpart of the "stream path" block of
// infra/template.yaml: selected at deploy time by the stack parameter IngestPath (direct |
// stream), so every resource here carries the condition StreamPath and the direct path is
// the same in both modes. Boxes publish batches to the Basic Ingest topic
// $aws/rules/<StreamRuleName>/<root>/<thing>/data/<sensor>/<groupid>; the rule puts one record
// per message into a Kinesis data stream, partitioned by groupid; each sensor function reads
// its sensor's records through its own event source mapping. Kept apart from the stack's
// main body so it reads as one unit.
import { Aws, CfnCondition, CfnOutput, CfnParameter, CfnResource, Fn, Stack, Token, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';

/** Defaults of the stream path's stack parameters (each can be given at deploy time too). */
export interface StreamPathDefaults {
  /** `direct` (default) or `stream`. */
  readonly ingestPath?: 'direct' | 'stream';
  /** Name of the topic rule; boxes publish to `$aws/rules/<name>/...`. Default `sensorbox_readings`. */
  readonly streamRuleName?: string;
  /** 0 (default): on-demand; N: provisioned with N shards. */
  readonly streamShards?: number;
  /** Event source mapping BatchSize. Default 1000. */
  readonly streamBatchSize?: number;
  /** MaximumBatchingWindowInSeconds. Default 5. */
  readonly streamBatchingWindowSeconds?: number;
  /** MaximumRetryAttempts (bounded). Default 5. */
  readonly streamMaxRetryAttempts?: number;
  /** MaximumRecordAgeInSeconds. Default 21600: 18 of the stream's 24 hours left to redrive. */
  readonly streamMaxRecordAgeSeconds?: number;
  /** ParallelizationFactor. Default 1. */
  readonly streamParallelization?: number;
}

export interface StreamPathProps extends StreamPathDefaults {
  /** The sensor functions: logical id prefix (`Gasdetector`), sensor name, function. */
  readonly consumers: { id: string; sensor: string; fn: lambda.IFunction }[];
  /** Boxes publish under `<root>/<thing>/...`. */
  readonly deviceRoot: string;
}

/** The SQL of the stream rule (Basic Ingest: topic(1) is the root, the prefix is not visible). */
export function streamRuleSql(deviceRoot: string): string {
  return "SELECT topic(2) AS thing, topic(4) AS sensor, topic(5) AS groupid, encode(*, 'base64') AS payload "
    + `FROM '${deviceRoot}/+/data/+/+'`;
}

/** The FilterCriteria pattern that gives a sensor's function only that sensor's records. */
export function sensorFilter(sensor: string): string {
  return JSON.stringify({ data: { sensor: [sensor] } });
}

/** Lambda's read access to one stream (standard iterator; ListStreams is not needed). */
export const STREAM_READ_ACTIONS = [
  'kinesis:DescribeStream', 'kinesis:DescribeStreamSummary', 'kinesis:GetRecords',
  'kinesis:GetShardIterator', 'kinesis:ListShards',
];

export class StreamPath {
  readonly condition: CfnCondition;
  readonly ruleName: CfnParameter;
  readonly stream: kinesis.CfnStream;
  readonly failureQueue: sqs.CfnQueue;
  readonly ruleErrorQueue: sqs.CfnQueue;
  private readonly deviceRoot: string;

  constructor(stack: Stack, props: StreamPathProps) {
    this.deviceRoot = props.deviceRoot;
    const number = (id: string, value: number, min: number, max: number | undefined, description: string) =>
      new CfnParameter(stack, id, { type: 'Number', default: value, minValue: min, maxValue: max, description });
    const ingestPath = new CfnParameter(stack, 'IngestPath', {
      type: 'String',
      default: props.ingestPath ?? 'direct',
      allowedValues: ['direct', 'stream'],
      description: 'direct (default): each request or MQTT message invokes a function (the HTTPS API and the MQTT data '
        + 'rules). stream: also the stream path for large fleets (docs/deploy.md): boxes publish batches to the Basic '
        + 'Ingest topic $aws/rules/<StreamRuleName>/<root>/<thing>/data/<sensor>/<groupid>, a topic rule puts them '
        + "into a Kinesis data stream, and each sensor function reads its sensor's records in batches. The direct "
        + 'paths stay in both modes.',
    });
    this.ruleName = new CfnParameter(stack, 'StreamRuleName', {
      type: 'String',
      default: props.streamRuleName ?? 'sensorbox_readings',
      allowedPattern: '^[a-zA-Z0-9_]+$',
      maxLength: 128,
      description: "The stream path's topic rule; boxes publish to $aws/rules/<this name>/... (sensorbox [stream] rule).",
    });
    const shards = number('StreamShards', props.streamShards ?? 0, 0, undefined,
      'Capacity of the readings stream: 0 (default) on-demand; N provisioned with N shards (each takes 1 MB/s or 1,000 records/s in).');
    const batchSize = number('StreamBatchSize', props.streamBatchSize ?? 1000, 1, 10000,
      'Most records per function invocation of the stream path (event source mapping BatchSize).');
    const window = number('StreamBatchingWindowSeconds', props.streamBatchingWindowSeconds ?? 5, 0, 300,
      'Seconds the event source mapping gathers records before it invokes (MaximumBatchingWindowInSeconds).');
    const retries = number('StreamMaxRetryAttempts', props.streamMaxRetryAttempts ?? 5, 0, 10000,
      'Retries of a failing batch before its description goes to StreamFailureQueue (MaximumRetryAttempts).');
    const maxAge = number('StreamMaxRecordAgeSeconds', props.streamMaxRecordAgeSeconds ?? 21600, 60, 86400,
      'Records older than this are given up to StreamFailureQueue (MaximumRecordAgeInSeconds; the stream keeps 24 h).');
    const parallelization = number('StreamParallelization', props.streamParallelization ?? 1, 1, 10,
      'Concurrent batches per shard and function (ParallelizationFactor); order stays per partition key (groupid).');
    // The console shows the stream path's parameters together, as the SAM template's group does.
    stack.templateOptions.metadata = {
      ...stack.templateOptions.metadata,
      'AWS::CloudFormation::Interface': {
        ParameterGroups: [{
          Label: { default: 'Stream path' },
          Parameters: [ingestPath, this.ruleName, shards, batchSize, window, retries, maxAge, parallelization]
            .map((p) => p.logicalId),
        }],
      },
    };

    this.condition = new CfnCondition(stack, 'StreamPath', {
      expression: Fn.conditionEquals(ingestPath.valueAsString, 'stream'),
    });
    const onDemand = new CfnCondition(stack, 'StreamOnDemand', {
      expression: Fn.conditionEquals(shards.valueAsString, '0'),
    });
    const only = <T extends CfnResource>(resource: T): T => {
      resource.cfnOptions.condition = this.condition;
      return resource;
    };

    this.stream = only(new kinesis.CfnStream(stack, 'ReadingsStream', {
      name: `${stack.stackName}-readings`,
      retentionPeriodHours: 24,
      streamModeDetails: { streamMode: Token.asString(Fn.conditionIf(onDemand.logicalId, 'ON_DEMAND', 'PROVISIONED')) },
      shardCount: Token.asNumber(Fn.conditionIf(onDemand.logicalId, Aws.NO_VALUE, shards.valueAsNumber)),
      // The AWS managed key: producers and consumers need no KMS permissions for it.
      streamEncryption: { encryptionType: 'KMS', keyId: 'alias/aws/kinesis' },
    }));
    // The validator reads ShardCount's provisioned branch with StreamShards' default (0),
    // which that branch never sees: 0 selects ON_DEMAND and no ShardCount at all.
    Validations.of(stack).acknowledge({
      id: 'CloudFormation-Validate::W1030',
      reason: 'ShardCount is Ref StreamShards only when StreamShards is not 0 (StreamOnDemand)',
    });
    const queue = (id: string) => only(new sqs.CfnQueue(stack, id, {
      messageRetentionPeriod: 1209600,
      sqsManagedSseEnabled: true,
    }));
    // The event source mappings' on-failure destination (Lambda's record of a batch given up).
    this.failureQueue = queue('StreamFailureQueue');
    // The rule's error action (a message it could not put into the stream, with its payload).
    this.ruleErrorQueue = queue('StreamRuleErrorQueue');

    const iotRole = (id: string, policyName: string, statement: iam.PolicyStatement) => {
      const role = new iam.Role(stack, id, {
        assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', {
          conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
        }),
        inlinePolicies: { [policyName]: new iam.PolicyDocument({ statements: [statement] }) },
      });
      only(role.node.defaultChild as iam.CfnRole);
      return role;
    };
    const putRole = iotRole('StreamRuleRole', 'put-readings', new iam.PolicyStatement({
      actions: ['kinesis:PutRecord'], resources: [this.stream.attrArn],
    }));
    const errorRole = iotRole('StreamRuleErrorRole', 'keep-failed-messages', new iam.PolicyStatement({
      actions: ['sqs:SendMessage'], resources: [this.ruleErrorQueue.attrArn],
    }));
    only(new iot.CfnTopicRule(stack, 'StreamRule', {
      ruleName: this.ruleName.valueAsString,
      topicRulePayload: {
        description: 'Batches of readings on the Basic Ingest topic into the readings stream, by groupid',
        awsIotSqlVersion: '2016-03-23',
        ruleDisabled: false,
        sql: streamRuleSql(props.deviceRoot),
        actions: [{ kinesis: { streamName: this.stream.ref, partitionKey: '${topic(5)}', roleArn: putRole.roleArn } }],
        errorAction: { sqs: { queueUrl: this.ruleErrorQueue.ref, roleArn: errorRole.roleArn, useBase64: false } },
      },
    }));

    // One mapping per sensor function, filtered to its sensor; its role may read this stream
    // and send to the failure queue, and nothing else of the stream path.
    for (const { id, sensor, fn } of props.consumers) {
      const policy = new iam.Policy(stack, `${id}StreamPolicy`, {
        roles: [fn.role!],
        statements: [
          new iam.PolicyStatement({ sid: 'ReadReadingsStream', actions: STREAM_READ_ACTIONS, resources: [this.stream.attrArn] }),
          new iam.PolicyStatement({ sid: 'StreamOnFailure', actions: ['sqs:SendMessage'], resources: [this.failureQueue.attrArn] }),
        ],
      });
      const policyResource = only(policy.node.defaultChild as iam.CfnPolicy);
      const mapping = only(new lambda.CfnEventSourceMapping(stack, `${id}StreamMapping`, {
        functionName: fn.functionName,
        eventSourceArn: this.stream.attrArn,
        startingPosition: 'TRIM_HORIZON',
        batchSize: batchSize.valueAsNumber,
        maximumBatchingWindowInSeconds: window.valueAsNumber,
        functionResponseTypes: ['ReportBatchItemFailures'],
        bisectBatchOnFunctionError: true,
        maximumRetryAttempts: retries.valueAsNumber,
        maximumRecordAgeInSeconds: maxAge.valueAsNumber,
        parallelizationFactor: parallelization.valueAsNumber,
        filterCriteria: { filters: [{ pattern: sensorFilter(sensor) }] },
        destinationConfig: { onFailure: { destination: this.failureQueue.attrArn } },
      }));
      // Lambda checks the role's stream and queue permissions when it creates the mapping.
      mapping.addResourceDependency(policyResource);
    }

    const output = (id: string, value: string, description?: string) =>
      new CfnOutput(stack, id, { value, description, condition: this.condition });
    output('StreamName', this.stream.ref, 'The readings stream (aws kinesis ... --stream-name <this>)');
    output('StreamArn', this.stream.attrArn);
    output('StreamIngestTopic', `$aws/rules/${this.ruleName.valueAsString}/${props.deviceRoot}`,
      'A box publishes its batches to <this>/<its thing>/data/<sensor>/<its groupid> '
      + '(sensorbox: transport = "stream", [stream] rule = StreamRuleName)');
    output('StreamFailureQueueUrl', this.failureQueue.ref,
      "The event source mappings' on-failure destination (batches given up; redrive in docs/deploy.md)");
    output('StreamRuleErrorQueueUrl', this.ruleErrorQueue.ref,
      "The stream rule's error action (messages not put into the stream; redrive in docs/deploy.md)");
  }

  /** The box policy's statement: publish on the Basic Ingest topic as its own thing and group, on the stream path only. */
  boxStatement(iotArn: (resource: string, name: string) => string): unknown {
    // One resource per route, not data/*: a policy's * also matches '/', so it would let a
    // box add topic levels and choose the partition key.
    return Fn.conditionIf(this.condition.logicalId, {
      Effect: 'Allow',
      Action: 'iot:Publish',
      Resource: ['gasdetector', 'dust', 'temp'].map((sensor) => iotArn('topic', `$aws/rules/${this.ruleName.valueAsString}/`
        + `${this.deviceRoot}/\${iot:Connection.Thing.ThingName}/data/${sensor}/\${iot:Connection.Thing.Attributes[groupid]}`)),
    }, Aws.NO_VALUE);
  }
}
