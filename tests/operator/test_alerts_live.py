"""ClawdBotHighLatency on live series, end to end: a real Prometheus (Debian's, which
`make test` installs) scrapes a real bot-runtime's metrics port and evaluates the rules
`clawdbot-operator render` produces for a ClawdBot (with short `for` and rate window
overrides, so it runs in about a minute). The mock model upstream is made slow, so the
time to first token climbs past 0.5 s and the alert fires; made fast again, the alert
resolves. Nothing else fires on the way."""
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import Emulator
from test_managed_contract import binary

sys.path.append(str(Path(__file__).resolve().parents[1]))
import pyharness as ph  # noqa: E402

wait_for = Emulator.wait_for
PROMETHEUS = '/usr/bin/prometheus'
API_KEY = 'live-alerts-key'
BOT = {
    'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot',
    'metadata': {'name': 'hello', 'namespace': 'prod'},
    'spec': {'monitoring': {'enabled': True, 'alerts': {
        'ClawdBotHighLatency': {'for': '5s', 'window': '15s'},
    }}},
}


def fail(message):
    pytest.fail(message, pytrace=False)


def http(method, url, body=None, headers=None, timeout=30):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rendered_rules(tmp):
    """The rule groups of the PrometheusRule the operator renders for BOT."""
    (tmp / 'bot.yaml').write_text(yaml.safe_dump(BOT), encoding='utf-8')
    out = subprocess.run([binary('OPERATOR_BIN', 'clawdbot-operator'), 'render', '-f', str(tmp / 'bot.yaml')],
                         capture_output=True, text=True, check=True).stdout
    rule = next(d for d in yaml.safe_load_all(out) if d and d['kind'] == 'PrometheusRule')
    return {'groups': rule['spec']['groups']}


@pytest.fixture
def stack(tmp_path):
    if not Path(PROMETHEUS).exists():
        fail(f'{PROMETHEUS} is missing: run scripts/install-test-tools.sh (make test does)')
    services = []
    mock, mock_addr = ph.start_mock_upstream(binary('MOCK_UPSTREAM_BIN', 'mock-upstream'),
                                             ['--reply', 'one two', '--model', 'mock-model'], tmp_path, fail)
    services.append(mock)
    try:
        port, metrics_port, prom_port = ph.free_port(), ph.free_port(), ph.free_port()
        env = ph.runtime_env()
        env.update(MODEL_ENDPOINT=f'http://{mock_addr}/v1', MODEL_NAME='mock-model', MODEL_API_KEY='k',
                   CLAWDBOT_LISTEN=f'127.0.0.1:{port}', CLAWDBOT_METRICS_LISTEN=f'127.0.0.1:{metrics_port}',
                   CLAWDBOT_API_KEYS=f'{API_KEY}:user')
        runtime = ph.start_until_ready('bot-runtime', [binary('BOT_RUNTIME_BIN', 'bot-runtime')], tmp_path,
                                       port, env, fail)
        services.append(runtime)
        (tmp_path / 'rules.yaml').write_text(yaml.safe_dump(rendered_rules(tmp_path)), encoding='utf-8')
        # The labels a ServiceMonitor target gets, which the rules select on.
        config = {
            'global': {'scrape_interval': '1s', 'evaluation_interval': '1s'},
            'rule_files': ['rules.yaml'],
            'scrape_configs': [{'job_name': 'hello', 'static_configs': [
                {'targets': [f'127.0.0.1:{metrics_port}'], 'labels': {'namespace': 'prod', 'service': 'hello'}}]}],
        }
        (tmp_path / 'prometheus.yml').write_text(yaml.safe_dump(config), encoding='utf-8')
        log = tmp_path / 'prometheus.log'
        with log.open('wb') as logf:
            prom = subprocess.Popen([PROMETHEUS, '--config.file=prometheus.yml', '--storage.tsdb.path=data',
                                     f'--web.listen-address=127.0.0.1:{prom_port}'],
                                    cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        services.append(ph.Service('prometheus', prom, log))
        base = f'http://127.0.0.1:{prom_port}'

        def ready():
            if prom.poll() is not None:
                fail(f'prometheus exited ({prom.returncode}):\n{ph.tail(log)}')
            try:
                return http('GET', f'{base}/-/ready', timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(ready, timeout=30, interval=0.2, message='prometheus ready')
        yield {'runtime': f'http://127.0.0.1:{port}', 'mock': f'http://{mock_addr}', 'prometheus': base,
               'logs': tmp_path}
    finally:
        for s in reversed(services):
            ph.stop(s.proc)


def alerts(base):
    status, body = http('GET', f'{base}/api/v1/alerts')
    assert status == 200, body
    return json.loads(body)['data']['alerts']


def test_high_latency_fires_on_a_slow_model_and_resolves(stack):
    prom = stack['prometheus']
    # The runtime is scraped, and the rules are loaded.
    wait_for(lambda: any(t['health'] == 'up' for t in json.loads(
        http('GET', f'{prom}/api/v1/targets')[1])['data']['activeTargets']), timeout=20, message='target up')
    groups = json.loads(http('GET', f'{prom}/api/v1/rules')[1])['data']['groups']
    assert len(groups) == 1 and len(groups[0]['rules']) == 8, groups

    assert http('PUT', f"{stack['mock']}/mock/chunk-delay-ms", b'1000')[0] == 200
    stop = threading.Event()
    errors = []

    def chat():
        body = {'model': 'mock-model', 'stream': True, 'messages': [{'role': 'user', 'content': 'hi'}]}
        while not stop.is_set():
            status, out = http('POST', f"{stack['runtime']}/v1/chat/completions", body,
                               {'authorization': f'Bearer {API_KEY}', 'content-type': 'application/json'})
            if status != 200:
                errors.append((status, out[:200]))
            time.sleep(0.5)  # 4 clients at most 8 requests/s: under the default rate limit
    workers = [threading.Thread(target=chat, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    seen = set()

    def state():
        now = alerts(prom)
        seen.update(a['labels']['alertname'] for a in now)
        return [a for a in now if a['labels']['alertname'] == 'ClawdBotHighLatency']
    try:
        fired = wait_for(lambda: [a for a in state() if a['state'] == 'firing'], timeout=90, interval=1,
                         message='ClawdBotHighLatency firing with a 1 s time to first token')
        a = fired[0]
        assert a['labels']['clawdbot'] == 'hello' and a['labels']['severity'] == 'warning', a
        assert a['annotations']['runbook_url'].endswith('/ClawdBotHighLatency.md'), a
        assert 'above the threshold' in a['annotations']['description'], a

        # Fast again: once the slow answers leave the 15 s window, it resolves.
        assert http('PUT', f"{stack['mock']}/mock/chunk-delay-ms", b'0')[0] == 200
        wait_for(lambda: not state(), timeout=90, interval=1, message='ClawdBotHighLatency resolved')
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
    assert not errors, errors[:3]
    assert seen == {'ClawdBotHighLatency'}, f'other alerts fired: {seen}'
