"""The operator chart's RBAC against what the real operator does: the chart is rendered (cluster-wide and
namespace-scoped), installed into a fresh API emulator that serves every optional API (CloudNativePG, the
Prometheus Operator), a production-like ClawdBot is reconciled, edited, has a referenced Secret rotated and is
deleted (in two namespaces); then every request the operator made (reads and watches included: the emulator logs them all) must be
allowed by the Roles the chart bound to its ServiceAccount."""
import os
import pathlib
import re
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import Emulator, free_port, operator_bin, spawn_emulator
from test_operator_e2e import condition, get_or_none

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'charts'))
from chartlib import OPERATOR_CHART, Grants, render  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRDS = [ROOT / 'crds/clawdbot.io_clawdbots.yaml', *sorted((ROOT / 'tests/operator/crds').glob('*.yaml'))]
RELEASE_NS = 'clawdbot-system'
WATCHED = ['team-a', 'team-b']  # the namespaces of ci/namespaced-values.yaml
PATH = re.compile(r'^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?'
                  r'/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$')
DISCOVERY = re.compile(r'^/(version|api|apis|openapi/.*|apis/[^/]+|apis/[^/]+/[^/]+|api/v1)/?$')
wait_for = Emulator.wait_for


def as_rbac(req):
    """(verb, group, resource, namespace) of one logged request; None for discovery."""
    path = req['path']
    if DISCOVERY.match(path):
        return None
    m = PATH.match(path)
    assert m, f'unexpected request {req["method"]} {path}'
    group, ns, plural, name, sub = m['group'] or '', m['ns'], m['plural'], m['name'], m['sub']
    if not m['group'] and ns and plural in ('status', 'finalize') and not name:  # /namespaces/X/status
        ns, plural, name, sub = None, 'namespaces', ns, plural
    query = urllib.parse.parse_qs(req['query'])
    verb = {'POST': 'create', 'PUT': 'update', 'PATCH': 'patch'}.get(req['method'])
    if req['method'] == 'GET':
        verb = 'get' if name else 'watch' if query.get('watch', [''])[0] in ('1', 'true') else 'list'
    elif req['method'] == 'DELETE':
        verb = 'delete' if name else 'deletecollection'
    return verb, group, f'{plural}/{sub}' if sub else plural, ns


def production_bot(ns):
    docs = [d for d in yaml.safe_load_all((ROOT / 'examples/production.yaml').read_text()) if d]
    for d in docs:
        d['metadata']['namespace'] = ns
        if d['kind'] == 'ClawdBot':  # a named StorageClass: the operator checks that it exists
            d['spec']['database']['managed']['storageClassName'] = 'fast'
    return docs


def reconciled(emulator, path):
    cb = get_or_none(emulator, path)
    return cb and cb.get('status', {}).get('observedGeneration') == cb['metadata']['generation'] \
        and condition(cb, 'Ready') is not None and cb


@pytest.mark.parametrize('mode', ['cluster', 'namespaced'])
def test_every_request_the_operator_makes_is_allowed_by_the_charts_roles(mode, tmp_path):
    args = ['-f', str(OPERATOR_CHART / 'ci/namespaced-values.yaml')] if mode == 'namespaced' else []
    docs = render(OPERATOR_CHART, *args, namespace=RELEASE_NS)
    deployment = next(d for d in docs if d['kind'] == 'Deployment')
    pod = deployment['spec']['template']['spec']
    env = {e['name']: e['value'] for e in pod['containers'][0]['env'] if 'value' in e}
    grants = Grants(docs, RELEASE_NS, pod['serviceAccountName'])
    bot_namespaces = WATCHED if mode == 'namespaced' else ['bots', 'other']

    with spawn_emulator(tmp_path, CRDS) as emulator:
        for ns in [RELEASE_NS, *bot_namespaces]:
            emulator.create({'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': ns}})
        for doc in docs:  # the chart as installed (its CRD is served already)
            if doc['kind'] != 'CustomResourceDefinition':
                emulator.create(doc)
        emulator.create({'apiVersion': 'storage.k8s.io/v1', 'kind': 'StorageClass', 'metadata': {'name': 'fast'},
                         'provisioner': 'example.com/fast'})
        for ns in bot_namespaces:  # the bot's Secrets and the bot, in each namespace
            for doc in production_bot(ns):
                emulator.create(doc)
        emulator.clear_requests()

        log = open(tmp_path / 'operator.log', 'w')
        port = free_port()
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(('KUBE', 'POD_', 'WATCH_'))}
        run_env.update(env, KUBECONFIG=str(emulator.kubeconfig), POD_NAMESPACE=RELEASE_NS, POD_NAME='operator-0')
        proc = subprocess.Popen([operator_bin(), *pod['containers'][0]['args'], '--metrics-addr', f'127.0.0.1:{port}',
                                 '--rediscover-secs', '1'], stdout=log, stderr=subprocess.STDOUT, env=run_env)
        try:
            paths = {ns: f'/apis/clawdbot.io/v1alpha1/namespaces/{ns}/clawdbots/support-bot' for ns in bot_namespaces}
            for ns, path in paths.items():  # every watched namespace is reconciled
                wait_for(lambda: reconciled(emulator, path), timeout=60, message=f'the ClawdBot in {ns}')
                for kind in ('statefulsets/support-bot-redis', 'statefulsets/support-bot-db',
                             'deployments/support-bot'):
                    wait_for(lambda: get_or_none(emulator, f'/apis/apps/v1/namespaces/{ns}/{kind}'),
                             timeout=30, message=f'{kind} in {ns}')
            # An edit, a rotated Secret, then deletion: update, watch-driven and clean-up paths.
            ns, path = next(iter(paths.items()))
            emulator.patch(path, {'spec': {'replicas': 4, 'autoscaling': {'enabled': False}}})
            wait_for(lambda: reconciled(emulator, path), timeout=30, message='the edit to be reconciled')
            emulator.patch(f'/api/v1/namespaces/{ns}/secrets/support-bot-credentials',
                           {'stringData': {'model-api-key': 'rotated'}})
            # The condition series cover every watched namespace.
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as r:
                scraped = r.read().decode()
            for other in bot_namespaces:
                assert f'namespace="{other}"' in scraped, f'no clawdbot_operator_bot_condition for {other}'
            for path in paths.values():
                emulator.delete(path)
                wait_for(lambda: get_or_none(emulator, path) is None, timeout=30, message='the ClawdBot to go')
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            log.close()
        requests = [r for r in emulator.requests() if not r['userAgent'].startswith('Python-urllib')]

    assert requests, 'the operator made no requests'
    denied, seen = set(), set()
    for req in requests:
        need = as_rbac(req)
        if need is None:
            continue
        verb, group, resource, ns = need
        seen.add((verb, group, resource))
        # A request without a namespace on a namespaced resource spans every namespace.
        if not grants.allows(group, resource, verb, ns):
            denied.add(f'{verb} {group or "core"}/{resource}' + (f' in {ns}' if ns else ' (all namespaces)'))
    assert not denied, f'{mode}: the chart does not allow:\n  ' + '\n  '.join(sorted(denied)) \
        + f'\noperator log: {tmp_path / "operator.log"}'
    # The run exercised the operator, not just its start-up.
    for verb, resource in [('watch', 'statefulsets'), ('patch', 'clawdbots/status'), ('create', 'secrets'),
                           ('patch', 'deployments'), ('get', 'storageclasses')]:
        assert any(s[0] == verb and s[2] == resource for s in seen), f'no {verb} on {resource} was seen'
