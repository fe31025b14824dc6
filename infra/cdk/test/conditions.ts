// The synthesized template as CloudFormation would deploy it for given parameter values (the
// counterpart of `resolve` in infra/test_template_operations.py): resources and outputs whose
// condition is false dropped, each Fn::If replaced by its chosen branch, AWS::NoValue removed.
// Only what the stack's conditions use is evaluated: Fn::Equals on parameters and literals,
// Fn::Not, Fn::And, Fn::Or, Condition.
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { SensorIngestStack, SensorIngestStackProps } from '../lib/sensor-ingest-stack';

type Json = any;
const NO_VALUE = JSON.stringify({ Ref: 'AWS::NoValue' });

export function resolveConditions(template: Json, parameters: Record<string, string | number> = {}): Json {
  const values: Record<string, string> = {};
  for (const [name, p] of Object.entries<Json>(template.Parameters ?? {})) values[name] = String(p.Default ?? '');
  for (const [name, v] of Object.entries(parameters)) {
    if (!(name in values)) throw new Error(`no parameter ${name}`);
    values[name] = String(v);
  }
  const value = (x: Json): string => {
    if (x && typeof x === 'object') {
      if (!('Ref' in x) || !(x.Ref in values)) throw new Error(`cannot evaluate ${JSON.stringify(x)}`);
      return values[x.Ref];
    }
    return String(x);
  };
  const evaluate = (expr: Json): boolean => {
    const [[key, args]] = Object.entries<Json>(expr);
    switch (key) {
      case 'Fn::Equals': return value(args[0]) === value(args[1]);
      case 'Fn::Not': return !evaluate(args[0]);
      case 'Fn::And': return args.every(evaluate);
      case 'Fn::Or': return args.some(evaluate);
      case 'Condition': return condition(args);
      default: throw new Error(`condition ${JSON.stringify(expr)}`);
    }
  };
  const condition = (name: string): boolean => evaluate(template.Conditions[name]);
  const walk = (x: Json): Json => {
    if (Array.isArray(x)) return x.map(walk).filter((v) => JSON.stringify(v) !== NO_VALUE);
    if (x && typeof x === 'object') {
      const keys = Object.keys(x);
      if (keys.length === 1 && keys[0] === 'Fn::If') {
        const [name, yes, no] = x['Fn::If'];
        return walk(condition(name) ? yes : no);
      }
      const out: Json = {};
      for (const [k, v] of Object.entries(x)) {
        const w = walk(v);
        if (JSON.stringify(w) !== NO_VALUE) out[k] = w;
      }
      return out;
    }
    return x;
  };
  const out = JSON.parse(JSON.stringify(template));
  for (const section of ['Resources', 'Outputs']) {
    out[section] = Object.fromEntries(Object.entries<Json>(out[section] ?? {})
      .filter(([, v]) => v.Condition === undefined || condition(v.Condition))
      .map(([k, v]) => [k, walk(v)]));
  }
  // DependsOn naming a dropped resource would not exist in the deployed template either.
  for (const resource of Object.values<Json>(out.Resources)) {
    if (Array.isArray(resource.DependsOn)) {
      resource.DependsOn = resource.DependsOn.filter((d: string) => d in out.Resources);
      if (resource.DependsOn.length === 0) delete resource.DependsOn;
    }
  }
  return out;
}

/** The stack as synthesized (bundling skipped: no Rust build in tests), conditions and all. */
export function synthRaw(props: SensorIngestStackProps = {}): Template {
  const app = new App({
    context: {
      'aws:cdk:bundling-stacks': [],
      // Template problems that CloudFormation would reject fail the test.
      '@aws-cdk/core:validateAgainstDefaultRules': true,
    },
  });
  return Template.fromStack(new SensorIngestStack(app, 'Test', {
    env: { account: '123456789012', region: 'eu-west-1' },
    ...props,
  }));
}

/** The stack resolved for these stack parameters; `{}` is the default deployment (IngestPath=direct). */
export function synth(props: SensorIngestStackProps = {}, parameters: Record<string, string | number> = {}): Template {
  return Template.fromJSON(resolveConditions(synthRaw(props).toJSON(), parameters));
}
