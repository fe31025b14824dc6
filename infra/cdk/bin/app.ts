#!/usr/bin/env node
// cdk deploy [-c key=value ...]: see docs/deploy.md for the context keys.
import { App, Duration } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SensorIngestStack } from '../lib/sensor-ingest-stack';

const app = new App();
const ctx = (key: string): string | undefined => {
  const value = app.node.tryGetContext(key);
  return value === undefined || value === '' ? undefined : String(value);
};
const num = (key: string): number | undefined => (ctx(key) === undefined ? undefined : Number(ctx(key)));
const bool = (key: string): boolean | undefined => (ctx(key) === undefined ? undefined : ctx(key) === 'true');

const endpoint = ctx('openSearchEndpoint');
const arn = ctx('openSearchArn');
if ((endpoint === undefined) !== (arn === undefined)) {
  throw new Error('set both -c openSearchEndpoint=https://... and -c openSearchArn=arn:... (or neither)');
}

new SensorIngestStack(app, ctx('stackName') ?? 'SensorIngest', {
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  architecture: ctx('architecture') === 'x86_64' ? 'x86_64' : 'arm64',
  topicPrefix: ctx('topicPrefix'),
  deviceTopicRoot: ctx('deviceTopicRoot'),
  iotDataRules: bool('iotDataRules'),
  iotDataEndpoint: ctx('iotDataEndpoint'),
  existingOpenSearch: endpoint && arn
    ? { endpoint, arn, service: ctx('openSearchService') === 'aoss' ? 'aoss' : 'es' }
    : undefined,
  domainName: ctx('domainName'),
  domainInstanceType: ctx('domainInstanceType'),
  domainInstanceCount: num('domainInstanceCount'),
  domainVolumeGiB: num('domainVolumeGiB'),
  httpApi: bool('httpApi'),
  httpApiAuthorization: ctx('httpApiAuthorization') === 'NONE' ? 'NONE' : 'AWS_IAM',
  stageName: ctx('stageName'),
  throttleRateLimit: num('throttleRateLimit'),
  throttleBurstLimit: num('throttleBurstLimit'),
  quotaLimit: num('quotaLimit'),
  quotaPeriod: ctx('quotaPeriod') as apigw.Period | undefined,
  memorySize: num('memorySize'),
  timeout: num('timeoutSeconds') === undefined ? undefined : Duration.seconds(num('timeoutSeconds')!),
  indexSuffix: ctx('indexSuffix'),
  rules: ctx('rules'),
  deviceTimezone: ctx('deviceTimezone'),
  ackMessages: bool('ackMessages'),
  alarmMode: ctx('alarmMode') === 'every' ? 'every' : 'transitions',
  alarmThingPrefix: ctx('alarmThingPrefix'),
  noDataAfter: num('noDataAfter'),
  rustLog: ctx('rustLog'),
  logLevel: ctx('logLevel') as lambda.ApplicationLogLevel | undefined,
  metricsNamespace: ctx('metricsNamespace'),
  alarmEmail: ctx('alarmEmail'),
  tracing: bool('tracing'),
  apiGatewayLogsRole: bool('apiGatewayLogsRole'),
  apiLatencyP99Ms: num('apiLatencyP99Ms'),
  unavailablePercent: num('unavailablePercent'),
  openSearchFreeStorageMb: num('openSearchFreeStorageMb'),
  corsOrigin: ctx('corsOrigin'),
  viewerThrottleRateLimit: num('viewerThrottleRateLimit'),
  viewerThrottleBurstLimit: num('viewerThrottleBurstLimit'),
  viewerQuotaLimit: num('viewerQuotaLimit'),
  // The stream path: defaults of its stack parameters (or cdk deploy --parameters IngestPath=stream ...).
  ingestPath: ctx('ingestPath') === 'stream' ? 'stream' : undefined,
  streamRuleName: ctx('streamRuleName'),
  streamShards: num('streamShards'),
  streamBatchSize: num('streamBatchSize'),
  streamBatchingWindowSeconds: num('streamBatchingWindowSeconds'),
  streamMaxRetryAttempts: num('streamMaxRetryAttempts'),
  streamMaxRecordAgeSeconds: num('streamMaxRecordAgeSeconds'),
  streamParallelization: num('streamParallelization'),
});
