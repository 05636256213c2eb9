"""What can be checked of the container images without a container engine: the Dockerfile's stages, users,
labels and paths against the binaries, the model files, the operator's rendered pods and the chart; the
entrypoint arguments and the HEALTHCHECK command against the real binaries; the binaries' shared libraries
against the list the base image ships (written in the Dockerfile)."""
import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / 'Dockerfile'
sys.path.insert(0, str(ROOT / 'tests' / 'charts'))
from chartlib import OPERATOR_CHART, render  # noqa: E402


def binary(env, name):
    path = os.environ.get(env) or str(ROOT / 'target' / 'debug' / name)
    if not os.access(path, os.X_OK):
        pytest.fail(f'{name} not found at {path}: set {env}', pytrace=False)
    return path


def stages():
    """{stage name: [(instruction, argument text)]}, read with dockerfile-parse (continuations joined)."""
    out, current = {}, None
    for ins in DockerfileParser(path=str(DOCKERFILE)).structure:
        op, value = ins['instruction'], ins['value'].strip()
        if op == 'FROM':
            m = re.match(r'(\S+)(?:\s+AS\s+(\S+))?', value, re.I)
            current = m[2] or m[1]
            out[current] = [('FROM', m[1])]
        elif current and op != 'COMMENT':
            out[current].append((op, value))
    return out


def final(stage_name):
    """Instructions of a stage including those of the stages it derives from (FROM <stage>)."""
    all_stages = stages()
    chain, name = [], stage_name
    while name in all_stages:
        chain = all_stages[name][1:] + chain
        name = all_stages[name][0][1]
    return chain


def last(instrs, op):
    values = [v for o, v in instrs if o == op]
    assert values, f'no {op}'
    return values[-1]


def exec_form(text):
    return json.loads(text)


IMAGES = {'bot-runtime': 'BOT_RUNTIME_BIN', 'bot-runtime-slim': 'BOT_RUNTIME_BIN', 'operator': 'OPERATOR_BIN'}


@pytest.mark.parametrize('target', IMAGES)
def test_each_image_runs_non_root_without_a_shell_and_is_labelled(target):
    instrs = final(target)
    assert last(instrs, 'USER') == '65532:65532'
    entry = exec_form(last(instrs, 'ENTRYPOINT'))
    assert entry[0].startswith('/usr/local/bin/')  # exec form: no shell needed at run time
    labels = ' '.join(v for o, v in instrs if o == 'LABEL')
    for key in ('title', 'description', 'version', 'source', 'licenses'):
        assert f'org.opencontainers.image.{key}=' in labels, key
    base = stages()[target][0][1]
    while base in stages():
        base = stages()[base][0][1]
    assert base == '${BASE_IMAGE}'
    assert re.search(r'^ARG BASE_IMAGE=gcr\.io/distroless/cc-debian12:nonroot$', DOCKERFILE.read_text(), re.M)


def test_the_chart_runs_the_operator_as_the_images_user():
    pod = next(d for d in render(OPERATOR_CHART) if d['kind'] == 'Deployment')['spec']['template']['spec']
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" \
        == last(final('operator'), 'USER')
    assert pod['containers'][0]['securityContext']['readOnlyRootFilesystem'] is True


def test_entrypoint_and_arguments_are_accepted_by_the_binaries():
    runtime = binary('BOT_RUNTIME_BIN', 'bot-runtime')
    operator = binary('OPERATOR_BIN', 'clawdbot-operator')
    for target, path in (('bot-runtime', runtime), ('operator', operator)):
        cmd = exec_form(last(final(target), 'CMD'))
        proc = subprocess.run([path, *cmd, '--help'], capture_output=True, text=True)
        assert proc.returncode == 0, f'{target}: {cmd} refused: {proc.stderr}'
    # The chart's arguments for the operator container.
    args = next(d for d in render(OPERATOR_CHART) if d['kind'] == 'Deployment')[
        'spec']['template']['spec']['containers'][0]['args']
    proc = subprocess.run([operator, *args, '--help'], capture_output=True, text=True)
    assert proc.returncode == 0, f'{args}: {proc.stderr}'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_the_healthcheck_command_follows_the_servers_readiness(tmp_path):
    runtime = binary('BOT_RUNTIME_BIN', 'bot-runtime')
    health = last(final('bot-runtime'), 'HEALTHCHECK')
    cmd = exec_form(health[health.index('CMD') + 3:].strip())
    assert cmd[0] == exec_form(last(final('bot-runtime'), 'ENTRYPOINT'))[0]
    port = free_port()
    env = {'PATH': os.environ.get('PATH', ''), 'CLAWDBOT_LISTEN': f'127.0.0.1:{port}',
           'CLAWDBOT_SERVER__DATA_DIR': str(tmp_path), 'MODEL_BACKEND': 'none', 'RUST_LOG': 'warn'}
    down = subprocess.run([runtime, *cmd[1:]], env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and 'unhealthy' in down.stderr, down
    server = subprocess.Popen([runtime, 'serve'], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            up = subprocess.run([runtime, *cmd[1:]], env=env, capture_output=True, text=True, timeout=30)
            if up.returncode == 0:
                break
            assert server.poll() is None, 'bot-runtime exited'
            assert time.monotonic() < deadline, up.stderr
            time.sleep(0.2)
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/health/ready', timeout=5) as r:
            assert r.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_paths_the_dockerfile_copies_exist_after_the_build():
    build = ' '.join(v for o, v in stages()['build'] if o == 'RUN')
    meta = json.loads(subprocess.run(['cargo', 'metadata', '--no-deps', '--format-version', '1'], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout)
    bins = {t['name'] for p in meta['packages'] for t in p['targets'] if 'bin' in t['kind']}
    copied = re.findall(r'target/release/(\S+)', build)
    assert copied and set(copied) <= bins, (copied, bins)
    for target, name in (('bot-runtime-slim', 'bot-runtime'), ('operator', 'clawdbot-operator')):
        assert f'/out/bin/{name}' in ' '.join(v for o, v in final(target) if o == 'COPY')
    models = ' '.join(v for o, v in stages()['models'] if o == 'RUN')
    wanted = re.findall(r'models/(\S+\.gguf)', models)
    sums = {line.split()[1].lstrip('*') for line in (ROOT / 'scripts/models/SHA256SUMS').read_text().splitlines()
            if line.strip()}
    assert wanted and set(wanted) <= sums, (wanted, sums)
    for name in wanted:
        assert (ROOT / 'models' / name).is_file(), f'models/{name} missing after scripts/fetch-models.sh'


def test_baked_models_and_data_dir_are_where_the_operator_points_the_runtime(tmp_path):
    operator = binary('OPERATOR_BIN', 'clawdbot-operator')
    runtime = binary('BOT_RUNTIME_BIN', 'bot-runtime')
    instrs = final('bot-runtime')
    workdir = last(instrs, 'WORKDIR')
    baked = [v.split()[-1] for o, v in instrs if o == 'COPY' and '--from=models' in v]
    assert baked == ['/opt/clawdbot/models/']
    schema = json.loads(subprocess.run([runtime, 'config-schema'], capture_output=True, text=True, check=True).stdout)

    def default(*path):
        node = schema
        for key in path:
            node = node['properties'][key]
            if key != path[-1] and '$ref' in node:
                node = schema['$defs'][node['$ref'].rsplit('/', 1)[-1]]
        return node['default']
    model_default = default('model', 'local', 'path')
    embeddings_default = default('knowledge', 'embeddings_path')
    # The operator's rendered config for a ClawdBot with a local model.
    bot = tmp_path / 'bot.yaml'
    bot.write_text(yaml.safe_dump({'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot',
                                   'metadata': {'name': 'x', 'namespace': 'default'},
                                   'spec': {'model': {'backend': 'Local'}}}))
    rendered = subprocess.run([operator, 'render', '-f', str(bot)], capture_output=True, text=True, check=True).stdout
    [cm] = [d for d in yaml.safe_load_all(rendered) if d and d['kind'] == 'ConfigMap']
    cfg = yaml.safe_load(next(iter(cm['data'].values())))
    assert cfg['model']['local']['path'] == f'{workdir}/{model_default}'
    assert cfg['knowledge']['embeddings_path'] == f'{workdir}/{embeddings_default}'
    env = dict(shlex.split(v)[0].split('=', 1) for o, v in instrs if o == 'ENV')
    assert env['CLAWDBOT_SERVER__DATA_DIR'] == cfg['server']['data_dir']
    assert 'MODEL_PATH' not in env  # it would outrank the operator's config (a model on a volume)


def test_shared_libraries_are_ones_the_base_image_ships():
    allowed = set(re.search(r'^# ldd-allow: (.+)$', DOCKERFILE.read_text(), re.M)[1].split())
    for env, name in (('BOT_RUNTIME_BIN', 'bot-runtime'), ('OPERATOR_BIN', 'clawdbot-operator')):
        out = subprocess.run(['ldd', binary(env, name)], capture_output=True, text=True, check=True).stdout
        libs = {pathlib.Path(line.split()[0]).name for line in out.splitlines() if line.strip()}
        assert libs and libs <= allowed, f'{name} links {sorted(libs - allowed)}, which the Dockerfile does not list'
