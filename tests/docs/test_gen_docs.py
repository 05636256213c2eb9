"""scripts/gen-docs.py: the generated pages, and --check failing on a stale or missing page.

Runs with pytest, or alone: python3 tests/docs/test_gen_docs.py. Uses the real CRD and
config/src/env.rs, and a stand-in `bot-runtime` that prints a small schema shaped like
schemars' output ($ref/$defs, Option as anyOf with null, a Secret), so it needs no build.
Set BOT_RUNTIME_BIN to a built binary to also check the committed pages against it.
"""
import json
import os
import pathlib
import stat
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'scripts/gen-docs.py'

SCHEMA = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'RuntimeConfig',
    'description': 'Root of the bot-runtime configuration file.',
    'type': 'object',
    'properties': {
        'server': {'$ref': '#/$defs/ServerConfig', 'description': 'HTTP listener.',
                   'default': {'listen': '0.0.0.0:18789', 'cors_allowed_origins': []}},
        'auth': {'$ref': '#/$defs/AuthConfig', 'description': 'API keys.'},
        'model': {'$ref': '#/$defs/ModelConfig', 'description': 'The model.'},
        # Every key env.rs has an alias for must exist, or the script refuses.
        'database': {'type': 'object', 'properties': {'url': {'anyOf': [{'$ref': '#/$defs/Secret'}, {'type': 'null'}]}}},
        'redis': {'type': 'object', 'properties': {'url': {'anyOf': [{'$ref': '#/$defs/Secret'}, {'type': 'null'}]}}},
        'knowledge': {'type': 'object', 'properties': {'path': {'type': 'string'}}},
    },
    'additionalProperties': False,
    '$defs': {
        'Secret': {'type': 'string', 'writeOnly': True, 'description': 'A credential.'},
        'ServerConfig': {'type': 'object', 'properties': {
            'listen': {'type': 'string', 'description': 'Address and port.', 'default': '0.0.0.0:18789'},
            'metrics_listen': {'type': ['string', 'null']},
            'cors_allowed_origins': {'type': 'array', 'items': {'type': 'string'},
                                     'description': 'Origins | allowed.'},
        }},
        'AuthConfig': {'type': 'object', 'properties': {
            'api_keys': {'type': 'array', 'items': {'$ref': '#/$defs/ApiKey'}, 'default': [],
                         'description': 'Accepted keys.'},
            'max_failures': {'type': 'integer', 'format': 'uint32', 'minimum': 1, 'default': 10},
        }},
        'ApiKey': {'type': 'object', 'required': ['key'], 'properties': {
            'key': {'$ref': '#/$defs/Secret', 'description': 'The bearer token.'},
            'scope': {'$ref': '#/$defs/Scope', 'default': 'user'},
        }},
        'Scope': {'type': 'string', 'enum': ['user', 'admin']},
        'ModelConfig': {'type': 'object', 'properties': {
            'endpoint': {'type': ['string', 'null'], 'default': None, 'description': 'Base URL.'},
            'api_key': {'anyOf': [{'$ref': '#/$defs/Secret'}, {'type': 'null'}], 'default': None},
            'temperature': {'type': ['number', 'null'], 'minimum': 0.0, 'maximum': 2.0},
            'threshold': {'type': 'number', 'format': 'float', 'default': 0.800000011920929},
            'mode': {'oneOf': [{'type': 'string', 'const': 'http', 'description': 'Callback.'},
                               {'type': 'string', 'const': 'stream', 'description': 'Long connection.'}],
                     'default': 'http'},
            'local': {'$ref': '#/$defs/Local', 'default': {'path': 'models/x.gguf'}},
            'name': {'type': 'string', 'default': 'default'},
            'backend': {'anyOf': [{'$ref': '#/$defs/Backend'}, {'type': 'null'}]},
        }},
        'Local': {'type': 'object', 'properties': {'path': {'type': 'string'}}},
        'Backend': {'type': 'string', 'enum': ['auto', 'openai', 'local', 'none']},
    },
}


def fake_binary(tmp, schema):
    data = tmp / 'schema.json'
    data.write_text(json.dumps(schema))
    binary = tmp / 'bot-runtime'
    binary.write_text(f'#!/bin/sh\n[ "$1" = config-schema ] || exit 9\ncat "{data}"\n')
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    return binary


def run(*args, binary):
    env = {k: v for k, v in os.environ.items() if k != 'BOT_RUNTIME_BIN'}
    return subprocess.run([sys.executable, str(SCRIPT), '--bot-runtime', str(binary), *args],
                          capture_output=True, text=True, env=env)


def test_generates_every_key_with_env_names_and_defaults():
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        out = tmp / 'ref'
        r = run('--out-dir', str(out), binary=fake_binary(tmp, SCHEMA))
        assert r.returncode == 0, r.stderr
        cfg = (out / 'configuration.md').read_text()
        assert cfg.startswith('<!-- Generated') and 'make docs' in cfg.splitlines()[0]
        row = next(line for line in cfg.splitlines() if line.startswith('| `server.listen`'))
        assert '`"0.0.0.0:18789"`' in row and '`CLAWDBOT_LISTEN`' in row and '`CLAWDBOT_SERVER__LISTEN`' in row
        row = next(line for line in cfg.splitlines() if line.startswith('| `model.api_key`'))
        assert '(secret)' in row and '`MODEL_API_KEY`' in row and 'unset' in row
        row = next(line for line in cfg.splitlines() if line.startswith('| `auth.api_keys[].key`'))
        assert '**required**' in row and 'CLAWDBOT_' not in row
        assert '| `model.threshold` | number | `0.8` |' in cfg
        assert '`http` \\| `stream`' in cfg and '`auto` \\| `openai`' in cfg
        assert '| `model.local.path` | string | `"models/x.gguf"` |' in cfg
        assert 'Origins \\| allowed.' in cfg
        api = (out / 'clawdbot-api.md').read_text()
        for path in ('spec.replicas', 'spec.paused', 'spec.autoscaling.maxReplicas',
                     'status.conditions[].reason', 'spec.monitoring.alerts.<name>.threshold'):
            assert f'`{path}`' in api, path
        assert run('--check', '--out-dir', str(out), binary=fake_binary(tmp, SCHEMA)).returncode == 0


def test_check_fails_on_a_stale_or_missing_page():
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        out = tmp / 'ref'
        binary = fake_binary(tmp, SCHEMA)
        assert run('--out-dir', str(out), binary=binary).returncode == 0
        page = out / 'clawdbot-api.md'
        page.write_text(page.read_text().replace('| `spec.paused`', '| `spec.pausd`'))
        r = run('--check', '--out-dir', str(out), binary=binary)
        assert r.returncode == 1
        assert 'run make docs' in r.stderr and '+| `spec.paused`' in r.stdout
        assert page.read_text().count('spec.pausd') == 1, '--check must not rewrite'
        page.unlink()
        r = run('--check', '--out-dir', str(out), binary=binary)
        assert r.returncode == 1 and 'clawdbot-api.md is stale' in r.stderr


def test_a_key_added_to_the_schema_needs_no_code_change():
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        out = tmp / 'ref'
        assert run('--out-dir', str(out), binary=fake_binary(tmp, SCHEMA)).returncode == 0
        grown = json.loads(json.dumps(SCHEMA))
        grown['$defs']['ServerConfig']['properties']['new_knob'] = {
            'type': 'integer', 'default': 7, 'description': 'Added later.'}
        binary = fake_binary(tmp, grown)
        r = run('--check', '--out-dir', str(out), binary=binary)
        assert r.returncode == 1 and 'configuration.md is stale' in r.stderr
        assert run('--out-dir', str(out), binary=binary).returncode == 0
        assert ('| `server.new_knob` | integer | `7` | `CLAWDBOT_SERVER__NEW_KNOB` | Added later. |'
                in (out / 'configuration.md').read_text())


def test_committed_pages_are_current():
    """Only with a built binary (BOT_RUNTIME_BIN), as `make docs-check` would run it."""
    binary = os.environ.get('BOT_RUNTIME_BIN')
    if not binary:
        return
    r = subprocess.run([sys.executable, str(SCRIPT), '--check', '--bot-runtime', binary],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


if __name__ == '__main__':
    for name, fn in list(globals().items()):
        if name.startswith('test_'):
            fn()
            print('ok', name)
