// What an on-call engineer gets: an SNS topic, CloudWatch alarms and a dashboard, the same as
// the "operations" block of infra/template.yaml (README "Operations" explains each alarm).
import { CfnCondition, Duration, Stack } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as opensearch from 'aws-cdk-lib/aws-opensearchservice';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

/** The EMF namespace default; functions read it as METRICS_NAMESPACE. */
export const DEFAULT_METRICS_NAMESPACE = 'SensorIngest';

export interface OperationsProps {
  readonly namespace: string;
  /** sensor name -> its function. */
  readonly functions: Record<string, lambda.IFunction>;
  readonly restApi: apigw.RestApiBase;
  readonly domain?: opensearch.Domain;
  /** The log group every IoT rule's ErrorAction writes to. */
  readonly ruleErrors: logs.ILogGroup;
  readonly alarmEmail?: string;
  readonly apiLatencyP99Ms?: number;
  readonly unavailablePercent?: number;
  readonly openSearchFreeStorageMb?: number;
  /** The stream path (IngestPath=stream): its alarms exist only under this condition. */
  readonly stream?: {
    readonly condition: CfnCondition;
    /** Alarm id prefix -> queue name: the queues that must stay empty. */
    readonly queues: Record<string, string>;
  };
}

export class Operations extends Construct {
  readonly topic: sns.Topic;
  readonly dashboard: cloudwatch.Dashboard;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.topic = new sns.Topic(this, 'AlarmTopic', { displayName: `${stack.stackName} sensor ingest alarms` });
    if (props.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    const action = new actions.SnsAction(this.topic);
    const fiveMinutes = Duration.minutes(5);
    const add = (alarmId: string, metric: cloudwatch.IMetric, options: {
      description: string; threshold: number; periods?: number;
      comparison?: cloudwatch.ComparisonOperator;
    }) => {
      const alarm = new cloudwatch.Alarm(this, alarmId, {
        metric,
        alarmDescription: options.description,
        threshold: options.threshold,
        evaluationPeriods: options.periods ?? 1,
        datapointsToAlarm: options.periods ?? 1,
        comparisonOperator: options.comparison ?? cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      alarm.addAlarmAction(action);
      alarm.addOkAction(action);
      this.alarms.push(alarm);
      return alarm;
    };
    const emf = (metricName: string, sensor: string, statistic = 'Sum') => new cloudwatch.Metric({
      namespace: props.namespace,
      metricName,
      dimensionsMap: { function: props.functions[sensor].functionName, sensor },
      statistic,
      period: fiveMinutes,
      label: sensor,
    });

    // ------------------------------------------------------------ per function
    for (const [sensor, fn] of Object.entries(props.functions)) {
      const id = sensor.charAt(0).toUpperCase() + sensor.slice(1);
      add(`${id}ErrorsAlarm`, fn.metricErrors({ period: fiveMinutes, statistic: 'Sum' }), {
        description: `${sensor}: the function failed (crash, timeout, or a direct invoke whose readings must be retried)`,
        threshold: 1,
      });
      add(`${id}ThrottlesAlarm`, fn.metricThrottles({ period: fiveMinutes, statistic: 'Sum' }), {
        description: `${sensor}: invocations throttled (account or reserved concurrency exhausted)`,
        threshold: 1,
      });
      // Our 503s from the EMF metrics, not the API's 5XXError: they also cover MQTT readings
      // (IoT rule -> direct invoke), and exclude 502s from crashes (the Errors alarm has those).
      add(`${id}UnavailableRateAlarm`, new cloudwatch.MathExpression({
        expression: '100 * unavailable / requests',
        usingMetrics: { unavailable: emf('RequestsUnavailable', sensor), requests: emf('Requests', sensor) },
        label: 'percent of requests answered 503',
        period: fiveMinutes,
      }), {
        description: `${sensor}: share of requests answered 503 (IoT Core or OpenSearch failing past the retries), from the EMF metrics`,
        threshold: props.unavailablePercent ?? 5,
        comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      });
    }

    // ------------------------------------------------------------ REST API
    const api = { ApiName: props.restApi.restApiName, Stage: props.restApi.deploymentStage.stageName };
    const apiMetric = (metricName: string, statistic: string) => new cloudwatch.Metric({
      namespace: 'AWS/ApiGateway', metricName, dimensionsMap: api, statistic, period: fiveMinutes,
    });
    add('Api5xxAlarm', apiMetric('5XXError', 'Average'), {
      description: 'REST API: more than 5% of requests answered 5xx (our 503s, function errors as 502, gateway timeouts)',
      threshold: 0.05,
      comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    });
    add('Api4xxAlarm', apiMetric('4XXError', 'Average'), {
      description: 'REST API: more than 25% of requests answered 4xx (a box sending invalid readings, wrong or missing API keys, quota exceeded)',
      threshold: 0.25,
      periods: 3,
      comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    });
    add('ApiLatencyP99Alarm', apiMetric('Latency', 'p99'), {
      description: 'REST API: p99 latency above apiLatencyP99Ms for 15 minutes',
      threshold: props.apiLatencyP99Ms ?? 3000,
      periods: 3,
      comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    });

    // ------------------------------------------------------------ IoT rules
    // Every rule's ErrorAction writes to one log group: counting its events covers every
    // rule and action type with one metric.
    const ruleErrors = new logs.MetricFilter(this, 'IotRuleErrorsMetricFilter', {
      logGroup: props.ruleErrors,
      filterPattern: logs.FilterPattern.allEvents(),
      metricNamespace: props.namespace,
      metricName: 'IotRuleErrors',
      metricValue: '1',
      defaultValue: 0,
    });
    add('IotRuleErrorsAlarm', ruleErrors.metric({ statistic: 'Sum', period: fiveMinutes }), {
      description: 'IoT Core: a topic rule action failed (a reading not delivered to a function, a shadow update lost); details in the rule error log group',
      threshold: 1,
    });

    // ------------------------------------------------------------ OpenSearch domain
    if (props.domain) {
      const d = props.domain;
      add('OpenSearchRedAlarm', d.metricClusterStatusRed({ period: Duration.minutes(1), statistic: 'Maximum' }), {
        description: 'OpenSearch: cluster status red (a primary shard is unassigned; writes to it fail)',
        threshold: 1,
      });
      add('OpenSearchYellowAlarm', d.metricClusterStatusYellow({ period: fiveMinutes, statistic: 'Maximum' }), {
        description: 'OpenSearch: cluster status yellow for 15 minutes (a replica shard is unassigned)',
        threshold: 1,
        periods: 3,
      });
      add('OpenSearchFreeStorageAlarm', d.metricFreeStorageSpace({ period: fiveMinutes, statistic: 'Minimum' }), {
        description: 'OpenSearch: free storage below openSearchFreeStorageMb (writes are blocked when a node runs out)',
        threshold: props.openSearchFreeStorageMb ?? 2048,
        comparison: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      });
      add('OpenSearchJvmPressureAlarm', d.metricJVMMemoryPressure({ period: fiveMinutes, statistic: 'Maximum' }), {
        description: 'OpenSearch: JVM memory pressure above 80% for 15 minutes (risk of write rejections and node crashes)',
        threshold: 80,
        periods: 3,
        comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      });
      add('OpenSearchWriteRejectedAlarm', d.metric('ThreadpoolWriteRejected', { period: fiveMinutes, statistic: 'Sum' }), {
        description: 'OpenSearch: write thread pool rejected requests (bulk writes throttled; the functions retry, then answer 503)',
        threshold: 1,
      });
    }

    // ------------------------------------------------------------ the stream path (IngestPath=stream)
    // Its consumers falling behind, and anything parked in its queues.
    if (props.stream) {
      const onStreamPath = (alarm: cloudwatch.Alarm) => {
        (alarm.node.defaultChild as cloudwatch.CfnAlarm).cfnOptions.condition = props.stream!.condition;
      };
      for (const [sensor, fn] of Object.entries(props.functions)) {
        const id = sensor.charAt(0).toUpperCase() + sensor.slice(1);
        onStreamPath(add(`${id}IteratorAgeAlarm`, fn.metric('IteratorAge', { statistic: 'Maximum', period: Duration.minutes(1) }), {
          description: `${sensor}: the stream consumer stayed more than a minute behind for 5 minutes (the function slow, failing or throttled; the readings wait in the stream, kept 24 h)`,
          threshold: 60_000,
          periods: 5,
          comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        }));
      }
      const parked: Record<string, string> = {
        StreamFailureQueue: 'a batch of stream records was given up after its retries or its maximum age (redrive: docs/deploy.md)',
        StreamRuleErrorQueue: 'the stream rule could not put a message into the stream (redrive: docs/deploy.md)',
      };
      for (const [id, queueName] of Object.entries(props.stream.queues)) {
        onStreamPath(add(`${id}Alarm`, new cloudwatch.Metric({
          namespace: 'AWS/SQS',
          metricName: 'ApproximateNumberOfMessagesVisible',
          dimensionsMap: { QueueName: queueName },
          statistic: 'Maximum',
          period: fiveMinutes,
        }), {
          description: `${id}: ${parked[id] ?? 'messages waiting'}`,
          threshold: 0,
          comparison: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        }));
      }
    }

    // ------------------------------------------------------------ dashboard
    const sensors = Object.keys(props.functions);
    const perSensor = (metricName: string, statistic = 'Sum', suffix = '') =>
      sensors.map((s) => emf(metricName, s, statistic).with({ label: `${s}${suffix}` }));
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${stack.stackName}-sensor-ingest`,
      widgets: [
        [
          new cloudwatch.GraphWidget({ title: 'Readings stored per sensor (ingest rate)', left: perSensor('ReadingsStored'), width: 12 }),
          new cloudwatch.GraphWidget({ title: 'Warnings published per sensor', left: perSensor('WarningsPublished'), width: 12 }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Invalid readings and 503s per sensor',
            left: [...perSensor('ReadingsInvalid', 'Sum', ' invalid'), ...perSensor('RequestsUnavailable', 'Sum', ' 503')],
            width: 12,
          }),
          new cloudwatch.GraphWidget({
            title: 'Function errors and throttles',
            left: Object.entries(props.functions).flatMap(([s, fn]) => [
              fn.metricErrors({ statistic: 'Sum', label: `${s} errors` }),
              fn.metricThrottles({ statistic: 'Sum', label: `${s} throttles` }),
            ]),
            width: 12,
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'p99 downstream latency per sensor (ms)',
            left: [...perSensor('PublishLatency', 'p99', ' publish'), ...perSensor('IndexLatency', 'p99', ' index')],
            width: 12,
          }),
          new cloudwatch.GraphWidget({
            title: 'REST API latency and errors',
            left: [apiMetric('Latency', 'p99').with({ label: 'p99 latency (ms)' })],
            right: [apiMetric('5XXError', 'Sum').with({ label: '5xx' }), apiMetric('4XXError', 'Sum').with({ label: '4xx' })],
            width: 12,
          }),
        ],
        [
          // Empty on the direct path (no event source mappings there).
          new cloudwatch.GraphWidget({
            title: 'Stream consumers: iterator age (ms; stream path only)',
            left: Object.entries(props.functions).map(([s, fn]) =>
              fn.metric('IteratorAge', { statistic: 'Maximum', period: Duration.minutes(1), label: s })),
            width: 12,
          }),
        ],
      ],
    });
  }
}
