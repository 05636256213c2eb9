#!/usr/bin/env python3
"""Writes the generated reference pages under docs/reference/:

  clawdbot-api.md    every field of the ClawdBot CRD (crds/clawdbot.io_clawdbots.yaml)
  configuration.md   every bot-runtime config key, from `bot-runtime config-schema`,
                     with its environment variables (config/src/env.rs)

    python3 scripts/gen-docs.py [--bot-runtime BIN]          # make docs
    python3 scripts/gen-docs.py --check [--bot-runtime BIN]  # exit 1 with a diff when stale

BIN defaults to $BOT_RUNTIME_BIN, else target/debug/bot-runtime. Needs Python 3.11 and PyYAML.
Nothing here lists fields by hand: a field added to the CRD or the config types appears on the
next run. The only fixed list is KUBE_TYPES: well-known Kubernetes types shown as one row with a
link instead of every nested field.
"""
import argparse
import difflib
import json
import os
import pathlib
import re
import struct
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CRD = ROOT / 'crds/clawdbot.io_clawdbots.yaml'
ENV_RS = ROOT / 'config/src/env.rs'
K8S = 'https://kubernetes.io/docs/reference/kubernetes-api'
# Recognised by their property names; anything not here is documented field by field.
KUBE_TYPES = {
    frozenset({'claims', 'limits', 'requests'}):
        ('ResourceRequirements', f'{K8S}/workload-resources/pod-v1/#resources'),
    frozenset({'nodeAffinity', 'podAffinity', 'podAntiAffinity'}):
        ('Affinity', f'{K8S}/workload-resources/pod-v1/#scheduling'),
    frozenset({'effect', 'key', 'operator', 'tolerationSeconds', 'value'}):
        ('Toleration', f'{K8S}/workload-resources/pod-v1/#scheduling'),
}


def header(source):
    return (f'<!-- Generated from {source} by scripts/gen-docs.py. Do not edit by hand: '
            'change the source, then run `make docs`. -->\n')


def text(desc, cell=True):
    """A description on one line (paragraphs kept apart); pipes escaped for a table cell."""
    paras = [' '.join(p.split()) for p in re.split(r'\n\s*\n', (desc or '').strip())]
    joined = '<br><br>'.join(p for p in paras if p) if cell else '\n\n'.join(paras)
    return joined.replace('|', '\\|') if cell else joined


def fmt_num(v, bound=False):
    """Numbers as written by hand: bounds without `.0`, f32 defaults without widening noise."""
    if isinstance(v, float) and v.is_integer() and bound:
        return str(int(v))
    if isinstance(v, float):
        for digits in range(17):
            r = round(v, digits)
            if r == v or struct.pack('f', r) == struct.pack('f', v):
                return repr(r)
    return json.dumps(v)


def value(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        s = fmt_num(v)
    else:
        s = json.dumps(v, ensure_ascii=False, separators=(', ', ': '))
    return f'`{s}`'.replace('|', '\\|')


def code_list(items, sep=' \\| '):
    return sep.join(f'`{i}`' for i in items)


def constraints(node):
    out = []
    if 'enum' in node:
        out.append('one of ' + code_list(v for v in node['enum'] if v is not None))
    for key, word in (('minimum', '≥'), ('maximum', '≤'), ('exclusiveMinimum', '>'),
                      ('exclusiveMaximum', '<'), ('minLength', 'length ≥'), ('maxLength', 'length ≤'),
                      ('minItems', 'items ≥'), ('maxItems', 'items ≤')):
        if key in node:
            out.append(f'{word} {fmt_num(node[key], bound=True)}')
    if 'pattern' in node:
        out.append(f'pattern `{node["pattern"]}`'.replace('|', '\\|'))
    return out


# ---------------------------------------------------------------- ClawdBot CRD

def crd_type(node):
    if node.get('x-kubernetes-int-or-string'):
        return 'int or string'
    kind = node.get('type', 'object')
    if kind == 'array':
        return '[]' + crd_type(node.get('items', {}))
    if kind == 'object' and isinstance(node.get('additionalProperties'), dict):
        return 'map[string]' + crd_type(node['additionalProperties'])
    return f'{kind} ({node["format"]})' if 'format' in node else kind


def crd_rows(node, path, required, rows, rules):
    """Appends (path, node, required) for this node and every field below it."""
    rows.append((path, node, required))
    for rule in node.get('x-kubernetes-validations', []):
        rules.append((path, rule))
    inner = node
    while inner.get('type') == 'array' and 'items' in inner:
        inner, path = inner['items'], path + '[]'
    if isinstance(inner.get('additionalProperties'), dict):
        inner, path = inner['additionalProperties'], path + '.<name>'
    if inner is not node:
        rules += [(path, rule) for rule in inner.get('x-kubernetes-validations', [])]
    props = inner.get('properties', {})
    if frozenset(props) in KUBE_TYPES:
        return
    for name, child in props.items():
        crd_rows(child, f'{path}.{name}', name in inner.get('required', []), rows, rules)


def crd_table(rows, linked=()):
    out = ['| Field | Type | Required | Default | Validation | Description |',
           '|---|---|---|---|---|---|']
    for path, node, required in rows:
        kind = crd_type(node)
        desc = text(node.get('description'))
        kube = KUBE_TYPES.get(frozenset(node.get('items', node).get('properties', {})))
        if kube:
            kind = f'[{kube[0]}]({kube[1]})' + ('[]' if node.get('type') == 'array' else '')
        extra = constraints(node)
        default = value(node['default']) if 'default' in node else ''
        name = f'[`{path}`](#{path.replace(".", "").lower()})' if path in linked else f'`{path}`'
        out.append(f'| {name} | {kind} | {"yes" if required else ""} | {default} | '
                   f'{"; ".join(extra)} | {desc} |')
    return out


def gen_crd(crd):
    names = crd['spec']['names']
    lines = [header('crds/clawdbot.io_clawdbots.yaml'),
             '# ClawdBot API reference', '']
    for version in crd['spec']['versions']:
        schema = version['schema']['openAPIV3Schema']
        lines += [f'`{crd["spec"]["group"]}/{version["name"]}`, kind `{names["kind"]}` '
                  f'(plural `{names["plural"]}`, short names {code_list(names.get("shortNames", []), ", ")}), '
                  f'{crd["spec"]["scope"]}. {text(schema.get("description"), cell=False)}', '',
                  'Dotted paths: `[]` is an item of a list, `<name>` a key of a map. "Default" is '
                  'what the API server fills in; other defaults are in the descriptions. '
                  'Kubernetes types link to their own reference. How the operator uses these '
                  'fields: [operator.md](../operator.md).', '']
        scale = version.get('subresources', {}).get('scale')
        if scale:
            s = scale
            lines += [f'Scale subresource: `{s["specReplicasPath"]}`, `{s["statusReplicasPath"]}`, '
                      f'selector `{s.get("labelSelectorPath", "")}`.', '']
        for top in ('spec', 'status'):
            node = schema['properties'].get(top)
            if not node:
                continue
            rows, sections = [], []
            for name, child in node.get('properties', {}).items():
                sub, rules = [], []
                crd_rows(child, f'{top}.{name}', name in node.get('required', []), sub, rules)
                rows.append(sub[0])
                if len(sub) > 1:
                    sections.append((name, sub, rules))
            lines += [f'## `{top}`', '', text(node.get('description'), cell=False), '']
            lines += crd_table(rows, {f'{top}.{name}' for name, _, _ in sections}) + ['']
            for rule in node.get('x-kubernetes-validations', []):
                lines += [f'Rule on `{top}`: {rule["message"]}: `{rule["rule"]}`', '']
            for name, sub, rules in sections:
                lines += [f'### `{top}.{name}`', ''] + crd_table(sub) + ['']
                lines += [f'- Rule on `{path}`: {rule["message"]}: `{rule["rule"]}`' for path, rule in rules]
                lines += [''] if rules else []
    return '\n'.join(lines).rstrip() + '\n'


# ------------------------------------------------------- bot-runtime configuration

def env_rules(source):
    """(prefix, {dotted key: [alias names]}) read from config/src/env.rs."""
    prefix = re.search(r'const PREFIX: &str = "([^"]+)";', source)
    block = re.search(r'ENV_ALIASES[^=]*=\s*&\[(.*?)\];', source, re.S)
    if not prefix or not block:
        sys.exit(f'{ENV_RS}: PREFIX or ENV_ALIASES not found; update scripts/gen-docs.py')
    aliases = {}
    for name, key in re.findall(r'\(\s*"([A-Z0-9_]+)"\s*,\s*"([a-z0-9_.]+)"\s*\)', block.group(1)):
        aliases.setdefault(key, []).append(name)
    return prefix.group(1), aliases


def resolve(root, node):
    """Follows $ref and unwraps Option (anyOf/oneOf with null); (node, optional, secret)."""
    optional = secret = False
    for _ in range(32):
        secret |= bool(node.get('writeOnly'))
        if '$ref' in node:
            target = root.get('$defs', {}).get(node['$ref'].rsplit('/', 1)[-1], {})
            node = {**target, **{k: v for k, v in node.items() if k != '$ref'}}
            continue
        alts = node.get('anyOf') or node.get('oneOf')
        if alts:
            real = [a for a in alts if a.get('type') != 'null']
            optional |= len(real) < len(alts)
            if len(real) == 1:
                rest = {k: v for k, v in node.items() if k not in ('anyOf', 'oneOf')}
                node = {**real[0], **rest}
                continue
        break
    return node, optional, secret


def enum_values(root, node):
    alts = node.get('anyOf') or node.get('oneOf')
    if 'enum' in node:
        return [v for v in node['enum'] if v is not None]
    if alts:
        vals = []
        for a in alts:
            a, _, _ = resolve(root, a)
            if 'const' in a:
                vals.append(a['const'])
            elif 'enum' in a:
                vals += [v for v in a['enum'] if v is not None]
            elif a.get('type') != 'null':
                return None
        return vals
    return None


def cfg_type(root, node, secret):
    vals = enum_values(root, node)
    if vals:
        return code_list(vals)
    kinds = node.get('type', 'object')
    kinds = [k for k in (kinds if isinstance(kinds, list) else [kinds]) if k != 'null']
    kind = ' or '.join(kinds) or 'any'
    if kind == 'array':
        item, _, item_secret = resolve(root, node.get('items', {}))
        kind = 'list of ' + cfg_type(root, item, item_secret)
    if secret:
        kind += ' (secret)'
    extra = [c for c in constraints(node) if not c.startswith('one of')]
    return kind + (f' ({", ".join(extra)})' if extra else '')


def cfg_rows(root, node, path, inherited, required, rows):
    """Walks the schema: one row per key, objects and list items descended into."""
    node, optional, secret = resolve(root, node)
    default = node['default'] if 'default' in node else inherited
    rows.append((path, node, default, optional or not required, secret))
    item = node.get('items', {}) if node.get('type') == 'array' else {}
    inner, base = (resolve(root, item)[0], path[:-1] + [path[-1] + '[]']) if item else (node, path)
    for name, child in inner.get('properties', {}).items():
        sub = default.get(name, ...) if isinstance(default, dict) and inner is node else ...
        cfg_rows(root, child, base + [name], sub, name in inner.get('required', []), rows)


def gen_config(schema, env_source):
    prefix, aliases = env_rules(env_source)
    rows = []
    cfg_rows(schema, schema, [], ..., True, rows)
    rows = rows[1:]
    lines = [header('`bot-runtime config-schema` and config/src/env.rs'),
             '# bot-runtime configuration reference', '',
             text(schema.get('description')) + ' One YAML file (`--config FILE`, env `CLAWDBOT_CONFIG`); '
             'every key is optional, unknown keys are an error. Check a file and the environment with '
             '`bot-runtime check-config --config FILE`. An annotated example: '
             '[examples/config.example.yaml](../../examples/config.example.yaml).', '',
             '## Environment variables', '',
             f'Every key can be set as `{prefix}<PATH>`, the dotted path in upper case with `__` '
             f'between levels (`model.max_tokens` is `{prefix}MODEL__MAX_TOKENS`). Values are typed by '
             'this schema: numbers and booleans (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`) are '
             'parsed, strings stay strings (a numeric API key stays text), a list of strings takes '
             'comma-separated values, other lists and objects take JSON. The environment wins over the '
             'file; where a key also has an alias below, the alias wins over the generic name. An alias '
             'set to the empty string counts as unset (Compose passes one for `${MODEL_ENDPOINT:-}`): an '
             'empty `MODEL_ENDPOINT` leaves the model to `model.backend` `auto`. '
             f'`{prefix}SERVICE_*` and `{prefix}PORT*` are ignored (Kubernetes service links). '
             '`RUST_LOG` overrides `logging.level`.', '',
             '| Alias | Key |', '|---|---|']
    lines += [f'| `{name}` | `{key}` |' for key, names in aliases.items() for name in names]
    lines += ['', '## Secrets', '',
              'Keys marked *(secret)* hold credentials. They are masked (`***`) in every log line and '
              'config dump. Set them from the environment (on Kubernetes from a Secret, through '
              '`secretKeyRef` or `envFrom`) rather than in the file; the encryption keyring can also '
              'come from a file (`encryption.key_file`). See [security.md](../security.md).']
    known = {'.'.join(r[0]) for r in rows}
    missing = sorted(k for k in aliases if k not in known)
    if missing:
        sys.exit(f'{ENV_RS}: aliases for keys the schema lacks: {", ".join(missing)}')
    for path, node, default, optional, secret in rows:
        key = '.'.join(path)
        is_object = 'properties' in node
        if len(path) == 1:
            lines += ['', f'## `{key}`', '', text(node.get('description'), cell=False), '',
                      '| Key | Type | Default | Environment | Description |', '|---|---|---|---|---|']
            if is_object:
                continue
        kind = 'object' if is_object else cfg_type(schema, node, secret)
        if not optional:
            shown = '**required**'
        elif is_object:
            shown = ''
        else:
            shown = 'unset' if default in (None, ...) else value(default)
        settable = '[]' not in key and not is_object
        env = aliases.get(key, []) + [prefix + '__'.join(path).upper()] if settable else []
        if env and re.match(rf'{prefix}(SERVICE_|PORT($|_))', env[-1]):
            env[-1] += ' (ignored: looks like a service link)'
        lines.append(f'| `{key}` | {kind} | {shown} | {"<br>".join(f"`{e}`" for e in env)} | '
                     f'{text(node.get("description"))} |')
    return '\n'.join(lines).rstrip() + '\n'


# ---------------------------------------------------------------------- driver

def config_schema(binary):
    if not binary or not pathlib.Path(binary).is_file():
        print(f'bot-runtime binary not found ({binary or "unset"}): build it (make build) '
              'and pass --bot-runtime or BOT_RUNTIME_BIN', file=sys.stderr)
        sys.exit(2)
    out = subprocess.run([binary, 'config-schema'], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv=None):
    target = pathlib.Path(os.environ.get('CARGO_TARGET_DIR') or ROOT / 'target')
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--check', action='store_true', help='fail when a generated file is stale')
    ap.add_argument('--bot-runtime', default=os.environ.get('BOT_RUNTIME_BIN')
                    or str(target / 'debug/bot-runtime'))
    ap.add_argument('--out-dir', type=pathlib.Path, default=ROOT / 'docs/reference')
    args = ap.parse_args(argv)
    pages = {
        'clawdbot-api.md': gen_crd(yaml.safe_load(CRD.read_text(encoding='utf-8'))),
        'configuration.md': gen_config(config_schema(args.bot_runtime),
                                       ENV_RS.read_text(encoding='utf-8')),
    }
    stale = 0
    for name, new in pages.items():
        path = args.out_dir / name
        old = path.read_text(encoding='utf-8') if path.exists() else ''
        if old == new:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), f'{path} (committed)', f'{path} (generated)'))
            print(f'{path} is stale: run make docs and commit it', file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new, encoding='utf-8')
            print(f'wrote {path}')
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
