// CDK assertions on the synthesized stack (bundling skipped: no Rust build in tests).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { dataRuleSql } from '../lib/sensor-ingest-stack';
// The default deployment (IngestPath=direct): the stream path's conditional parts resolved away.
import { synth } from './conditions';

const FUNCTIONS = ['gasdetector', 'dust', 'temp'];

/** Renders an intrinsic (Fn::Join / Ref / Fn::GetAtt / literal) as a string, `${...}` for references. */
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

interface Statement { Effect: string; Action: string | string[]; Resource: unknown; Condition?: unknown }
const actionsOf = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);
const resourcesOf = (s: Statement) => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]).map(render);

/** Every IAM statement of every AWS::IAM::Policy and inline role policy in the template. */
function allStatements(template: Template): Statement[] {
  const out: Statement[] = [];
  for (const policy of Object.values(template.findResources('AWS::IAM::Policy'))) {
    out.push(...policy.Properties.PolicyDocument.Statement);
  }
  for (const role of Object.values(template.findResources('AWS::IAM::Role'))) {
    for (const p of role.Properties.Policies ?? []) out.push(...p.PolicyDocument.Statement);
  }
  return out;
}

/** The statements of the policy attached to a function's role. */
function functionStatements(template: Template, name: string): Statement[] {
  const fnId = functionLogicalId(template, name);
  const fn = template.toJSON().Resources[fnId];
  const roleId = fn.Properties.Role['Fn::GetAtt'][0];
  const policies = Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId));
  return policies.flatMap((p) => p.Properties.PolicyDocument.Statement);
}

function functionLogicalId(template: Template, name: string): string {
  const found = Object.entries(template.findResources('AWS::Lambda::Function', {
    Properties: { Description: `POST /${name}` },
  }));
  assert.equal(found.length, 1, `one function for /${name}`);
  return found[0][0];
}

describe('default stack', () => {
  const template = synth();
  const json = template.toJSON();

  it('has the three Rust functions on provided.al2023, arm64, handler bootstrap', () => {
    // The three ingest functions, the scheduled no-data check and the query function.
    template.resourcePropertiesCountIs('AWS::Lambda::Function', { Runtime: 'provided.al2023' }, 5);
    for (const name of FUNCTIONS) {
      const fn = json.Resources[functionLogicalId(template, name)];
      assert.equal(fn.Properties.Handler, 'bootstrap');
      assert.deepEqual(fn.Properties.Architectures, ['arm64']);
      const env = fn.Properties.Environment.Variables;
      assert.equal(env.TOPIC_TEMPLATE, 'pi/{groupid}');
      assert.equal(env.OPENSEARCH_AUTH, 'sigv4');
      assert.equal(env.OPENSEARCH_SERVICE, 'es');
      assert.equal(env.INDEX, { gasdetector: 'gasdetect', dust: 'dust', temp: 'temp' }[name]);
      assert.match(render(env.OPENSEARCH_URL), /^https:\/\/\$\{OpenSearchDomain[^}]*\.DomainEndpoint\}$/);
      assert.match(render(env.AWS_ENDPOINT_URL_IOT_DATA_PLANE), /^https:\/\/\$\{IotEndpoint[^}]*\.endpointAddress\}$/);
      assert.ok(fn.Properties.LoggingConfig.LogGroup, 'function logs to its own log group');
      assert.equal(env.ALARM_MODE, 'transitions');
      assert.equal(env.ALARM_THING_TEMPLATE, '{groupid}');
      assert.equal(env.ALARM_SHADOW, 'alarms');
      assert.deepEqual(env.LEGACY_KEY_ROUTES, { Ref: 'LegacyKeyRoutes' });
    }
    // Functions, nodata, query, IoT endpoint lookup, IoT rule errors, API access logs: every log group expires.
    template.resourceCountIs('AWS::Logs::LogGroup', 8);
    template.resourcePropertiesCountIs('AWS::Logs::LogGroup', { RetentionInDays: 30 }, 8);
    const lookup = Object.values(template.findResources('AWS::Lambda::Function'))
      .filter((f) => f.Properties.Runtime?.startsWith('nodejs'));
    assert.equal(lookup.length, 1, 'the IoT endpoint lookup');
    assert.ok(lookup[0].Properties.LoggingConfig?.LogGroup, 'the lookup logs to a log group with retention');
  });

  it('builds the REST API from api/openapi.yaml: POST /gasdetector, /dust, /temp with an API key, /things/{thing}/<sensor> with SigV4', () => {
    const apis = Object.values(template.findResources('AWS::ApiGateway::RestApi'));
    assert.equal(apis.length, 1);
    const body = apis[0].Properties.Body;
    assert.match(body.openapi, /^3\.0/);
    assert.deepEqual(body.security, [{ api_key: [] }]);
    assert.equal(body.components.securitySchemes.api_key.name, 'x-api-key');
    assert.equal(body['x-amazon-apigateway-api-key-source'], 'HEADER');
    assert.deepEqual(Object.keys(body.paths).sort(),
      ['/', '/api/boxes', '/api/readings', '/api/rules', '/api/warnings', '/dust', '/gasdetector', '/temp',
        '/things/{thing}/dust', '/things/{thing}/gasdetector', '/things/{thing}/temp']);
    assert.deepEqual(body.components.securitySchemes.sigv4, {
      type: 'apiKey', name: 'Authorization', in: 'header', 'x-amazon-apigateway-authtype': 'awsSigv4',
      description: body.components.securitySchemes.sigv4.description,
    });
    for (const name of FUNCTIONS) {
      const item = body.paths[`/${name}`];
      const thing = body.paths[`/things/{thing}/${name}`];
      assert.equal(item.post.security, undefined, `/${name} needs the key`);
      assert.deepEqual(Object.keys(thing).sort(), ['post', 'x-amazon-apigateway-any-method'], 'no OPTIONS, as /<sensor>');
      for (const operation of Object.values<any>(thing)) {
        assert.deepEqual(operation.security, [{ sigv4: [] }], `/things/{thing}/${name}: SigV4, no API key`);
        assert.deepEqual(operation.parameters, [{ $ref: '#/components/parameters/Thing' }]);
      }
      assert.deepEqual(thing.post.requestBody, item.post.requestBody);
      assert.deepEqual(thing.post.responses, item.post.responses);
      assert.deepEqual(item.post.responses['403'], { $ref: '#/components/responses/ReadingForbidden' });
      for (const operation of [item.post, item['x-amazon-apigateway-any-method'], thing.post, thing['x-amazon-apigateway-any-method']]) {
        const integration = operation['x-amazon-apigateway-integration'];
        assert.equal(integration.type, 'aws_proxy');
        assert.equal(integration.httpMethod, 'POST');
        // This stack's function, not the SAM template's Fn::Sub.
        const uri = JSON.stringify(integration.uri);
        assert.ok(!uri.includes('Fn::Sub'), uri);
        assert.ok(uri.includes(`${name[0].toUpperCase()}${name.slice(1)}Function`), uri);
      }
      assert.ok(item['x-amazon-apigateway-any-method'].responses['405'], 'other methods answer 405');
      template.hasResourceProperties('AWS::Lambda::Permission', {
        Principal: 'apigateway.amazonaws.com',
        SourceArn: { 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp(`/\\*/\\*/${name}$`)])] },
      });
      template.hasResourceProperties('AWS::Lambda::Permission', {
        Principal: 'apigateway.amazonaws.com',
        SourceArn: { 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp(`/\\*/\\*/things/\\*/${name}$`)])] },
      });
    }
    const thing = body.components.parameters.Thing;
    assert.deepEqual([thing.name, thing.in, thing.required], ['thing', 'path', true]);
    assert.deepEqual(thing.schema, { type: 'string', pattern: '^[a-zA-Z0-9:_-]+$', minLength: 1, maxLength: 128 });
    template.resourceCountIs('AWS::ApiGateway::Method', 0);
    // The boxes' key and the viewers' key, each in its own usage plan.
    template.resourceCountIs('AWS::ApiGateway::ApiKey', 2);
    template.resourceCountIs('AWS::ApiGateway::UsagePlanKey', 2);
    template.hasResourceProperties('AWS::ApiGateway::UsagePlan', {
      Throttle: { RateLimit: 50, BurstLimit: 100 },
      Quota: { Limit: 1000000, Period: 'MONTH' },
      ApiStages: Match.arrayWith([Match.objectLike({ Stage: Match.anyValue() })]),
    });
    template.resourceCountIs('AWS::ApiGateway::Account', 0);
    template.resourceCountIs('AWS::ApiGatewayV2::Api', 0);
  });

  it('lets each function publish only under the topic prefix and index only into the domain', () => {
    for (const name of FUNCTIONS) {
      const statements = functionStatements(template, name);
      const publish = statements.filter((s) => actionsOf(s).includes('iot:Publish'));
      assert.equal(publish.length, 1);
      assert.deepEqual(actionsOf(publish[0]), ['iot:Publish']);
      const shadow = statements.filter((s) => actionsOf(s).some((a) => a.includes('ThingShadow')));
      assert.deepEqual([...actionsOf(shadow[0])].sort(), ['iot:GetThingShadow', 'iot:UpdateThingShadow']);
      assert.deepEqual(resourcesOf(shadow[0]), ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:thing/*/alarms']);
      assert.deepEqual(resourcesOf(publish[0]), ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/pi/*']);
      const es = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('es:')));
      assert.equal(es.length, 1);
      assert.deepEqual([...actionsOf(es[0])].sort(), ['es:ESHttpPost', 'es:ESHttpPut']);
      assert.deepEqual(resourcesOf(es[0]), ['arn:${AWS::Partition}:es:eu-west-1:123456789012:domain/sensor-readings/*']);
      const registry = statements.filter((s) => actionsOf(s).includes('iot:DescribeThing'));
      assert.deepEqual(registry.map((s) => [actionsOf(s), resourcesOf(s)]),
        [[['iot:DescribeThing'], ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:thing/*']]]);
      assert.equal(statements.length, 4, `no other permissions for ${name}: ${JSON.stringify(statements)}`);
    }
  });

  it('serves the page and the read API from the query function, read-only, with a viewer key', () => {
    const found = Object.entries(template.findResources('AWS::Lambda::Function', {
      Properties: { Description: 'GET / (the fleet page) and GET /api/* (read API)' },
    }));
    assert.equal(found.length, 1);
    const [id, fn] = found[0];
    const env = fn.Properties.Environment.Variables;
    assert.equal(env.QUERY_INDICES, 'gasdetector=gasdetect*,dust=dust*,temp=temp*');
    assert.equal(env.OPENSEARCH_AUTH, 'sigv4');
    assert.equal(env.CORS_ORIGIN, undefined, 'CORS is off by default');
    assert.equal(env.AWS_ENDPOINT_URL_IOT_DATA_PLANE, undefined, 'the query function calls no IoT API');
    assert.match(render(env.VIEWER_KEY_IDS), /^\$\{ViewerApiKey[^}]*\}$/, 'only the viewer key reads');
    // Its own role: search only, on the sensors' indices.
    const roleId = fn.Properties.Role['Fn::GetAtt'][0];
    for (const name of FUNCTIONS) {
      const ingest = json.Resources[functionLogicalId(template, name)];
      assert.notEqual(ingest.Properties.Role['Fn::GetAtt'][0], roleId, `separate from ${name}'s role`);
    }
    const statements: Statement[] = Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId))
      .flatMap((p) => p.Properties.PolicyDocument.Statement);
    assert.deepEqual(statements.flatMap(actionsOf).sort(), ['es:ESHttpGet', 'es:ESHttpPost']);
    assert.deepEqual(statements.flatMap(resourcesOf), ['gasdetect', 'dust', 'temp'].map(
      (index) => `arn:\${AWS::Partition}:es:eu-west-1:123456789012:domain/sensor-readings/${index}*/_search`));
    // The contract's routes: the page open, the data routes behind a key.
    const body = Object.values(template.findResources('AWS::ApiGateway::RestApi'))[0].Properties.Body;
    assert.deepEqual(body.paths['/'].get.security, []);
    for (const route of ['/api/boxes', '/api/readings', '/api/warnings', '/api/rules']) {
      const item = body.paths[route];
      assert.equal(item.get.security, undefined, `${route} needs the key`);
      assert.deepEqual(item.options.security, [], `${route} preflight is open`);
      assert.ok(JSON.stringify(item.get['x-amazon-apigateway-integration'].uri).includes(id), route);
      template.hasResourceProperties('AWS::Lambda::Permission', {
        Principal: 'apigateway.amazonaws.com',
        SourceArn: { 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp(`/\\*/\\*${route}$`)])] },
      });
    }
    template.hasResourceProperties('AWS::ApiGateway::UsagePlan', {
      Description: 'Fleet viewers (the page and GET /api/*)',
      Throttle: { RateLimit: 20, BurstLimit: 40 },
      Quota: { Limit: 200000, Period: 'DAY' },
    });
    template.hasOutput('ViewerApiKeyId', {});
    template.hasOutput('PageUrl', {});
  });

  it('gives each function only the variables its settings read', () => {
    // As infra/test_template_operations.py checks for SAM: each kind's settings type in
    // crates/lambda/src/settings.rs reads every one of these (RULES only when given).
    const opensearch = ['OPENSEARCH_URL', 'OPENSEARCH_AUTH', 'OPENSEARCH_SERVICE', 'RUST_LOG'];
    const expected: Record<string, string[]> = {
      ingest: [...opensearch, 'INDEX', 'AWS_ENDPOINT_URL_IOT_DATA_PLANE', 'TOPIC_TEMPLATE', 'ACK_MESSAGES',
        'DEVICE_TIMEZONE', 'METRICS_NAMESPACE', 'ALARM_MODE', 'ALARM_THING_TEMPLATE', 'ALARM_SHADOW',
        'LEGACY_KEY_ROUTES'],
      query: [...opensearch, 'QUERY_INDICES', 'VIEWER_KEY_IDS'],
      nodata: [...opensearch, 'NO_DATA_AFTER', 'AWS_ENDPOINT_URL_IOT_DATA_PLANE', 'TOPIC_TEMPLATE',
        'ALARM_THING_TEMPLATE', 'ALARM_SHADOW'],
    };
    const variables = (fn: { [key: string]: any }) =>
      Object.keys(fn.Properties.Environment.Variables).sort();
    const byDescription = (description: string) =>
      Object.values(template.findResources('AWS::Lambda::Function', { Properties: { Description: description } }))[0];
    for (const name of FUNCTIONS) {
      assert.deepEqual(variables(json.Resources[functionLogicalId(template, name)]), expected.ingest.sort(), name);
    }
    assert.deepEqual(variables(byDescription('GET / (the fleet page) and GET /api/* (read API)')), expected.query.sort());
    assert.deepEqual(variables(byDescription('scheduled no-data check (every minute)')), expected.nodata.sort());
  });

  it('runs the no-data check every minute with read-only search, the alarm shadows and publish', () => {
    const [id, fn] = Object.entries(template.findResources('AWS::Lambda::Function', {
      Properties: { Description: 'scheduled no-data check (every minute)' },
    }))[0];
    assert.equal(fn.Properties.Environment.Variables.NO_DATA_AFTER, '900');
    const rule = Object.values(template.findResources('AWS::Events::Rule'))[0];
    assert.equal(rule.Properties.ScheduleExpression, 'rate(1 minute)');
    assert.equal(render(rule.Properties.Targets[0].Arn), `\${${id}.Arn}`);
    const roleId = fn.Properties.Role['Fn::GetAtt'][0];
    const statements: Statement[] = Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId))
      .flatMap((p) => p.Properties.PolicyDocument.Statement);
    assert.deepEqual(statements.flatMap(actionsOf).sort(),
      ['es:ESHttpPost', 'iot:GetThingShadow', 'iot:Publish', 'iot:UpdateThingShadow']);
    const search = statements.find((s) => actionsOf(s).includes('es:ESHttpPost'))!;
    assert.deepEqual(resourcesOf(search), ['arn:${AWS::Partition}:es:eu-west-1:123456789012:domain/sensor-readings/*/_search']);
  });

  it('grants no wildcard iot or es permissions anywhere', () => {
    for (const s of allStatements(template)) {
      for (const a of actionsOf(s)) {
        assert.ok(!['*', 'iot:*', 'es:*'].includes(a), `wildcard action ${a}`);
        if (a === 'iot:Publish' || a.startsWith('es:')) {
          for (const r of resourcesOf(s)) assert.notEqual(r, '*', `${a} on *`);
        }
      }
    }
  });

  it('creates an encrypted, HTTPS-only OpenSearch domain', () => {
    template.hasResourceProperties('AWS::OpenSearchService::Domain', {
      DomainName: 'sensor-readings',
      EncryptionAtRestOptions: { Enabled: true },
      NodeToNodeEncryptionOptions: { Enabled: true },
      DomainEndpointOptions: { EnforceHTTPS: true, TLSSecurityPolicy: 'Policy-Min-TLS-1-2-2019-07' },
      EBSOptions: Match.objectLike({ EBSEnabled: true, VolumeType: 'gp3' }),
    });
    const domain = Object.values(template.findResources('AWS::OpenSearchService::Domain'))[0];
    assert.equal(domain.DeletionPolicy, 'Retain');
    const [statement] = domain.Properties.AccessPolicies.Statement;
    assert.equal(render(statement.Resource), 'arn:${AWS::Partition}:es:eu-west-1:123456789012:domain/sensor-readings/*');
  });

  it('has a thing policy scoped to the box itself and its group topic', () => {
    const policy = Object.values(template.findResources('AWS::IoT::Policy'))[0];
    const statements: Statement[] = policy.Properties.PolicyDocument.Statement;
    const byAction = (a: string) => statements.filter((s) => actionsOf(s).includes(a));
    const [connect] = byAction('iot:Connect');
    assert.deepEqual(resourcesOf(connect), ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:client/${iot:Connection.Thing.ThingName}']);
    assert.deepEqual(connect.Condition, { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } });
    assert.deepEqual(resourcesOf(byAction('iot:Subscribe')[0]),
      ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:topicfilter/pi/${iot:Connection.Thing.Attributes[groupid]}']);
    assert.deepEqual(resourcesOf(byAction('iot:Receive')[0]),
      ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/pi/${iot:Connection.Thing.Attributes[groupid]}']);
    assert.deepEqual(resourcesOf(byAction('iot:Publish')[0]).sort(), [
      'arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/connected',
      'arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/data/*',
      'arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/devices/${iot:Connection.Thing.ThingName}/lwt',
    ]);
    for (const s of statements) for (const r of resourcesOf(s)) assert.ok(!r.endsWith(':*') && !r.endsWith('/#'), r);
    // Its group's alarm shadow: ask (publish .../get), hear the answers; never update it.
    const shadow = '$aws/things/${iot:Connection.Thing.Attributes[groupid]}/shadow/name/alarms';
    const arn = (kind: string, topic: string) => `arn:\${AWS::Partition}:iot:eu-west-1:123456789012:${kind}/${topic}`;
    assert.deepEqual(resourcesOf(byAction('iot:Publish')[1]), [arn('topic', `${shadow}/get`)]);
    assert.ok(resourcesOf(byAction('iot:Subscribe')[1]).includes(arn('topicfilter', `${shadow}/get/accepted`)));
    assert.ok(resourcesOf(byAction('iot:Receive')[1]).includes(arn('topic', `${shadow}/update/documents`)));
    for (const s of statements) for (const r of resourcesOf(s)) assert.ok(!r.includes('/update') || r.endsWith('/update/documents'), r);
  });

  it('keeps the connection status in the shadow from the Last Will and lifecycle events', () => {
    const rules = template.findResources('AWS::IoT::TopicRule');
    for (const [id, rule] of Object.entries(rules)) {
      assert.match(id, /^[a-zA-Z0-9_]+$/, 'rule logical id doubles as a valid rule name');
      assert.equal(rule.Properties.TopicRulePayload.AwsIotSqlVersion, '2016-03-23');
      assert.ok(rule.Properties.TopicRulePayload.ErrorAction.CloudwatchLogs, `${id} logs its failures`);
    }
    const lwt = rules.LastWillRule.Properties.TopicRulePayload;
    assert.match(lwt.Sql, /'connected': false/);
    assert.match(lwt.Sql, /FROM 'devices\/\+\/lwt'$/);
    assert.equal(lwt.Actions[0].Republish.Topic, '$$aws/things/${topic(2)}/shadow/update');
    const report = rules.ConnectReportRule.Properties.TopicRulePayload;
    assert.match(report.Sql, /'connected': true/);
    assert.match(report.Sql, /FROM 'devices\/\+\/connected'$/);
    assert.equal(report.Actions[0].Republish.Topic, '$$aws/things/${topic(2)}/shadow/update');
    const connected = rules.ConnectedRule.Properties.TopicRulePayload;
    assert.match(connected.Sql, /'connected': true/);
    assert.match(connected.Sql, /FROM '\$aws\/events\/presence\/connected\/\+'/);
    assert.equal(connected.Actions[0].Republish.Topic, '$$aws/things/${topic(5)}/shadow/update');
    const disconnected = rules.DisconnectedRule.Properties.TopicRulePayload;
    assert.match(disconnected.Sql, /FROM '\$aws\/events\/presence\/disconnected\/\+'/);
    // The rules' role may update shadows and nothing else.
    const roleId = render(lwt.Actions[0].Republish.RoleArn).replace(/^\$\{|\.Arn\}$/g, '');
    const policies = Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId));
    const statements: Statement[] = policies.flatMap((p) => p.Properties.PolicyDocument.Statement);
    assert.deepEqual(statements.flatMap(actionsOf).sort(), ['iot:Publish', 'iot:UpdateThingShadow']);
    const publish = statements.find((s) => actionsOf(s).includes('iot:Publish'))!;
    assert.deepEqual(resourcesOf(publish), ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/$aws/things/*/shadow/update']);
  });

  it('routes MQTT readings to the functions with a Lambda action and permission', () => {
    for (const name of FUNCTIONS) {
      const fnId = functionLogicalId(template, name);
      const rules = Object.entries(template.findResources('AWS::IoT::TopicRule', {
        Properties: { TopicRulePayload: { Sql: dataRuleSql('devices', name) } },
      }));
      assert.equal(rules.length, 1, `one data rule for ${name}`);
      const [ruleId, rule] = rules[0];
      // The function gets the thing from the topic and the raw payload: it enforces the thing's group.
      assert.equal(rule.Properties.TopicRulePayload.Sql,
        `SELECT topic(2) AS thing, encode(*, 'base64') AS payload FROM 'devices/+/data/${name}'`);
      assert.equal(rule.Properties.TopicRulePayload.AwsIotSqlVersion, '2016-03-23');
      assert.equal(render(rule.Properties.TopicRulePayload.Actions[0].Lambda.FunctionArn), `\${${fnId}.Arn}`);
      template.hasResourceProperties('AWS::Lambda::Permission', {
        Action: 'lambda:InvokeFunction',
        Principal: 'iot.amazonaws.com',
        FunctionName: { 'Fn::GetAtt': [fnId, 'Arn'] },
        SourceArn: { 'Fn::GetAtt': [ruleId, 'Arn'] },
        SourceAccount: '123456789012',
      });
    }
  });

  it('outputs what the deploy guide reads: API URL, API key id, endpoints, policy, functions, roles', () => {
    for (const output of [
      'RestApiUrl', 'ApiKeyId', 'OpenSearchEndpoint', 'OpenSearchDashboardsUrl', 'IotDataEndpoint', 'SensorBoxPolicyName',
      'SensorBoxRoleAlias', 'IotCredentialsEndpoint',
      'GasdetectorFunctionName', 'DustFunctionName', 'TempFunctionName', 'GasdetectorRoleArn', 'DustRoleArn', 'TempRoleArn',
    ]) {
      assert.ok(json.Outputs[output], output);
    }
  });
});

describe('identity: one per box (issue 21)', () => {
  const template = synth();
  const json = template.toJSON();
  const byDescription = (description: string) =>
    Object.values(template.findResources('AWS::Lambda::Function', { Properties: { Description: description } }))[0];
  const roleStatements = (fn: { [key: string]: any }): Statement[] => {
    const roleId = fn.Properties.Role['Fn::GetAtt'][0];
    return Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId))
      .flatMap((p) => p.Properties.PolicyDocument.Statement);
  };
  const others = [
    byDescription('GET / (the fleet page) and GET /api/* (read API)'),
    byDescription('scheduled no-data check (every minute)'),
  ];

  it('has a LegacyKeyRoutes parameter, off by default, read by exactly the ingest functions', () => {
    const parameter = json.Parameters.LegacyKeyRoutes;
    assert.equal(parameter.Type, 'String');
    assert.equal(parameter.Default, 'false');
    assert.deepEqual(parameter.AllowedValues, ['true', 'false']);
    assert.match(parameter.Description, /Weaker/);
    for (const name of FUNCTIONS) {
      const env = json.Resources[functionLogicalId(template, name)].Properties.Environment.Variables;
      assert.deepEqual(env.LEGACY_KEY_ROUTES, { Ref: 'LegacyKeyRoutes' }, name);
    }
    for (const fn of others) assert.equal(fn.Properties.Environment.Variables.LEGACY_KEY_ROUTES, undefined);
    assert.equal(synth({ legacyKeyRoutes: true }).toJSON().Parameters.LegacyKeyRoutes.Default, 'true');
  });

  it('lets only the ingest functions read the registry (DescribeThing on things)', () => {
    for (const name of FUNCTIONS) {
      const found = functionStatements(template, name).filter((s) => actionsOf(s).some((a) => a.includes('Thing') && !a.includes('Shadow')));
      assert.deepEqual(found.map((s) => [actionsOf(s), resourcesOf(s)]),
        [[['iot:DescribeThing'], ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:thing/*']]], name);
    }
    for (const fn of others) {
      const actions = roleStatements(fn).flatMap(actionsOf);
      assert.ok(!actions.some((a) => a === 'iot:DescribeThing' || a.startsWith('iot:List')), JSON.stringify(actions));
    }
  });

  it("gives a box's HTTPS role only POST on its own thing's routes, trusted by the IoT credentials provider", () => {
    const roles = Object.entries(template.findResources('AWS::IAM::Role', {
      Properties: { AssumeRolePolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Principal: { Service: 'credentials.iot.amazonaws.com' } })]) } },
    }));
    assert.equal(roles.length, 1, 'one role for the credentials provider');
    const [roleId, role] = roles[0];
    assert.equal(role.Properties.MaxSessionDuration, 3600);
    assert.deepEqual(role.Properties.AssumeRolePolicyDocument.Statement, [
      { Effect: 'Allow', Principal: { Service: 'credentials.iot.amazonaws.com' }, Action: 'sts:AssumeRole' },
    ]);
    assert.equal(role.Properties.Policies.length, 1);
    const [statement] = role.Properties.Policies[0].PolicyDocument.Statement;
    assert.equal(role.Properties.Policies[0].PolicyDocument.Statement.length, 1);
    assert.equal(statement.Effect, 'Allow');
    assert.equal(statement.Action, 'execute-api:Invoke');
    assert.match(render(statement.Resource),
      /^arn:\$\{AWS::Partition\}:execute-api:eu-west-1:123456789012:\$\{RestApi[0-9A-F]*\}\/v1\/POST\/things\/\$\{credentials-iot:ThingName\}\/\*$/);
    assert.equal(role.Properties.ManagedPolicyArns, undefined);
    // No other policy attached to it.
    const attached = Object.values(template.findResources('AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: { Ref: string }) => r.Ref === roleId));
    assert.equal(attached.length, 0);
    // The alias the boxes ask the credentials provider for.
    const aliases = Object.entries(template.findResources('AWS::IoT::RoleAlias'));
    assert.equal(aliases.length, 1);
    const [aliasId, alias] = aliases[0];
    assert.deepEqual(alias.Properties, {
      RoleAlias: 'Test-sensor-box',
      RoleArn: { 'Fn::GetAtt': [roleId, 'Arn'] },
      CredentialDurationSeconds: 3600,
    });
    assert.deepEqual(json.Outputs.SensorBoxRoleAlias.Value, { Ref: aliasId });
    assert.match(render(json.Outputs.IotCredentialsEndpoint.Value), /^https:\/\/\$\{IotCredentialsEndpointLookup[^}]*\.endpointAddress\}$/);
    const lookup = Object.values(template.findResources('Custom::AWS'))
      .map((r) => JSON.stringify(r.Properties.Update));
    assert.equal(lookup.length, 2);
    assert.ok(lookup.some((u) => u.includes('iot:CredentialProvider')), lookup.join());
    // No group id in the HTTPS identity: the function checks the group in the registry.
    assert.ok(!JSON.stringify([role, alias]).toLowerCase().includes('groupid'));
  });

  it('lets a box assume the role through the alias only', () => {
    const policy = Object.values(template.findResources('AWS::IoT::Policy'))[0];
    const statements: Statement[] = policy.Properties.PolicyDocument.Statement;
    const assume = statements.filter((s) => actionsOf(s).some((a) => a.includes('AssumeRole')));
    const [aliasId] = Object.keys(template.findResources('AWS::IoT::RoleAlias'));
    assert.deepEqual(assume, [
      { Effect: 'Allow', Action: 'iot:AssumeRoleWithCertificate', Resource: { 'Fn::GetAtt': [aliasId, 'RoleAliasArn'] } },
    ]);
  });

  it('names the credentials provider in the output description when the IoT endpoint is given', () => {
    const given = synth({ iotDataEndpoint: 'https://abc-ats.iot.eu-west-1.amazonaws.com' }).toJSON();
    assert.equal(given.Outputs.IotCredentialsEndpoint, undefined);
    assert.ok(given.Outputs.SensorBoxRoleAlias);
    assert.match(json.Outputs.IotCredentialsEndpoint.Description, /--endpoint-type iot:CredentialProvider/);
  });
});

describe('options', () => {
  it('passes the CORS origin to the query function only when given', () => {
    const template = synth({ corsOrigin: 'https://fleet.example.com', viewerQuotaLimit: 5000 });
    const [, fn] = Object.entries(template.findResources('AWS::Lambda::Function', {
      Properties: { Description: 'GET / (the fleet page) and GET /api/* (read API)' },
    }))[0];
    assert.equal(fn.Properties.Environment.Variables.CORS_ORIGIN, 'https://fleet.example.com');
    template.hasResourceProperties('AWS::ApiGateway::UsagePlan', {
      Description: 'Fleet viewers (the page and GET /api/*)',
      Quota: { Limit: 5000, Period: 'DAY' },
    });
  });

  /** The HTTP API's routes by route key, the integrations, and the API-Gateway invoke permissions on it. */
  const httpApiParts = (template: Template) => {
    const [apiId] = Object.keys(template.findResources('AWS::ApiGatewayV2::Api'));
    const routes = Object.fromEntries(Object.values(template.findResources('AWS::ApiGatewayV2::Route'))
      .map((r) => [r.Properties.RouteKey as string, r.Properties]));
    const integrations = template.findResources('AWS::ApiGatewayV2::Integration');
    const permissions = Object.values(template.findResources('AWS::Lambda::Permission'))
      .filter((p) => JSON.stringify(p.Properties.SourceArn ?? '').includes(apiId));
    return { apiId, routes, integrations, permissions };
  };

  it("adds an HTTP API with the boxes' IAM routes and the legacy routes (AWS_IAM by default)", () => {
    const template = synth({ httpApi: true });
    template.resourceCountIs('AWS::ApiGatewayV2::Api', 1);
    const { apiId, routes, integrations, permissions } = httpApiParts(template);
    assert.deepEqual(Object.keys(routes).sort(), FUNCTIONS.flatMap((n) => [`POST /${n}`, `POST /things/{thing}/${n}`]).sort());
    assert.equal(Object.keys(integrations).length, 3, 'one integration per function');
    for (const name of FUNCTIONS) {
      const fnId = functionLogicalId(template, name);
      const legacy = routes[`POST /${name}`];
      const thing = routes[`POST /things/{thing}/${name}`];
      assert.equal(legacy.AuthorizationType, 'AWS_IAM');
      assert.equal(thing.AuthorizationType, 'AWS_IAM');
      // Both routes on the function's one integration.
      assert.deepEqual(thing.Target, legacy.Target, name);
      const [integrationId] = Object.entries(integrations)
        .filter(([, i]) => JSON.stringify(i.Properties.IntegrationUri).includes(fnId)).map(([id]) => id);
      assert.ok(render(thing.Target).includes(integrationId), render(thing.Target));
      assert.equal(integrations[integrationId].Properties.PayloadFormatVersion, '2.0');
      // One permission per route, scoped to it; the path parameter as `*`, never `{thing}`.
      const arns = permissions
        .filter((p) => JSON.stringify(p.Properties.FunctionName).includes(fnId))
        .map((p) => render(p.Properties.SourceArn)).sort();
      assert.deepEqual(arns, [
        `arn:\${AWS::Partition}:execute-api:eu-west-1:123456789012:\${${apiId}}/*/*/${name}`,
        `arn:\${AWS::Partition}:execute-api:eu-west-1:123456789012:\${${apiId}}/*/*/things/*/${name}`,
      ], name);
    }
    assert.equal(permissions.length, 6, JSON.stringify(permissions));
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default', DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
    });
    // A box may invoke its own thing's routes on the HTTP API too.
    const [role] = Object.values(template.findResources('AWS::IAM::Role', {
      Properties: { AssumeRolePolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Principal: { Service: 'credentials.iot.amazonaws.com' } })]) } },
    }));
    const [statement] = role.Properties.Policies[0].PolicyDocument.Statement;
    assert.equal(statement.Action, 'execute-api:Invoke');
    assert.equal(statement.Resource.length, 2);
    assert.match(render(statement.Resource[0]),
      /^arn:\$\{AWS::Partition\}:execute-api:eu-west-1:123456789012:\$\{RestApi[0-9A-F]*\}\/v1\/POST\/things\/\$\{credentials-iot:ThingName\}\/\*$/);
    assert.equal(render(statement.Resource[1]),
      `arn:\${AWS::Partition}:execute-api:eu-west-1:123456789012:\${${apiId}}/*/POST/things/\${credentials-iot:ThingName}/*`);
  });

  it("keeps the boxes' HTTP API routes on AWS_IAM when the legacy routes are open", () => {
    const template = synth({ httpApi: true, httpApiAuthorization: 'NONE' });
    const { routes } = httpApiParts(template);
    for (const name of FUNCTIONS) {
      assert.equal(routes[`POST /${name}`].AuthorizationType, 'NONE', name);
      assert.equal(routes[`POST /things/{thing}/${name}`].AuthorizationType, 'AWS_IAM', name);
    }
    template.resourceCountIs('AWS::ApiGatewayV2::Route', 6);
  });

  it('uses an existing domain, x86_64, a custom topic prefix and a given IoT endpoint', () => {
    const template = synth({
      architecture: 'x86_64',
      topicPrefix: 'alerts/pi',
      iotDataEndpoint: 'https://abc-ats.iot.eu-west-1.amazonaws.com',
      existingOpenSearch: {
        endpoint: 'https://search-x.eu-west-1.es.amazonaws.com',
        arn: 'arn:aws:es:eu-west-1:123456789012:domain/x',
      },
      iotDataRules: false,
    });
    template.resourceCountIs('AWS::OpenSearchService::Domain', 0);
    template.resourceCountIs('Custom::AWS', 0);
    template.resourcePropertiesCountIs('AWS::Lambda::Function', {
      Architectures: ['x86_64'],
      Environment: {
        Variables: Match.objectLike({
          TOPIC_TEMPLATE: 'alerts/pi/{groupid}',
          OPENSEARCH_URL: 'https://search-x.eu-west-1.es.amazonaws.com',
          AWS_ENDPOINT_URL_IOT_DATA_PLANE: 'https://abc-ats.iot.eu-west-1.amazonaws.com',
        }),
      },
    }, 4); // the three ingest functions and the no-data check
    const statements = functionStatements(template, 'dust');
    const es = statements.find((s) => actionsOf(s).includes('es:ESHttpPost'))!;
    assert.deepEqual(resourcesOf(es), ['arn:aws:es:eu-west-1:123456789012:domain/x/*']);
    const publish = statements.find((s) => actionsOf(s).includes('iot:Publish'))!;
    assert.deepEqual(resourcesOf(publish), ['arn:${AWS::Partition}:iot:eu-west-1:123456789012:topic/alerts/pi/*']);
    assert.equal(Object.keys(template.findResources('AWS::IoT::TopicRule')).length, 4, 'only the shadow rules');
  });

  it('uses aoss:APIAccessAll on the collection for OpenSearch Serverless', () => {
    const template = synth({
      existingOpenSearch: {
        endpoint: 'https://abc.eu-west-1.aoss.amazonaws.com',
        arn: 'arn:aws:aoss:eu-west-1:123456789012:collection/abc',
        service: 'aoss',
      },
    });
    const statements = functionStatements(template, 'temp');
    const aoss = statements.find((s) => actionsOf(s).includes('aoss:APIAccessAll'))!;
    assert.deepEqual(resourcesOf(aoss), ['arn:aws:aoss:eu-west-1:123456789012:collection/abc']);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ OPENSEARCH_SERVICE: 'aoss' }) },
    });
  });
});
