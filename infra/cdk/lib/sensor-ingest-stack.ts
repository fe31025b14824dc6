// The sensor ingest backend as a CDK stack: the same resources as infra/template.yaml (SAM).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Aws, CfnOutput, CfnParameter, Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as apigwv2 from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as iot from 'aws-cdk-lib/aws-iot';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as opensearch from 'aws-cdk-lib/aws-opensearchservice';
import * as cr from 'aws-cdk-lib/custom-resources';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import * as YAML from 'yaml';
import { DEFAULT_METRICS_NAMESPACE, Operations } from './operations';
import { addAlarms, alarmEnvironment, boxShadowStatements } from './alarms';
import { StreamPath, StreamPathDefaults } from './stream';

/** The three functions: crate (= package = binary) name, API route, default index, measures. */
export const SENSORS = [
  { name: 'gasdetector', index: 'gasdetect', id: 'Gasdetector' },
  { name: 'dust', index: 'dust', id: 'Dust' },
  { name: 'temp', index: 'temp', id: 'Temp' },
] as const;

export interface ExistingOpenSearch {
  /** https://... endpoint of a domain or an OpenSearch Serverless collection. */
  readonly endpoint: string;
  /** arn:aws:es:<region>:<account>:domain/<name> or arn:aws:aoss:<region>:<account>:collection/<id>. */
  readonly arn: string;
  /** SigV4 service: `es` (domain, default) or `aoss` (Serverless). */
  readonly service?: 'es' | 'aoss';
}

/**
 * The stream path's settings (lib/stream.ts) are the defaults of its stack parameters
 * (IngestPath, StreamRuleName, StreamShards, ...), as in the SAM template: `cdk deploy
 * --parameters IngestPath=stream` selects it at deploy time.
 */
export interface SensorIngestStackProps extends StackProps, StreamPathDefaults {
  /** Lambda architecture; default arm64 (cargo lambda cross-compiles with zig). */
  readonly architecture?: 'arm64' | 'x86_64';
  /** Warnings go to `<topicPrefix>/<groupid>`; the functions may publish under it only. Default `pi`. */
  readonly topicPrefix?: string;
  /** Boxes publish to `<root>/<thing>/data/<sensor>` and set their Last Will on `<root>/<thing>/lwt`. Default `devices`. */
  readonly deviceTopicRoot?: string;
  /** Create the topic rules routing MQTT readings to the functions. Default true. */
  readonly iotDataRules?: boolean;
  /** https://xxxx-ats.iot.<region>.amazonaws.com; default: looked up at deploy time (iot:DescribeEndpoint). */
  readonly iotDataEndpoint?: string;
  /** Use this OpenSearch endpoint instead of creating a domain. */
  readonly existingOpenSearch?: ExistingOpenSearch;
  readonly domainName?: string;
  readonly domainInstanceType?: string;
  readonly domainInstanceCount?: number;
  readonly domainVolumeGiB?: number;
  /**
   * Also create an HTTP API (v2) with the boxes' own routes (POST /things/<thing>/<sensor>,
   * always AWS_IAM) and the legacy routes (POST /gasdetector, ...). Default false.
   */
  readonly httpApi?: boolean;
  /** Authorization of the HTTP API's legacy routes only (the boxes' routes are always AWS_IAM). Default AWS_IAM. */
  readonly httpApiAuthorization?: 'AWS_IAM' | 'NONE';
  readonly stageName?: string;
  readonly throttleRateLimit?: number;
  readonly throttleBurstLimit?: number;
  readonly quotaLimit?: number;
  readonly quotaPeriod?: apigw.Period;
  readonly logRetention?: logs.RetentionDays;
  readonly memorySize?: number;
  readonly timeout?: Duration;
  /** chrono date suffix of the index names, e.g. `-%Y.%m`. Default none. */
  readonly indexSuffix?: string;
  /** RULES: JSON threshold overrides. */
  readonly rules?: string;
  readonly deviceTimezone?: string;
  readonly ackMessages?: boolean;
  readonly rustLog?: string;
  /** Lambda application log level (AWS_LAMBDA_LOG_LEVEL; wins over rustLog). Default INFO. */
  readonly logLevel?: lambda.ApplicationLogLevel;
  /** CloudWatch namespace of the EMF metrics (METRICS_NAMESPACE). Default SensorIngest. */
  readonly metricsNamespace?: string;
  /** Subscribe this e-mail address to the alarm topic. */
  readonly alarmEmail?: string;
  /** X-Ray active tracing on the functions and the REST API stage. Default false. */
  readonly tracing?: boolean;
  /**
   * Create the account-wide API Gateway CloudWatch Logs role, which access logs need.
   * Default false: leave the account's setting alone (it must exist; see docs/deploy.md).
   */
  readonly apiGatewayLogsRole?: boolean;
  /** REST API p99 latency alarm threshold (ms, 15 minutes). Default 3000. */
  readonly apiLatencyP99Ms?: number;
  /** Alarm when more than this percentage of a function's requests are answered 503. Default 5. */
  readonly unavailablePercent?: number;
  /** OpenSearch free storage alarm threshold (MB per node). Default 2048. */
  readonly openSearchFreeStorageMb?: number;
  /** `transitions` (default: alarm state in a named shadow, messages on transitions) or `every`. */
  readonly alarmMode?: 'transitions' | 'every';
  /** A group's alarm state is the shadow `alarms` of thing `<prefix><groupid>`. Default ''. */
  readonly alarmThingPrefix?: string;
  /** Seconds without a reading before a group gets a `no data` alarm. Default 900. */
  readonly noDataAfter?: number;
  /**
   * One origin (https://fleet.example.com) allowed to call /api/* from a page hosted
   * elsewhere (CORS_ORIGIN of the query function). Default none: the page on GET / only.
   */
  readonly corsOrigin?: string;
  /** Viewer usage plan (the page's key): requests per second, burst, per day. */
  readonly viewerThrottleRateLimit?: number;
  readonly viewerThrottleBurstLimit?: number;
  readonly viewerQuotaLimit?: number;
  /**
   * Default of the stack parameter LegacyKeyRoutes (LEGACY_KEY_ROUTES of the ingest
   * functions): accept readings on the shared-API-key routes (POST /gasdetector, ...) for
   * boxes still running the original pub.py. Weaker: anyone holding the key can post for
   * any group. Default false: boxes use their own identity (POST /things/<thing>/<sensor>).
   */
  readonly legacyKeyRoutes?: boolean;
  /** Workspace root (holds functions/<name>/Cargo.toml); default: found upwards from this file. */
  readonly repoRoot?: string;
}

/**
 * api/openapi.yaml with each x-amazon-apigateway-integration `uri` (a CloudFormation
 * `Fn::Sub` on `<Name>Function.Arn`, for SAM's AWS::Include) pointing at this stack's
 * function `<name>` instead (`QueryFunction` -> `functions.query`). Fails on an
 * integration the stack has no function for.
 */
export function contractWithFunctions(repoRoot: string, functions: Record<string, lambda.IFunction>): unknown {
  const document = YAML.parse(fs.readFileSync(path.join(repoRoot, 'api', 'openapi.yaml'), 'utf8'));
  for (const [route, item] of Object.entries<Record<string, any>>(document.paths)) {
    for (const operation of Object.values<Record<string, any>>(item)) {
      const integration = operation['x-amazon-apigateway-integration'];
      if (!integration) continue;
      const sub = String(integration.uri?.['Fn::Sub'] ?? '');
      const name = /\$\{(\w+)Function\.Arn\}/.exec(sub)?.[1]?.toLowerCase();
      const fn = name ? functions[name] : undefined;
      if (!fn) throw new Error(`api/openapi.yaml: no function for ${route} (${sub})`);
      integration.uri = `arn:${Aws.PARTITION}:apigateway:${Aws.REGION}:lambda:path/2015-03-31/functions/${fn.functionArn}/invocations`;
    }
  }
  return document;
}

/** The SQL of a data rule: the thing from the topic, the raw MQTT payload as base64. */
export function dataRuleSql(deviceRoot: string, sensor: string): string {
  return `SELECT topic(2) AS thing, encode(*, 'base64') AS payload FROM '${deviceRoot}/+/data/${sensor}'`;
}

/** The routes the query function serves (the page and the read API). */
export const QUERY_ROUTES = ['/', '/api/boxes', '/api/readings', '/api/warnings', '/api/rules'] as const;

// HttpLambdaIntegration whose per-route invoke permission has each path parameter as `*`
// (`<api>/*/*/things/*/dust`): the source ARN API Gateway presents holds the request's path,
// never the route's `{thing}`, which the stock permission would name literally. Routes
// without parameters get the stock permission (same id, same source ARN).
export class HttpLambdaRouteIntegration extends HttpLambdaIntegration {
  constructor(private readonly permissionPrefix: string, private readonly fn: lambda.IFunction) {
    super(permissionPrefix, fn);
  }

  protected completeBind(options: apigwv2.HttpRouteIntegrationBindOptions): void {
    const route = options.route;
    this.fn.addPermission(`${this.permissionPrefix}-Permission`, {
      scope: options.scope,
      principal: new iam.ServicePrincipal('apigateway.amazonaws.com'),
      sourceArn: Stack.of(route).formatArn({
        service: 'execute-api',
        resource: route.httpApi.apiId,
        resourceName: `*/*${(route.path ?? '').replace(/\{[^}]*\}/g, '*')}`,
      }),
    });
  }
}

/** Walks up from `start` to the directory holding functions/gasdetector/Cargo.toml. */
export function findRepoRoot(start: string = __dirname): string {
  let dir = path.resolve(start);
  for (;;) {
    if (fs.existsSync(path.join(dir, 'functions', 'gasdetector', 'Cargo.toml'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no functions/gasdetector/Cargo.toml above ${start}`);
    dir = parent;
  }
}

export class SensorIngestStack extends Stack {
  readonly functions: Record<string, RustFunction> = {};
  readonly restApi: apigw.SpecRestApi;
  readonly domain?: opensearch.Domain;
  readonly operations: Operations;

  constructor(scope: Construct, id: string, props: SensorIngestStackProps = {}) {
    super(scope, id, props);
    const topicPrefix = props.topicPrefix ?? 'pi';
    const deviceRoot = props.deviceTopicRoot ?? 'devices';
    const repoRoot = props.repoRoot ?? findRepoRoot();
    const architecture = props.architecture === 'x86_64' ? lambda.Architecture.X86_64 : lambda.Architecture.ARM_64;
    const retention = props.logRetention ?? logs.RetentionDays.ONE_MONTH;
    const metricsNamespace = props.metricsNamespace ?? DEFAULT_METRICS_NAMESPACE;
    const iotArn = (resource: string, resourceName: string) =>
      this.formatArn({ service: 'iot', resource, resourceName });

    // ------------------------------------------------------------ OpenSearch
    let openSearchUrl: string;
    let indexStatement: iam.PolicyStatement;
    let openSearchService: 'es' | 'aoss' = 'es';
    // The no-data check's read-only access: search requests only.
    let searchStatement: iam.PolicyStatement;
    // The read API's: GET/POST on the sensors' indices' _search paths, nothing else.
    let querySearchStatement: iam.PolicyStatement;
    const searchPaths = (base: string) => SENSORS.map((sensor) => `${base}/${sensor.index}*/_search`);
    if (props.existingOpenSearch) {
      const existing = props.existingOpenSearch;
      openSearchUrl = existing.endpoint;
      openSearchService = existing.service ?? 'es';
      indexStatement = openSearchService === 'aoss'
        ? new iam.PolicyStatement({ sid: 'IndexReadings', actions: ['aoss:APIAccessAll'], resources: [existing.arn] })
        : new iam.PolicyStatement({
          sid: 'IndexReadings', actions: ['es:ESHttpPost', 'es:ESHttpPut'], resources: [`${existing.arn}/*`],
        });
      searchStatement = openSearchService === 'aoss'
        ? new iam.PolicyStatement({ sid: 'SearchReadings', actions: ['aoss:APIAccessAll'], resources: [existing.arn] })
        : new iam.PolicyStatement({
          sid: 'SearchReadings', actions: ['es:ESHttpPost'], resources: [`${existing.arn}/*/_search`],
        });
      querySearchStatement = openSearchService === 'aoss'
        ? new iam.PolicyStatement({ sid: 'SearchReadings', actions: ['aoss:APIAccessAll'], resources: [existing.arn] })
        : new iam.PolicyStatement({
          sid: 'SearchReadings', actions: ['es:ESHttpGet', 'es:ESHttpPost'], resources: searchPaths(existing.arn),
        });
    } else {
      const domainName = props.domainName ?? 'sensor-readings';
      const domainArn = this.formatArn({ service: 'es', resource: 'domain', resourceName: domainName });
      this.domain = new opensearch.Domain(this, 'OpenSearchDomain', {
        domainName,
        version: opensearch.EngineVersion.OPENSEARCH_2_19,
        capacity: {
          dataNodes: props.domainInstanceCount ?? 1,
          dataNodeInstanceType: props.domainInstanceType ?? 't3.small.search',
          multiAzWithStandbyEnabled: false,
        },
        ebs: { enabled: true, volumeSize: props.domainVolumeGiB ?? 10, volumeType: ec2.EbsDeviceVolumeType.GP3 },
        encryptionAtRest: { enabled: true },
        nodeToNodeEncryption: true,
        enforceHttps: true,
        tlsSecurityPolicy: opensearch.TLSSecurityPolicy.TLS_1_2,
        removalPolicy: RemovalPolicy.RETAIN,
      });
      // The domain trusts the account; IAM policies decide who may do what. Set on the
      // CloudFormation resource itself: the ARN is built from the name, so there is no cycle
      // and no need for the custom resource that the `accessPolicies` prop creates.
      (this.domain.node.defaultChild as opensearch.CfnDomain).accessPolicies = {
        Version: '2012-10-17',
        Statement: [{
          Effect: 'Allow',
          Principal: { AWS: new iam.AccountRootPrincipal().arn },
          Action: 'es:ESHttp*',
          Resource: `${domainArn}/*`,
        }],
      };
      openSearchUrl = `https://${this.domain.domainEndpoint}`;
      indexStatement = new iam.PolicyStatement({
        sid: 'IndexReadings', actions: ['es:ESHttpPost', 'es:ESHttpPut'], resources: [`${domainArn}/*`],
      });
      searchStatement = new iam.PolicyStatement({
        sid: 'SearchReadings', actions: ['es:ESHttpPost'], resources: [`${domainArn}/*/_search`],
      });
      querySearchStatement = new iam.PolicyStatement({
        sid: 'SearchReadings', actions: ['es:ESHttpGet', 'es:ESHttpPost'], resources: searchPaths(domainArn),
      });
    }

    // ------------------------------------------------------------ IoT data endpoint
    let iotDataEndpoint = props.iotDataEndpoint;
    // The IoT credentials provider (a box's HTTPS identity), looked up with the data endpoint.
    let iotCredentialsEndpoint: string | undefined;
    if (!iotDataEndpoint) {
      const lookupLogGroup = new logs.LogGroup(this, 'IotEndpointLookupLogGroup', {
        retention, removalPolicy: RemovalPolicy.DESTROY,
      });
      // Both share one provider function (and so this log group).
      const lookUp = (id: string, endpointType: string, physicalId: string) => new cr.AwsCustomResource(this, id, {
        onUpdate: {
          service: 'Iot',
          action: 'describeEndpoint',
          parameters: { endpointType },
          physicalResourceId: cr.PhysicalResourceId.of(physicalId),
        },
        // DescribeEndpoint has no resource-level permissions.
        policy: cr.AwsCustomResourcePolicy.fromSdkCalls({ resources: cr.AwsCustomResourcePolicy.ANY_RESOURCE }),
        installLatestAwsSdk: false,
        logGroup: lookupLogGroup,
      });
      const lookup = lookUp('IotEndpoint', 'iot:Data-ATS', 'iot-data-ats-endpoint');
      iotDataEndpoint = `https://${lookup.getResponseField('endpointAddress')}`;
      const credentials = lookUp('IotCredentialsEndpointLookup', 'iot:CredentialProvider', 'iot-credential-provider-endpoint');
      iotCredentialsEndpoint = `https://${credentials.getResponseField('endpointAddress')}`;
    }

    // ------------------------------------------------------------ functions
    const alarmThingPrefix = props.alarmThingPrefix ?? '';
    // A stack parameter, as in the SAM template: the operator turns the legacy routes on or
    // off at deploy time (cdk deploy --parameters LegacyKeyRoutes=true).
    const legacyKeyRoutes = new CfnParameter(this, 'LegacyKeyRoutes', {
      type: 'String',
      default: props.legacyKeyRoutes ? 'true' : 'false',
      allowedValues: ['true', 'false'],
      description: 'LEGACY_KEY_ROUTES of the ingest functions. true accepts readings on the shared-API-key routes '
        + '(POST /gasdetector, /dust, /temp) for boxes still running the original pub.py. Weaker: anyone holding '
        + 'the key can post for any group. false (the default): those routes answer 403 and boxes use their own '
        + 'identity (POST /things/<thing>/<sensor>).',
    });
    const sharedEnvironment: Record<string, string> = {
      AWS_ENDPOINT_URL_IOT_DATA_PLANE: iotDataEndpoint,
      OPENSEARCH_URL: openSearchUrl,
      OPENSEARCH_AUTH: 'sigv4',
      OPENSEARCH_SERVICE: openSearchService,
      TOPIC_TEMPLATE: `${topicPrefix}/{groupid}`,
      RUST_LOG: props.rustLog ?? 'info',
      ...alarmEnvironment(alarmThingPrefix),
    };
    const publishStatement = new iam.PolicyStatement({
      sid: 'PublishWarnings', actions: ['iot:Publish'], resources: [iotArn('topic', `${topicPrefix}/*`)],
    });
    // thing -> its `groupid` attribute (read-only): a box may post only for its group.
    const resolveThingStatement = new iam.PolicyStatement({
      sid: 'ResolveThingGroup', actions: ['iot:DescribeThing'], resources: [iotArn('thing', '*')],
    });
    for (const sensor of SENSORS) {
      const logGroup = new logs.LogGroup(this, `${sensor.id}LogGroup`, {
        retention,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      const environment: Record<string, string> = {
        ...sharedEnvironment,
        INDEX: `${sensor.index}${props.indexSuffix ?? ''}`,
        ACK_MESSAGES: props.ackMessages ? 'true' : 'false',
        DEVICE_TIMEZONE: props.deviceTimezone ?? 'UTC',
        METRICS_NAMESPACE: metricsNamespace,
        ALARM_MODE: props.alarmMode ?? 'transitions',
        LEGACY_KEY_ROUTES: legacyKeyRoutes.valueAsString,
      };
      if (props.rules) environment.RULES = props.rules;
      const fn = new RustFunction(this, `${sensor.id}Function`, {
        manifestPath: path.join(repoRoot, 'functions', sensor.name),
        bundling: { architecture },
        description: `POST /${sensor.name}`,
        memorySize: props.memorySize ?? 128,
        timeout: props.timeout ?? Duration.seconds(15),
        logGroup,
        // JSON: Lambda sets AWS_LAMBDA_LOG_FORMAT=JSON and the functions write JSON lines.
        loggingFormat: lambda.LoggingFormat.JSON,
        applicationLogLevelV2: props.logLevel ?? lambda.ApplicationLogLevel.INFO,
        systemLogLevelV2: lambda.SystemLogLevel.WARN,
        // Undefined, not PASS_THROUGH: that would still grant X-Ray writes.
        tracing: props.tracing ? lambda.Tracing.ACTIVE : undefined,
        environment,
      });
      fn.addToRolePolicy(publishStatement);
      fn.addToRolePolicy(indexStatement);
      fn.addToRolePolicy(resolveThingStatement);
      this.functions[sensor.name] = fn;
    }
    this.functions.nodata = addAlarms(this, {
      repoRoot,
      architecture,
      retention,
      ingest: SENSORS.map((sensor) => this.functions[sensor.name]),
      environment: sharedEnvironment,
      topicPrefix,
      thingPrefix: alarmThingPrefix,
      noDataAfter: props.noDataAfter ?? 900,
      searchStatement,
      memorySize: props.memorySize ?? 128,
    });

    // ------------------------------------------------------------ the stream path (IngestPath=stream)
    const streamPath = new StreamPath(this, {
      ...props,
      deviceRoot,
      consumers: SENSORS.map((sensor) => ({ id: sensor.id, sensor: sensor.name, fn: this.functions[sensor.name] })),
    });

    // ------------------------------------------------------------ the read API and the page
    // Its own role (RustFunction makes one), read-only: search on the sensors' indices. It
    // calls no IoT API, so its environment names no IoT endpoint, topic or alarm state.
    const queryEnvironment: Record<string, string> = {
      OPENSEARCH_URL: openSearchUrl,
      OPENSEARCH_AUTH: 'sigv4',
      OPENSEARCH_SERVICE: openSearchService,
      QUERY_INDICES: SENSORS.map((sensor) => `${sensor.name}=${sensor.index}*`).join(','),
      RUST_LOG: props.rustLog ?? 'info',
    };
    if (props.rules) queryEnvironment.RULES = props.rules;
    if (props.corsOrigin) queryEnvironment.CORS_ORIGIN = props.corsOrigin;
    const query = new RustFunction(this, 'QueryFunction', {
      manifestPath: path.join(repoRoot, 'functions', 'query'),
      bundling: { architecture },
      description: 'GET / (the fleet page) and GET /api/* (read API)',
      memorySize: props.memorySize ?? 128,
      timeout: props.timeout ?? Duration.seconds(15),
      logGroup: new logs.LogGroup(this, 'QueryLogGroup', { retention, removalPolicy: RemovalPolicy.DESTROY }),
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: props.logLevel ?? lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      tracing: props.tracing ? lambda.Tracing.ACTIVE : undefined,
      environment: queryEnvironment,
    });
    query.addToRolePolicy(querySearchStatement);
    this.functions.query = query;

    // ------------------------------------------------------------ REST API with API keys
    // Built from the contract, api/openapi.yaml (as the SAM template is), so the documentation
    // and the deployed API cannot drift: the routes, the x-api-key requirement and the
    // 405 answers (x-amazon-apigateway-any-method) come from the document; only each
    // integration's function ARN is filled in here.
    const accessLogs = new logs.LogGroup(this, 'ApiAccessLogGroup', { retention, removalPolicy: RemovalPolicy.DESTROY });
    this.restApi = new apigw.SpecRestApi(this, 'RestApi', {
      restApiName: `${this.stackName}-sensors`,
      apiDefinition: apigw.ApiDefinition.fromInline(contractWithFunctions(repoRoot, this.functions)),
      endpointTypes: [apigw.EndpointType.REGIONAL],
      deployOptions: {
        stageName: props.stageName ?? 'v1',
        // One JSON line per request; needs the account's API Gateway CloudWatch role.
        accessLogDestination: new apigw.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigw.AccessLogFormat.custom(JSON.stringify({
          requestId: '$context.requestId',
          extendedRequestId: '$context.extendedRequestId',
          requestTime: '$context.requestTimeEpoch',
          httpMethod: '$context.httpMethod',
          resourcePath: '$context.resourcePath',
          status: '$context.status',
          responseLatency: '$context.responseLatency',
          integrationLatency: '$context.integrationLatency',
          integrationStatus: '$context.integrationStatus',
          apiKeyId: '$context.identity.apiKeyId',
          responseLength: '$context.responseLength',
          errorMessage: '$context.error.message',
        })),
        // Per-method metrics; no execution logs (they would hold request bodies).
        metricsEnabled: true,
        dataTraceEnabled: false,
        tracingEnabled: props.tracing ?? false,
      },
      // The account-wide API Gateway CloudWatch role: only when asked for.
      cloudWatchRole: props.apiGatewayLogsRole ?? false,
    });
    for (const sensor of SENSORS) {
      this.functions[sensor.name].addPermission(`${sensor.id}RestInvoke`, {
        principal: new iam.ServicePrincipal('apigateway.amazonaws.com'),
        sourceArn: this.restApi.arnForExecuteApi('*', `/${sensor.name}`, '*'),
      });
      // The per-box route (SigV4): POST /things/{thing}/<sensor>.
      this.functions[sensor.name].addPermission(`${sensor.id}ThingRestInvoke`, {
        principal: new iam.ServicePrincipal('apigateway.amazonaws.com'),
        sourceArn: this.restApi.arnForExecuteApi('*', `/things/*/${sensor.name}`, '*'),
      });
    }
    QUERY_ROUTES.forEach((route, i) => {
      query.addPermission(`QueryRestInvoke${i}`, {
        principal: new iam.ServicePrincipal('apigateway.amazonaws.com'),
        sourceArn: this.restApi.arnForExecuteApi('*', route, '*'),
      });
    });
    const plan = this.restApi.addUsagePlan('UsagePlan', {
      description: 'Sensor boxes',
      throttle: { rateLimit: props.throttleRateLimit ?? 50, burstLimit: props.throttleBurstLimit ?? 100 },
      quota: { limit: props.quotaLimit ?? 1_000_000, period: props.quotaPeriod ?? apigw.Period.MONTH },
    });
    plan.addApiStage({ stage: this.restApi.deploymentStage });
    const apiKey = this.restApi.addApiKey('ApiKey');
    plan.addApiKey(apiKey);
    // Viewers (the page asks for this key once and keeps it in the browser): their own
    // usage plan, throttled apart from the boxes, rotated or revoked without touching one.
    const viewerPlan = this.restApi.addUsagePlan('ViewerUsagePlan', {
      description: 'Fleet viewers (the page and GET /api/*)',
      throttle: { rateLimit: props.viewerThrottleRateLimit ?? 20, burstLimit: props.viewerThrottleBurstLimit ?? 40 },
      quota: { limit: props.viewerQuotaLimit ?? 200_000, period: apigw.Period.DAY },
    });
    viewerPlan.addApiStage({ stage: this.restApi.deploymentStage });
    // Not restApi.addApiKey: that ties the key to the stage, and the query function's
    // environment names the key while the API names the function (a cycle).
    const viewerKey = new apigw.ApiKey(this, 'ViewerApiKey', { description: 'Viewer key for the fleet page' });
    viewerPlan.addApiKey(viewerKey);
    // API keys are not per route: the function reads fleet data only for the viewer key,
    // so a box's key cannot read the fleet.
    query.addEnvironment('VIEWER_KEY_IDS', viewerKey.keyId);
    new CfnOutput(this, 'PageUrl', { value: this.restApi.url, description: 'The fleet page (enter the viewer key once)' });
    new CfnOutput(this, 'ViewerApiKeyId', {
      value: viewerKey.keyId,
      description: 'aws apigateway get-api-key --api-key <id> --include-value --query value --output text',
    });
    new CfnOutput(this, 'QueryRoleArn', { value: query.role!.roleArn, description: 'Map as a backend role (read) with fine-grained access control' });

    // ------------------------------------------------------------ HTTP API (optional, no API keys)
    // The boxes' own routes (always SigV4) and the legacy routes (httpApiAuthorization).
    let httpApi: apigwv2.HttpApi | undefined;
    if (props.httpApi) {
      httpApi = new apigwv2.HttpApi(this, 'HttpApi', {
        apiName: `${this.stackName}-sensors-http`,
        createDefaultStage: false,
        defaultAuthorizer: (props.httpApiAuthorization ?? 'AWS_IAM') === 'AWS_IAM' ? new HttpIamAuthorizer() : undefined,
      });
      new apigwv2.HttpStage(this, 'HttpApiStage', {
        httpApi,
        stageName: '$default',
        autoDeploy: true,
        throttle: { rateLimit: props.throttleRateLimit ?? 50, burstLimit: props.throttleBurstLimit ?? 100 },
      });
      for (const sensor of SENSORS) {
        // One integration per function, shared by its two routes.
        const integration = new HttpLambdaRouteIntegration(`${sensor.id}HttpIntegration`, this.functions[sensor.name]);
        httpApi.addRoutes({
          path: `/${sensor.name}`,
          methods: [apigwv2.HttpMethod.POST],
          integration,
        });
        // The box's own route: SigV4 whatever httpApiAuthorization says; the function takes
        // the box from the path, which IAM checked against the caller (SensorBoxHttpsRole).
        httpApi.addRoutes({
          path: `/things/{thing}/${sensor.name}`,
          methods: [apigwv2.HttpMethod.POST],
          integration,
          authorizer: new HttpIamAuthorizer(),
        });
      }
      new CfnOutput(this, 'HttpApiUrl', {
        value: httpApi.apiEndpoint,
        description: 'HTTP API base URL (no API keys); a box POSTs <url>/things/<its thing>/gasdetector, /dust, /temp signed with SigV4',
      });
    }

    // ------------------------------------------------------------ IoT Core: a box's HTTPS identity
    // The IoT credentials provider assumes this role for a box's certificate (via the role
    // alias) and puts the box's thing name into the session (header x-amzn-iot-thingname;
    // the thing must be attached to the certificate): the box may invoke only its own
    // thing's routes. Its group is not here: the function checks it against the registry.
    const stageName = props.stageName ?? 'v1';
    const httpsRole = new iam.Role(this, 'SensorBoxHttpsRole', {
      description: "A sensor box's HTTPS identity (IoT credentials provider); POST /things/<its thing>/* only",
      assumedBy: new iam.ServicePrincipal('credentials.iot.amazonaws.com'),
      maxSessionDuration: Duration.hours(1),
      inlinePolicies: {
        'invoke-own-thing-routes': new iam.PolicyDocument({
          statements: [new iam.PolicyStatement({
            actions: ['execute-api:Invoke'],
            // Literally ${credentials-iot:ThingName}: IAM resolves it per session.
            resources: [
              this.restApi.arnForExecuteApi('POST', '/things/${credentials-iot:ThingName}/*', stageName),
              // The same routes on the HTTP API (any stage: it has $default), when there is one.
              ...(httpApi ? [httpApi.arnForExecuteApi('POST', '/things/${credentials-iot:ThingName}/*')] : []),
            ],
          })],
        }),
      },
    });
    const roleAlias = new iot.CfnRoleAlias(this, 'SensorBoxHttpsRoleAlias', {
      roleAlias: `${this.stackName}-sensor-box`,
      roleArn: httpsRole.roleArn,
      credentialDurationSeconds: 3600,
    });

    // ------------------------------------------------------------ IoT Core: the boxes' policy
    const boxPolicy = new iot.CfnPolicy(this, 'SensorBoxPolicy', {
      policyName: `${this.stackName}-sensor-box`,
      policyDocument: {
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Action: 'iot:Connect',
            Resource: iotArn('client', '${iot:Connection.Thing.ThingName}'),
            Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
          },
          {
            Effect: 'Allow',
            Action: 'iot:Subscribe',
            Resource: iotArn('topicfilter', `${topicPrefix}/\${iot:Connection.Thing.Attributes[groupid]}`),
          },
          {
            Effect: 'Allow',
            Action: 'iot:Receive',
            Resource: iotArn('topic', `${topicPrefix}/\${iot:Connection.Thing.Attributes[groupid]}`),
          },
          {
            Effect: 'Allow',
            Action: 'iot:Publish',
            Resource: [
              iotArn('topic', `${deviceRoot}/\${iot:Connection.Thing.ThingName}/lwt`),
              iotArn('topic', `${deviceRoot}/\${iot:Connection.Thing.ThingName}/connected`),
              iotArn('topic', `${deviceRoot}/\${iot:Connection.Thing.ThingName}/data/*`),
            ],
          },
          ...boxShadowStatements(iotArn, alarmThingPrefix),
          // Its HTTPS identity: the credentials provider's role, through this alias only.
          { Effect: 'Allow', Action: 'iot:AssumeRoleWithCertificate', Resource: roleAlias.attrRoleAliasArn },
          // The stream path only: its batches on the Basic Ingest topic, as its own thing and group.
          streamPath.boxStatement(iotArn),
        ],
      },
    });

    // ------------------------------------------------------------ IoT Core: rule failures are logged
    const ruleErrors = new logs.LogGroup(this, 'IotRuleErrorLogGroup', { retention, removalPolicy: RemovalPolicy.DESTROY });
    const ruleErrorRole = new iam.Role(this, 'IotRuleErrorRole', {
      assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
      }),
    });
    ruleErrorRole.addToPolicy(new iam.PolicyStatement({
      actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [ruleErrors.logGroupArn],
    }));
    const errorAction: iot.CfnTopicRule.ActionProperty = {
      cloudwatchLogs: { logGroupName: ruleErrors.logGroupName, roleArn: ruleErrorRole.roleArn },
    };

    // ------------------------------------------------------------ IoT Core: connection status in the shadow
    const shadowRole = new iam.Role(this, 'ShadowRuleRole', {
      assumedBy: new iam.ServicePrincipal('iot.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
      }),
    });
    shadowRole.addToPolicy(new iam.PolicyStatement({
      actions: ['iot:Publish'], resources: [iotArn('topic', '$aws/things/*/shadow/update')],
    }));
    shadowRole.addToPolicy(new iam.PolicyStatement({
      actions: ['iot:UpdateThingShadow'], resources: [iotArn('thing', '*')],
    }));
    const shadowRule = (ruleId: string, description: string, sql: string, thingSegment: number) =>
      new iot.CfnTopicRule(this, ruleId, {
        topicRulePayload: {
          description,
          awsIotSqlVersion: '2016-03-23',
          ruleDisabled: false,
          sql,
          errorAction,
          actions: [{
            republish: {
              topic: `$$aws/things/\${topic(${thingSegment})}/shadow/update`,
              qos: 1,
              roleArn: shadowRole.roleArn,
            },
          }],
        },
      });
    shadowRule('LastWillRule', "A box's Last Will marks its shadow disconnected",
      `SELECT {'reported': {'connected': false, 'lastWillAt': timestamp()}} AS state FROM '${deviceRoot}/+/lwt'`, 2);
    // sensorbox reports each connect itself (after its subscriptions), so the shadow says
    // connected even where lifecycle events arrive late or are not enabled.
    shadowRule('ConnectReportRule', "A box's own connect report marks its shadow connected",
      `SELECT {'reported': {'connected': true, 'connectedAt': timestamp()}} AS state FROM '${deviceRoot}/+/connected'`, 2);
    shadowRule('ConnectedRule', "A box's connect event marks its shadow connected",
      "SELECT {'reported': {'connected': true, 'connectedAt': timestamp}} AS state FROM '$aws/events/presence/connected/+'", 5);
    shadowRule('DisconnectedRule', "A box's clean disconnect marks its shadow disconnected",
      "SELECT {'reported': {'connected': false, 'disconnectedAt': timestamp, 'disconnectReason': disconnectReason}} AS state "
      + "FROM '$aws/events/presence/disconnected/+' WHERE clientInitiatedDisconnect = true", 5);

    // ------------------------------------------------------------ IoT Core: readings over MQTT
    // <root>/<thing>/data/<sensor> -> the sensor's function, invoked directly with
    // {"thing": <the topic's thing>, "payload": <the raw MQTT payload, base64>}: the IoT policy
    // lets a box publish only under its own thing, and the function enforces that thing's group.
    if (props.iotDataRules ?? true) {
      for (const sensor of SENSORS) {
        const fn = this.functions[sensor.name];
        const rule = new iot.CfnTopicRule(this, `${sensor.id}DataRule`, {
          topicRulePayload: {
            description: `MQTT readings to the ${sensor.name} function`,
            awsIotSqlVersion: '2016-03-23',
            ruleDisabled: false,
            sql: dataRuleSql(deviceRoot, sensor.name),
            errorAction,
            actions: [{ lambda: { functionArn: fn.functionArn } }],
          },
        });
        fn.addPermission(`${sensor.id}DataRulePermission`, {
          principal: new iam.ServicePrincipal('iot.amazonaws.com'),
          sourceAccount: this.account,
          sourceArn: rule.attrArn,
        });
      }
    }

    // ------------------------------------------------------------ alarms, SNS topic, dashboard
    this.operations = new Operations(this, 'Operations', {
      namespace: metricsNamespace,
      // The ingest functions (their metrics carry a `sensor` dimension); as in the SAM template.
      functions: Object.fromEntries(SENSORS.map((sensor) => [sensor.name, this.functions[sensor.name]])),
      restApi: this.restApi,
      domain: this.domain,
      ruleErrors,
      alarmEmail: props.alarmEmail,
      apiLatencyP99Ms: props.apiLatencyP99Ms,
      unavailablePercent: props.unavailablePercent,
      openSearchFreeStorageMb: props.openSearchFreeStorageMb,
      stream: {
        condition: streamPath.condition,
        queues: {
          StreamFailureQueue: streamPath.failureQueue.attrQueueName,
          StreamRuleErrorQueue: streamPath.ruleErrorQueue.attrQueueName,
        },
      },
    });

    // ------------------------------------------------------------ outputs
    new CfnOutput(this, 'AlarmTopicArn', { value: this.operations.topic.topicArn, description: 'SNS topic of the CloudWatch alarms' });
    new CfnOutput(this, 'ApiAccessLogGroupName', { value: accessLogs.logGroupName });
    new CfnOutput(this, 'RestApiUrl', {
      value: this.restApi.url,
      description: 'A box POSTs <url>things/<its thing>/gasdetector signed with SigV4 (legacy, with LegacyKeyRoutes true: <url>gasdetector with header x-api-key)',
    });
    new CfnOutput(this, 'ApiKeyId', {
      value: apiKey.keyId,
      description: 'aws apigateway get-api-key --api-key <id> --include-value --query value --output text',
    });
    new CfnOutput(this, 'OpenSearchEndpoint', { value: openSearchUrl });
    new CfnOutput(this, 'IotDataEndpoint', {
      value: iotDataEndpoint, description: 'AWS_ENDPOINT_URL_IOT_DATA_PLANE; boxes connect to its host on port 8883',
    });
    new CfnOutput(this, 'SensorBoxPolicyName', { value: boxPolicy.ref, description: "IoT policy for each box's certificate" });
    new CfnOutput(this, 'SensorBoxRoleAlias', {
      value: roleAlias.ref,
      description: "IoT role alias of the boxes' HTTPS identity: GET https://<IotCredentialsEndpoint host>/role-aliases/<alias>/credentials "
        + 'with the box certificate and header x-amzn-iot-thingname',
    });
    if (iotCredentialsEndpoint) {
      new CfnOutput(this, 'IotCredentialsEndpoint', {
        value: iotCredentialsEndpoint,
        description: 'The IoT credentials provider (mutual TLS with the box certificate). Absent when iotDataEndpoint is given: '
          + 'aws iot describe-endpoint --endpoint-type iot:CredentialProvider',
      });
    }
    if (this.domain) {
      new CfnOutput(this, 'OpenSearchDashboardsUrl', { value: `https://${this.domain.domainEndpoint}/_dashboards` });
    }
    for (const sensor of SENSORS) {
      new CfnOutput(this, `${sensor.id}FunctionName`, { value: this.functions[sensor.name].functionName });
      new CfnOutput(this, `${sensor.id}RoleArn`, { value: this.functions[sensor.name].role!.roleArn });
    }
  }
}

