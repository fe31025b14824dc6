// The operations part of the CDK stack: JSON logs, access logs and stage metrics, alarms on
// the intended metrics and thresholds (all to the SNS topic), the dashboard, the options.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
// The default deployment (IngestPath=direct); the stream path's alarms: stream.test.ts.
import { synth } from './conditions';

const FUNCTIONS = ['gasdetector', 'dust', 'temp'];

type Resource = { Properties: Record<string, any> };
const alarms = (t: Template): Resource[] => Object.values(t.findResources('AWS::CloudWatch::Alarm')) as Resource[];
const byMetric = (t: Template, metric: string) => alarms(t).filter((a) => a.Properties.MetricName === metric);

describe('operations', () => {
  const template = synth();

  it('logs JSON at INFO, tells the functions the metrics namespace, and traces only when asked', () => {
    template.resourcePropertiesCountIs('AWS::Lambda::Function', {
      LoggingConfig: { LogFormat: 'JSON', ApplicationLogLevel: 'INFO', SystemLogLevel: 'WARN' },
      Environment: { Variables: Match.objectLike({ METRICS_NAMESPACE: 'SensorIngest' }) },
      TracingConfig: Match.absent(),
    }, 3);
  });

  it('writes JSON access logs with request id, status, latency and API key id, and stage metrics', () => {
    const stage = Object.values(template.findResources('AWS::ApiGateway::Stage'))[0] as Resource;
    const format = JSON.parse(stage.Properties.AccessLogSetting.Format);
    for (const [key, value] of Object.entries({
      requestId: '$context.requestId', status: '$context.status',
      responseLatency: '$context.responseLatency', apiKeyId: '$context.identity.apiKeyId',
    })) assert.equal(format[key], value, key);
    assert.ok(stage.Properties.AccessLogSetting.DestinationArn['Fn::GetAtt'][0].startsWith('ApiAccessLogGroup'));
    assert.deepEqual(stage.Properties.MethodSettings, [
      { DataTraceEnabled: false, HttpMethod: '*', MetricsEnabled: true, ResourcePath: '/*' },
    ]);
    assert.equal(stage.Properties.TracingEnabled, false);
    template.resourceCountIs('AWS::ApiGateway::Account', 0);
  });

  it('alarms on function errors and throttles, and on the 503 rate from the EMF metrics', () => {
    for (const metric of ['Errors', 'Throttles']) {
      const found = byMetric(template, metric);
      assert.equal(found.length, 3, metric);
      for (const a of found) {
        assert.equal(a.Properties.Namespace, 'AWS/Lambda');
        assert.equal(a.Properties.Threshold, 1);
        assert.equal(a.Properties.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
      }
    }
    const rates = alarms(template).filter((a) => a.Properties.Metrics?.some(
      (m: any) => m.Expression === '100 * unavailable / requests'));
    assert.equal(rates.length, 3);
    for (const rate of rates) {
      assert.equal(rate.Properties.Threshold, 5);
      assert.equal(rate.Properties.ComparisonOperator, 'GreaterThanThreshold');
      const names = rate.Properties.Metrics.filter((m: any) => m.MetricStat)
        .map((m: any) => m.MetricStat.Metric.MetricName).sort();
      assert.deepEqual(names, ['Requests', 'RequestsUnavailable']);
      for (const m of rate.Properties.Metrics.filter((x: any) => x.MetricStat)) {
        assert.equal(m.MetricStat.Metric.Namespace, 'SensorIngest');
        assert.deepEqual(m.MetricStat.Metric.Dimensions.map((d: any) => d.Name).sort(), ['function', 'sensor']);
      }
    }
  });

  it('alarms on the API 5xx and 4xx rates, p99 latency and IoT rule errors', () => {
    const [e5] = byMetric(template, '5XXError');
    assert.equal(e5.Properties.Statistic, 'Average');
    assert.equal(e5.Properties.Threshold, 0.05);
    const [e4] = byMetric(template, '4XXError');
    assert.equal(e4.Properties.Threshold, 0.25);
    const [latency] = byMetric(template, 'Latency');
    assert.equal(latency.Properties.ExtendedStatistic, 'p99');
    assert.equal(latency.Properties.Threshold, 3000);
    for (const a of [e5, e4, latency]) {
      assert.deepEqual(a.Properties.Dimensions.map((d: any) => d.Name).sort(), ['ApiName', 'Stage']);
    }
    const [rule] = byMetric(template, 'IotRuleErrors');
    assert.equal(rule.Properties.Namespace, 'SensorIngest');
    template.hasResourceProperties('AWS::Logs::MetricFilter', {
      FilterPattern: '',
      MetricTransformations: [Match.objectLike({ MetricName: 'IotRuleErrors', MetricNamespace: 'SensorIngest', MetricValue: '1' })],
    });
  });

  it('alarms on the OpenSearch domain: red, yellow, free storage, JVM pressure, write rejections', () => {
    const expect: Record<string, [number, string, string]> = {
      'ClusterStatus.red': [1, 'Maximum', 'GreaterThanOrEqualToThreshold'],
      'ClusterStatus.yellow': [1, 'Maximum', 'GreaterThanOrEqualToThreshold'],
      FreeStorageSpace: [2048, 'Minimum', 'LessThanThreshold'],
      JVMMemoryPressure: [80, 'Maximum', 'GreaterThanThreshold'],
      ThreadpoolWriteRejected: [1, 'Sum', 'GreaterThanOrEqualToThreshold'],
    };
    for (const [metric, [threshold, statistic, comparison]] of Object.entries(expect)) {
      const [a] = byMetric(template, metric);
      assert.ok(a, metric);
      assert.equal(a.Properties.Namespace, 'AWS/ES');
      assert.equal(a.Properties.Threshold, threshold, metric);
      assert.equal(a.Properties.Statistic, statistic, metric);
      assert.equal(a.Properties.ComparisonOperator, comparison, metric);
    }
  });

  it('sends every alarm and its recovery to the SNS topic, with no e-mail unless given', () => {
    const topics = Object.keys(template.findResources('AWS::SNS::Topic'));
    assert.equal(topics.length, 1);
    const all = alarms(template);
    assert.equal(all.length, 3 * 3 + 4 + 5);
    for (const a of all) {
      assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topics[0] }]);
      assert.deepEqual(a.Properties.OKActions, [{ Ref: topics[0] }]);
      assert.equal(a.Properties.TreatMissingData, 'notBreaching');
      assert.ok(a.Properties.AlarmDescription.length > 10);
    }
    template.resourceCountIs('AWS::SNS::Subscription', 0);
  });

  it('has a dashboard with ingest rate, warnings, errors and latency per sensor', () => {
    const [dashboard] = Object.values(template.findResources('AWS::CloudWatch::Dashboard')) as Resource[];
    const body = JSON.stringify(dashboard.Properties.DashboardBody);
    for (const title of ['ingest rate', 'Warnings published', 'Function errors', 'latency']) {
      assert.ok(body.includes(title), title);
    }
    for (const metric of ['ReadingsStored', 'WarningsPublished', 'ReadingsInvalid', 'RequestsUnavailable',
      'PublishLatency', 'IndexLatency', 'Errors', 'Throttles', '5XXError', 'Latency']) {
      assert.ok(body.includes(`\\"${metric}\\"`), metric);
    }
    for (const sensor of FUNCTIONS) assert.ok(body.includes(`\\"sensor\\",\\"${sensor}\\"`), sensor);
  });
});

describe('operations options', () => {
  it('subscribes the e-mail, traces with X-Ray, uses the namespace and thresholds given', () => {
    const template = synth({
      alarmEmail: 'oncall@example.com', tracing: true, metricsNamespace: 'Acme/Sensors',
      apiLatencyP99Ms: 1500, unavailablePercent: 10, apiGatewayLogsRole: true,
    });
    template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com' });
    template.resourcePropertiesCountIs('AWS::Lambda::Function', {
      TracingConfig: { Mode: 'Active' },
      Environment: { Variables: Match.objectLike({ METRICS_NAMESPACE: 'Acme/Sensors' }) },
    }, 3);
    template.hasResourceProperties('AWS::ApiGateway::Stage', { TracingEnabled: true });
    template.resourceCountIs('AWS::ApiGateway::Account', 1);
    assert.equal(byMetric(template, 'Latency')[0].Properties.Threshold, 1500);
    assert.equal(byMetric(template, 'IotRuleErrors')[0].Properties.Namespace, 'Acme/Sensors');
  });

  it('has no OpenSearch alarms for an existing endpoint', () => {
    const template = synth({
      existingOpenSearch: { endpoint: 'https://search-x.eu-west-1.es.amazonaws.com', arn: 'arn:aws:es:eu-west-1:123456789012:domain/x' },
    });
    assert.equal(alarms(template).filter((a) => a.Properties.Namespace === 'AWS/ES').length, 0);
    assert.equal(alarms(template).length, 3 * 3 + 4);
  });
});
