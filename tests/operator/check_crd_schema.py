"""Validates custom resources against their CRD's openAPIV3Schema, offline.

    python tests/operator/check_crd_schema.py CRD.yaml MANIFEST.yaml...

Every document of the CRD's kind and storage version (ClawdBot
clawdbot.io/v1alpha1, CloudNativePG's Cluster, the Prometheus Operator's
ServiceMonitor and PrometheusRule) in
every MANIFEST is checked; other documents (Secrets, ConfigMaps) are skipped.
The structural OpenAPI schema is turned into JSON Schema (draft 4) the way
the API server reads it:

  - `nullable: true` admits null;
  - `x-kubernetes-int-or-string: true` admits an integer or a string;
  - strict field validation (kubectl's default, --validate=strict): an object
    with `properties` and neither `additionalProperties` nor
    `x-kubernetes-preserve-unknown-fields` rejects unknown fields, so a typo
    in an example fails here instead of being pruned silently;
  - CEL rules (x-kubernetes-validations) are not evaluated here: the Rust test
    operator/tests/cel.rs does that with kube's CEL validator.

Prints one line per problem (file, document number from 1, kind/name, JSON path,
message) and exits 1 when there is any, 2 on unusable input.
"""
import copy
import sys

import jsonschema
import yaml

GROUP_VERSION = None  # set from the CRD by load_schema
KIND = None


def to_json_schema(node):
    """The OpenAPI v3 structural schema `node` as draft-4 JSON Schema."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith('x-kubernetes-') and k != 'nullable'}
    if node.get('x-kubernetes-int-or-string'):
        out.pop('type', None)
        out['anyOf'] = [{'type': 'integer'}, {'type': 'string'}]
    if node.get('nullable'):
        if isinstance(out.get('type'), str):
            out['type'] = [out['type'], 'null']
        if 'anyOf' in out:
            out['anyOf'] = out['anyOf'] + [{'type': 'null'}]
        if 'enum' in out and None not in out['enum']:
            out['enum'] = out['enum'] + [None]
    if ('properties' in out and 'additionalProperties' not in node
            and not node.get('x-kubernetes-preserve-unknown-fields')):
        out['additionalProperties'] = False
    # RE2 (the API server's) takes an inline flag after `^`; Python's re
    # only at the start, where it means the same.
    if isinstance(out.get('pattern'), str) and out['pattern'].startswith('^(?i)'):
        out['pattern'] = '(?i)^' + out['pattern'][len('^(?i)'):]
    # `format` (int32, double, uint32, ...) is advisory here, as in draft 4.
    return out


def load_schema(crd_path):
    global GROUP_VERSION, KIND
    with open(crd_path, encoding='utf-8') as f:
        crd = yaml.safe_load(f)
    if crd.get('kind') != 'CustomResourceDefinition':
        raise ValueError(f'{crd_path}: not a CustomResourceDefinition')
    versions = [v for v in crd['spec']['versions'] if v.get('storage')]
    if len(versions) != 1:
        raise ValueError(f'{crd_path}: no single storage version')
    GROUP_VERSION = f"{crd['spec']['group']}/{versions[0]['name']}"
    KIND = crd['spec']['names']['kind']
    schema = to_json_schema(copy.deepcopy(versions[0]['schema']['openAPIV3Schema']))
    # The API server handles apiVersion, kind and metadata itself, whether or
    # not the CRD's schema lists them.
    props = schema.setdefault('properties', {})
    props['apiVersion'] = {'type': 'string', 'enum': [GROUP_VERSION]}
    props['kind'] = {'type': 'string', 'enum': [KIND]}
    props['metadata'] = {'type': 'object'}
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def path_of(error):
    parts = ['$']
    for p in error.absolute_path:
        parts.append(f'[{p}]' if isinstance(p, int) else f'.{p}')
    return ''.join(parts)


def check_file(validator, path):
    """(problems, number of ClawdBot documents) of one manifest file."""
    problems = []
    count = 0
    try:
        with open(path, encoding='utf-8') as f:
            docs = list(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError) as e:
        return [f'{path}: cannot read YAML: {e}'], 0
    for i, doc in enumerate(docs, start=1):
        if not isinstance(doc, dict) or doc.get('apiVersion') != GROUP_VERSION or doc.get('kind') != KIND:
            continue
        count += 1
        name = (doc.get('metadata') or {}).get('name', '?')
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            problems.append(f'{path}: document {i} ({KIND}/{name}): {path_of(err)}: {err.message}')
    return problems, count


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        validator = load_schema(argv[1])
    except (OSError, ValueError, KeyError, yaml.YAMLError, jsonschema.SchemaError) as e:
        print(f'cannot use the CRD: {e}', file=sys.stderr)
        return 2
    failed = False
    for path in argv[2:]:
        problems, count = check_file(validator, path)
        for p in problems:
            print(p)
        if problems:
            failed = True
        elif count == 0:
            print(f'{path}: no {KIND} document')
            failed = True
        else:
            print(f'ok {path}: {count} {KIND} document(s) match the CRD schema')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
