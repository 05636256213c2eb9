"""The GitOps examples (examples/gitops): the ClawdBot health check Argo CD
runs (Lua 5.1) against ClawdBots in each state the operator reports, and the
Argo CD and Flux manifests against each other, the chart and the CRD.

    pytest -q tests/gitops        # needs /usr/bin/lua5.1, PyYAML, jsonschema
"""
import copy
import pathlib
import subprocess
import sys

import pytest
import yaml

from lua51 import echo, health, literal

ROOT = pathlib.Path(__file__).resolve().parents[2]
GITOPS = ROOT / 'examples' / 'gitops'
ARGOCD = GITOPS / 'argocd'
FLUX = GITOPS / 'flux'
BOTS = GITOPS / 'bots'
CHART = 'charts/clawdbot-operator'
CRD = ROOT / 'crds' / 'clawdbot.io_clawdbots.yaml'
CHECK_CRD_SCHEMA = ROOT / 'tests' / 'operator' / 'check_crd_schema.py'
HEALTH_KEY = 'resource.customizations.health.clawdbot.io_ClawdBot'
APP_HEALTH_KEY = 'resource.customizations.health.argoproj.io_Application'

# The kinds each file may hold, with the apiVersion their projects document.
DOCUMENTED = {
    ('argoproj.io/v1alpha1', 'Application'),
    ('v1', 'ConfigMap'),
    ('source.toolkit.fluxcd.io/v1', 'GitRepository'),
    ('helm.toolkit.fluxcd.io/v2', 'HelmRelease'),
    ('kustomize.toolkit.fluxcd.io/v1', 'Kustomization'),
    ('clawdbot.io/v1alpha1', 'ClawdBot'),
}


def docs(path):
    with open(path, encoding='utf-8') as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def one(path, kind, name=None):
    found = [d for d in docs(path) if d['kind'] == kind and (name is None or d['metadata']['name'] == name)]
    assert len(found) == 1, f'{path}: want one {kind} {name or ""}, found {len(found)}'
    return found[0]


def health_lua():
    return (ARGOCD / 'clawdbot-health.lua').read_text(encoding='utf-8')


def argocd_cm():
    return one(ARGOCD / 'argocd-cm-health.yaml', 'ConfigMap', 'argocd-cm')


# --- ClawdBots as the operator writes them (operator/src/status.rs) ---------

def condition(type_, status, reason, message, generation):
    return {
        'type': type_, 'status': status, 'reason': reason, 'message': message,
        'observedGeneration': generation, 'lastTransitionTime': '2026-01-01T00:00:00Z',
    }


def bot(generation=3, observed=3, conditions=None, status=True):
    """A ClawdBot at metadata.generation `generation` whose status describes
    `observed`; `conditions` are (type, status, reason, message) stamped with
    `observed`."""
    obj = {
        'apiVersion': 'clawdbot.io/v1alpha1',
        'kind': 'ClawdBot',
        'metadata': {'name': 'support-bot', 'namespace': 'bots', 'generation': generation},
        'spec': {'replicas': 2, 'model': {'name': 'gpt-4o-mini'}},
    }
    if status:
        obj['status'] = {
            'observedGeneration': observed,
            'conditions': [condition(*c, observed) for c in conditions or []],
            'replicas': 2,
            'endpoint': 'http://support-bot.bots.svc:18789',
        }
    return obj


READY = ('Ready', 'True', 'Available', '2/2 pods ready; every component ready')
NOT_DEGRADED = ('Degraded', 'False', 'AsExpected', 'all children applied')
NOT_PAUSED = ('Paused', 'False', 'Reconciling', 'the operator reconciles this bot')
ROLLED_OUT = ('Progressing', 'False', 'RolloutComplete', '2/2 pods updated and available')
SHARED = ('StateShared', 'True', 'Shared', 'chat sessions are in Redis and conversation logs in the database')
HEALTHY = [READY, ROLLED_OUT, NOT_DEGRADED, NOT_PAUSED, SHARED]


class TestClawdBotHealth:
    def check(self, obj):
        return health(health_lua(), obj)

    def test_no_status_yet(self):
        hs = self.check(bot(generation=1, status=False))
        assert hs == {'status': 'Progressing', 'message': 'waiting for the operator to observe generation 1'}

    def test_status_without_observed_generation(self):
        obj = bot(conditions=HEALTHY)
        del obj['status']['observedGeneration']
        assert self.check(obj)['status'] == 'Progressing'

    def test_stale_generation(self):
        # A Healthy status for generation 3 says nothing about generation 4.
        hs = self.check(bot(generation=4, observed=3, conditions=HEALTHY))
        assert hs == {'status': 'Progressing', 'message': 'waiting for the operator to observe generation 4'}

    def test_stale_ready_condition(self):
        obj = bot(generation=4, observed=4, conditions=HEALTHY)
        ready = next(c for c in obj['status']['conditions'] if c['type'] == 'Ready')
        ready['observedGeneration'] = 3
        hs = self.check(obj)
        assert hs['status'] == 'Progressing'
        assert 'generation 4' in hs['message']

    def test_rolling_out(self):
        hs = self.check(bot(conditions=[
            ('Ready', 'False', 'NotAvailable', 'waiting for RuntimeReady, RedisReady; 1/2 bot-runtime pods ready'),
            ('Progressing', 'True', 'RollingOut', '1/2 pods updated, 1 available'),
            NOT_DEGRADED, NOT_PAUSED,
            ('RuntimeReady', 'False', 'RollingOut', 'bot-runtime: 1/2 pods updated, 1 available'),
            ('RedisReady', 'False', 'StatefulSetNotReady', 'Redis support-bot-redis: its pod is not ready yet'),
        ]))
        assert hs['status'] == 'Progressing'
        assert 'waiting for RuntimeReady, RedisReady; 1/2 bot-runtime pods ready' in hs['message']
        assert 'NotAvailable' in hs['message']

    def test_ready(self):
        hs = self.check(bot(conditions=HEALTHY))
        assert hs == {'status': 'Healthy', 'message': 'Available: 2/2 pods ready; every component ready'}

    def test_degraded(self):
        message = 'referenced Secret(s) not found: support-bot-model'
        hs = self.check(bot(conditions=[
            ('Ready', 'False', 'Degraded', 'see the Degraded condition'),
            ('Progressing', 'True', 'Creating', 'the Deployment does not exist yet'),
            ('Degraded', 'True', 'SecretNotFound', message),
            NOT_PAUSED,
        ]))
        assert hs['status'] == 'Degraded'
        assert message in hs['message']
        assert 'SecretNotFound' in hs['message']

    def test_degraded_message_survives_quotes_newlines_and_unicode(self):
        message = 'spec.model.endpoint: "ftp://x" is not http(s)\nC:\\path \u2014 \u7f51\u5173\u8d85\u65f6 \U0001f916'
        hs = self.check(bot(conditions=[('Degraded', 'True', 'InvalidSpec', message)]))
        assert hs == {'status': 'Degraded', 'message': 'InvalidSpec: ' + message}

    def test_degraded_wins_over_ready(self):
        conflict = ('Degraded', 'True', 'NameConflict', 'Service support-bot is owned by someone else')
        hs = self.check(bot(conditions=[READY, conflict]))
        assert hs == {'status': 'Degraded', 'message': 'NameConflict: Service support-bot is owned by someone else'}

    def test_paused(self):
        message = 'spec.paused is true: the operator makes no changes'
        hs = self.check(bot(conditions=[READY, ROLLED_OUT, NOT_DEGRADED, ('Paused', 'True', 'Paused', message)]))
        assert hs == {'status': 'Suspended', 'message': 'Paused: ' + message}

    def test_ready_unknown(self):
        hs = self.check(bot(conditions=[('Ready', 'Unknown', 'Checking', 'asking bot-runtime'), NOT_DEGRADED]))
        assert hs['status'] == 'Progressing'
        assert 'asking bot-runtime' in hs['message']

    @pytest.mark.parametrize('conditions', [[], [('Stalled', 'True', 'Whatever', 'not ours')]])
    def test_no_ready_condition(self, conditions):
        hs = self.check(bot(conditions=conditions))
        assert hs == {'status': 'Progressing', 'message': 'waiting for the Ready condition'}

    def test_unknown_condition_types_are_ignored(self):
        hs = self.check(bot(conditions=HEALTHY + [
            ('Stalled', 'True', 'SomethingElse', 'a condition this check does not know'),
            ('MonitoringReady', 'False', 'PrometheusOperatorMissing', 'monitoring.coreos.com/v1 is not served'),
            ('FutureCondition', 'True', 'New', 'added by a later operator'),
        ]))
        assert hs['status'] == 'Healthy'

    def test_stale_condition_the_check_does_not_read_is_ignored(self):
        # MonitoringReady is left as it was when monitoring is not looked at.
        obj = bot(generation=5, observed=5, conditions=HEALTHY + [('MonitoringReady', 'True', 'Applied', 'applied')])
        obj['status']['conditions'][-1]['observedGeneration'] = 2
        assert self.check(obj)['status'] == 'Healthy'

    def test_condition_without_reason_or_message(self):
        obj = bot(conditions=[('Degraded', 'True', 'ApplyFailed', 'x')])
        cond = obj['status']['conditions'][0]
        del cond['message']
        assert self.check(obj) == {'status': 'Degraded', 'message': 'ApplyFailed'}
        del cond['reason']
        assert self.check(obj) == {'status': 'Degraded', 'message': ''}


class TestHarness:
    """The harness must be able to fail, or the tests above prove nothing."""

    def test_a_wrong_expectation_fails(self):
        with pytest.raises(AssertionError):
            assert health(health_lua(), bot(conditions=HEALTHY))['status'] == 'Degraded'

    def test_a_changed_rule_is_caught(self):
        mutated = health_lua().replace('hs.status = "Degraded"', 'hs.status = "Healthy"', 1)
        assert mutated != health_lua()
        obj = bot(conditions=[('Degraded', 'True', 'SecretNotFound', 'missing')])
        assert health(mutated, obj)['status'] == 'Healthy'
        assert health(health_lua(), obj)['status'] == 'Degraded'

    def test_string_library_is_unavailable_as_in_argocd(self):
        for script in ('return { status = string.upper("healthy") }',
                       'local s = "Healthy"; return { status = s:sub(1) }'):
            with pytest.raises(AssertionError, match='lua failed'):
                health(script, bot())

    def test_lua_5_2_syntax_is_rejected(self):
        with pytest.raises(AssertionError, match='lua failed'):
            health('goto done\n::done::\nreturn { status = "Healthy" }', bot())

    @pytest.mark.parametrize('value', [
        'plain', '', 'quote " and \'', 'back\\slash', 'new\nline\r\ttab', 'nul\0byte', 'bell\x07 del\x7f',
        '\u00e9\u4e2d\U0001f916', 'digit after escape: \n123', ']] long-bracket end',
    ])
    def test_quote_round_trips(self, value):
        assert echo(value) == value.encode('utf-8')

    def test_literal(self):
        assert literal({'a': [1, 2.5, True], 'b': None, 'c': {}}) == '{["a"] = {1, 2.5, true}, ["c"] = {}}'
        with pytest.raises(ValueError):
            literal([1, None])
        with pytest.raises(ValueError):
            literal(float('nan'))


class TestArgoCDConfigMap:
    def test_embedded_lua_is_clawdbot_health_lua(self):
        assert argocd_cm()['data'][HEALTH_KEY] == health_lua(), \
            'copy clawdbot-health.lua into argocd-cm-health.yaml, indented by four spaces'

    def test_is_the_argocd_cm_configmap(self):
        cm = argocd_cm()
        assert (cm['metadata']['name'], cm['metadata']['namespace']) == ('argocd-cm', 'argocd')
        assert all(k.startswith('resource.customizations.health.') for k in cm['data'])

    @pytest.mark.parametrize('status,expected', [
        (None, 'Progressing'),
        ({'sync': {'status': 'Synced'}}, 'Progressing'),
        ({'health': {'status': 'Healthy'}}, 'Healthy'),
        ({'health': {'status': 'Degraded', 'message': 'one bot is degraded'}}, 'Degraded'),
    ])
    def test_application_health(self, status, expected):
        app = {'apiVersion': 'argoproj.io/v1alpha1', 'kind': 'Application',
               'metadata': {'name': 'clawdbot-operator', 'namespace': 'argocd', 'generation': 1}}
        if status is not None:
            app['status'] = status
        hs = health(argocd_cm()['data'][APP_HEALTH_KEY], app)
        assert hs['status'] == expected
        if expected == 'Degraded':
            assert hs['message'] == 'one bot is degraded'


# --- The manifests ----------------------------------------------------------

def all_yaml():
    return sorted(p for p in GITOPS.rglob('*') if p.suffix in ('.yaml', '.yml'))


def test_there_are_examples():
    names = {p.relative_to(GITOPS).as_posix() for p in all_yaml()}
    assert {'argocd/operator-application.yaml', 'argocd/bots-application.yaml', 'argocd/argocd-cm-health.yaml',
            'flux/gitrepository.yaml', 'flux/kustomization.yaml', 'flux/operator/helmrelease.yaml'} <= names
    assert any(n.startswith('bots/') for n in names)


@pytest.mark.parametrize('path', all_yaml(), ids=lambda p: p.relative_to(GITOPS).as_posix())
def test_yaml_parses_with_documented_kinds(path):
    found = docs(path)
    assert found, f'{path}: no document'
    for d in found:
        assert (d.get('apiVersion'), d.get('kind')) in DOCUMENTED, (path, d.get('apiVersion'), d.get('kind'))
        assert d['metadata']['name'] and d['metadata']['namespace']


def bots():
    return [d for p in sorted(BOTS.glob('*.yaml')) for d in docs(p)]


def test_bots_are_clawdbots_without_secrets():
    found = bots()
    assert found and all(d['kind'] == 'ClawdBot' for d in found), 'bots/ holds ClawdBots only (no Secret values in Git)'


def test_bots_match_the_crd_schema():
    files = [str(p) for p in sorted(BOTS.glob('*.yaml'))]
    p = subprocess.run([sys.executable, str(CHECK_CRD_SCHEMA), str(CRD), *files],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_schema_check_can_fail(tmp_path):
    broken = copy.deepcopy(bots()[0])
    broken['spec']['replicaz'] = 2
    path = tmp_path / 'broken.yaml'
    path.write_text(yaml.safe_dump(broken), encoding='utf-8')
    p = subprocess.run([sys.executable, str(CHECK_CRD_SCHEMA), str(CRD), str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and 'replicaz' in p.stdout


# --- Argo CD ---------------------------------------------------------------

def operator_app():
    return one(ARGOCD / 'operator-application.yaml', 'Application')


def bots_app():
    return one(ARGOCD / 'bots-application.yaml', 'Application')


def wave(app):
    return int(app['metadata'].get('annotations', {}).get('argocd.argoproj.io/sync-wave', '0'))


def test_operator_application_installs_the_chart():
    app = operator_app()
    source = app['spec']['source']
    assert source['path'] == CHART
    assert (ROOT / CHART / 'Chart.yaml').is_file(), f'{CHART} is missing'
    assert app['spec']['destination']['namespace'] == 'clawdbot-system'
    options = app['spec']['syncPolicy']['syncOptions']
    assert 'CreateNamespace=true' in options and 'ServerSideApply=true' in options


def test_bots_application_syncs_the_bots_after_the_operator():
    app = bots_app()
    assert (ROOT / app['spec']['source']['path']).resolve() == BOTS.resolve()
    assert wave(operator_app()) < wave(app)
    for key in ('repoURL', 'targetRevision'):
        assert app['spec']['source'][key] == operator_app()['spec']['source'][key]


# --- Flux --------------------------------------------------------------------

def kustomizations():
    return {d['metadata']['name']: d for d in docs(FLUX / 'kustomization.yaml')}


def bots_kustomization():
    found = [k for k in kustomizations().values() if (ROOT / k['spec']['path']).resolve() == BOTS.resolve()]
    assert len(found) == 1, 'one Kustomization applies examples/gitops/bots'
    return found[0]


def helmrelease():
    return one(FLUX / 'operator' / 'helmrelease.yaml', 'HelmRelease')


def gitrepository():
    return one(FLUX / 'gitrepository.yaml', 'GitRepository')


def test_health_checks_name_the_bots():
    checks = bots_kustomization()['spec']['healthChecks']
    listed = {(h['apiVersion'], h['kind'], h['name'], h['namespace']) for h in checks}
    present = {(d['apiVersion'], d['kind'], d['metadata']['name'], d['metadata']['namespace']) for d in bots()}
    assert listed == present
    assert not bots_kustomization()['spec'].get('wait'), 'wait: true would ignore healthChecks'


def test_health_check_exprs_read_ready_and_degraded():
    exprs = [e for e in bots_kustomization()['spec']['healthCheckExprs'] if e['kind'] == 'ClawdBot']
    assert len(exprs) == 1 and exprs[0]['apiVersion'] == 'clawdbot.io/v1alpha1'
    assert "'Ready'" in exprs[0]['current'] and "'Degraded'" in exprs[0]['failed']


def test_bots_depend_on_the_operator():
    ks = kustomizations()
    deps = [d['name'] for d in bots_kustomization()['spec']['dependsOn']]
    assert deps, 'dependsOn is empty'
    for name in deps:
        operator = ks[name]
        assert operator['spec'].get('wait') or operator['spec'].get('healthChecks'), \
            f'{name} is Ready before its HelmRelease is'
        applied = [d for p in sorted((ROOT / operator['spec']['path']).glob('*.yaml')) for d in docs(p)]
        assert [d['kind'] for d in applied] == ['HelmRelease']


def test_flux_objects_use_the_one_git_repository():
    repo = gitrepository()
    ref = (repo['metadata']['name'], repo['metadata']['namespace'])

    def source(obj, src):
        # A sourceRef without namespace means the referring object's.
        return src['kind'], src['name'], src.get('namespace', obj['metadata']['namespace'])

    for k in kustomizations().values():
        assert source(k, k['spec']['sourceRef']) == ('GitRepository', *ref)
    hr = helmrelease()
    assert source(hr, hr['spec']['chart']['spec']['sourceRef']) == ('GitRepository', *ref)
    # The same repository and release as Argo CD's.
    assert repo['spec']['url'] == operator_app()['spec']['source']['repoURL']
    assert repo['spec']['ref']['tag'] == operator_app()['spec']['source']['targetRevision']


def test_helmrelease_installs_the_chart():
    hr = helmrelease()
    chart = hr['spec']['chart']['spec']['chart']
    assert chart.removeprefix('./') == CHART
    assert (ROOT / CHART / 'Chart.yaml').is_file(), f'{CHART} is missing'
    assert hr['spec']['targetNamespace'] == 'clawdbot-system'
    # The chart renders the CRD from templates/; nothing comes from crds/.
    assert hr['spec']['install']['crds'] == 'Skip' and hr['spec']['upgrade']['crds'] == 'Skip'


def leaves(values, prefix=()):
    for k, v in values.items():
        if isinstance(v, dict) and v:
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,)


@pytest.mark.parametrize('values', [
    pytest.param(lambda: operator_app()['spec']['source']['helm']['valuesObject'], id='argocd'),
    pytest.param(lambda: helmrelease()['spec']['values'], id='flux'),
])
def test_values_exist_in_the_chart(values):
    path = ROOT / CHART / 'values.yaml'
    assert path.is_file(), f'{path} is missing'
    chart_values = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    for leaf in leaves(values()):
        node = chart_values
        for key in leaf:
            assert isinstance(node, dict) and key in node, f'{".".join(leaf)} is not a value of {CHART}'
            node = node[key]


def test_git_repository_artifact_holds_what_flux_reads():
    """The GitRepository's ignore rules keep /charts/ and /examples/gitops/
    only: everything Flux reads must be there, symlinked chart files too."""
    ignore = gitrepository()['spec']['ignore'].split()
    kept = [line[2:].rstrip('/') for line in ignore if line.startswith('!/')]
    assert '/*' in ignore and set(kept) == {'charts', 'examples/gitops'}
    paths = [ROOT / k['spec']['path'] for k in kustomizations().values()] + [ROOT / CHART]
    paths += [p.resolve() for p in (ROOT / CHART).rglob('*') if p.is_symlink()]
    for p in paths:
        rel = p.resolve().relative_to(ROOT).as_posix()
        assert any(rel == k or rel.startswith(k + '/') for k in kept), f'{rel} is left out of the artifact'
