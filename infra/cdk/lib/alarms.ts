// Alarm state and the scheduled no-data check (issue 13): the functions' access to the
// groups' alarm shadows, the boxes' read access to their own, and the `nodata` function
// on an EventBridge schedule. Kept apart from the stack's main body so it reads as one unit.
import * as path from 'node:path';
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { RustFunction } from 'cargo-lambda-cdk';

/** Name of the named shadow holding a group's alarm state. */
export const ALARM_SHADOW = 'alarms';

export interface AlarmsProps {
  readonly repoRoot: string;
  readonly architecture: lambda.Architecture;
  readonly retention: logs.RetentionDays;
  /** The ingest functions: they read and write the alarm shadows. */
  readonly ingest: RustFunction[];
  /** Environment the no-data function shares with the ingest ones (endpoints, topic, ...). */
  readonly environment: Record<string, string>;
  readonly topicPrefix: string;
  /** The alarm thing of a group is `<prefix><groupid>`. */
  readonly thingPrefix: string;
  /** Seconds without a reading before a `no data` alarm. */
  readonly noDataAfter: number;
  /** The search permission of the no-data check (read-only). */
  readonly searchStatement: iam.PolicyStatement;
  readonly memorySize: number;
}

/** Where a group's alarm state lives: read by the ingest functions and the no-data check. */
export function alarmEnvironment(thingPrefix: string): Record<string, string> {
  return { ALARM_THING_TEMPLATE: `${thingPrefix}{groupid}`, ALARM_SHADOW: ALARM_SHADOW };
}

/** `iot:GetThingShadow` / `iot:UpdateThingShadow` on the alarm shadows only. */
export function shadowStatement(stack: Stack, thingPrefix: string): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: 'AlarmState',
    actions: ['iot:GetThingShadow', 'iot:UpdateThingShadow'],
    resources: [stack.formatArn({ service: 'iot', resource: 'thing', resourceName: `${thingPrefix}*/${ALARM_SHADOW}` })],
  });
}

/** The box policy's statements for reading its group's alarm shadow over MQTT. */
export function boxShadowStatements(
  iotArn: (resource: string, name: string) => string,
  thingPrefix: string,
): object[] {
  const thing = `$aws/things/${thingPrefix}\${iot:Connection.Thing.Attributes[groupid]}/shadow/name/${ALARM_SHADOW}`;
  const answers = ['get/accepted', 'get/rejected', 'update/documents'];
  return [
    { Effect: 'Allow', Action: 'iot:Publish', Resource: iotArn('topic', `${thing}/get`) },
    { Effect: 'Allow', Action: 'iot:Subscribe', Resource: answers.map((a) => iotArn('topicfilter', `${thing}/${a}`)) },
    { Effect: 'Allow', Action: 'iot:Receive', Resource: answers.map((a) => iotArn('topic', `${thing}/${a}`)) },
  ];
}

/** Grants the ingest functions the alarm shadows and adds the scheduled no-data check. */
export function addAlarms(stack: Stack, props: AlarmsProps): RustFunction {
  const shadow = shadowStatement(stack, props.thingPrefix);
  for (const fn of props.ingest) fn.addToRolePolicy(shadow);
  const fn = new RustFunction(stack, 'NodataFunction', {
    manifestPath: path.join(props.repoRoot, 'functions', 'nodata'),
    bundling: { architecture: props.architecture },
    description: 'scheduled no-data check (every minute)',
    memorySize: props.memorySize,
    timeout: Duration.seconds(50),
    logGroup: new logs.LogGroup(stack, 'NodataLogGroup', {
      retention: props.retention,
      removalPolicy: RemovalPolicy.DESTROY,
    }),
    environment: { ...props.environment, NO_DATA_AFTER: String(props.noDataAfter) },
  });
  fn.addToRolePolicy(new iam.PolicyStatement({
    sid: 'PublishWarnings',
    actions: ['iot:Publish'],
    resources: [stack.formatArn({ service: 'iot', resource: 'topic', resourceName: `${props.topicPrefix}/*` })],
  }));
  fn.addToRolePolicy(shadow);
  fn.addToRolePolicy(props.searchStatement);
  new events.Rule(stack, 'NoDataSchedule', {
    description: 'the no-data check',
    schedule: events.Schedule.rate(Duration.minutes(1)),
    targets: [new targets.LambdaFunction(fn, { retryAttempts: 0 })],
  });
  return fn;
}
