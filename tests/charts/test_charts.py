"""The Helm charts, offline: lint, rendering, schema refusals, the CRD, RBAC against the operator's code,
and the plain manifests in deploy/ as the chart's output."""
import pathlib
import subprocess
import sys

import pytest
import yaml

from chartlib import (BOTS_CHART, HELM, MONITORING_APIS, OPERATOR_CHART, ROOT, Grants, helm, render,
                      required_permissions)

VENV_BIN = pathlib.Path(sys.executable).parent
K8S_VERSION = '1.35.0'
CRD_FILE = ROOT / 'crds' / 'clawdbot.io_clawdbots.yaml'
CUSTOM_CRDS = {'ServiceMonitor': ROOT / 'tests/operator/crds/monitoring.coreos.com_servicemonitors.yaml',
               'PrometheusRule': ROOT / 'tests/operator/crds/monitoring.coreos.com_prometheusrules.yaml',
               'ClawdBot': CRD_FILE}
OPERATOR_VALUES = sorted((OPERATOR_CHART / 'ci').glob('*.yaml'))
BOTS_VALUES = sorted((BOTS_CHART / 'ci').glob('*.yaml'))


def validate(docs, tmp_path, label):
    """Built-in kinds through kubernetes-validate --strict, other kinds against their CRD's schema."""
    builtin = [d for d in docs if d['kind'] not in CUSTOM_CRDS]
    custom = [d for d in docs if d['kind'] in CUSTOM_CRDS]
    path = tmp_path / f'{label}.yaml'
    path.write_text(yaml.safe_dump_all(builtin))
    proc = subprocess.run([str(VENV_BIN / 'kubernetes-validate'), '--strict', '-k', K8S_VERSION, str(path)],
                          capture_output=True, text=True)
    bad = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines()
           if line.strip() and ' passed for resource ' not in line]
    assert proc.returncode == 0 and not bad, f'{label}: kubernetes-validate:\n' + '\n'.join(bad or [proc.stderr])
    for kind in {d['kind'] for d in custom}:
        p = tmp_path / f'{label}-{kind}.yaml'
        p.write_text(yaml.safe_dump_all([d for d in custom if d['kind'] == kind]))
        check = subprocess.run([sys.executable, str(ROOT / 'tests/operator/check_crd_schema.py'),
                                str(CUSTOM_CRDS[kind]), str(p)], capture_output=True, text=True)
        assert check.returncode == 0, f'{label}: {kind} does not match its CRD:\n{check.stdout}{check.stderr}'


def rules_of(docs):
    return [r for d in docs if d['kind'] in ('Role', 'ClusterRole') for r in d['rules']]


# --- lint and render ----------------------------------------------------------------------------------

@pytest.mark.parametrize('values', [None, *OPERATOR_VALUES], ids=lambda v: v.name if v else 'defaults')
def test_operator_chart_lints_and_renders_valid_objects(values, tmp_path):
    args = ['-f', str(values)] if values else []
    helm('lint', '--strict', str(OPERATOR_CHART), *args)
    docs = render(OPERATOR_CHART, *args, *[a for api in MONITORING_APIS for a in ('--api-versions', api)])
    validate(docs, tmp_path, values.stem if values else 'defaults')


@pytest.mark.parametrize('values', BOTS_VALUES, ids=lambda v: v.name)
def test_bots_chart_lints_and_renders_valid_clawdbots(values, tmp_path):
    helm('lint', '--strict', str(BOTS_CHART), '-f', str(values))
    docs = render(BOTS_CHART, '-f', str(values), namespace='bots', release='bots')
    assert docs and all(d['kind'] == 'ClawdBot' for d in docs)
    validate(docs, tmp_path, values.stem)


def example_bots():
    for path in sorted((ROOT / 'examples').glob('*.yaml')):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get('kind') == 'ClawdBot':
                yield pytest.param(doc, id=path.stem)


@pytest.mark.parametrize('bot', list(example_bots()))
def test_bots_chart_renders_each_example_spec_unchanged(bot, tmp_path):
    meta = bot['metadata']
    values = tmp_path / 'values.yaml'
    values.write_text(yaml.safe_dump({'bots': [{'name': meta['name'], 'namespace': meta.get('namespace', 'default'),
                                                'spec': bot['spec']}]}))
    [doc] = render(BOTS_CHART, '-f', str(values), namespace='bots', release='bots')
    assert doc['spec'] == bot['spec'] and doc['metadata']['name'] == meta['name']


# --- values the schemas must refuse -----------------------------------------------------------------

@pytest.mark.parametrize('chart,args,named', [
    (OPERATOR_CHART, ['--set', 'replicaCount=two'], '/replicaCount'),
    (OPERATOR_CHART, ['--set', 'replicaCount=0'], '/replicaCount'),
    (OPERATOR_CHART, ['--set', 'logFormat=xml'], '/logFormat'),
    (OPERATOR_CHART, ['--set', 'watchNamespaces={team-a,team-a}'], '/watchNamespaces'),
    (OPERATOR_CHART, ['--set', 'watchNamespaces={Team_A}'], '/watchNamespaces/0'),
    (OPERATOR_CHART, ['--set', 'crds.instal=true'], 'instal'),
    (OPERATOR_CHART, ['--set', 'image.pullPolicy=Sometimes'], '/image/pullPolicy'),
    (OPERATOR_CHART, ['--set', 'monitoring.serviceMonitor.interval=soon'], '/monitoring/serviceMonitor/interval'),
    (OPERATOR_CHART, ['--set', 'resources.limits.memory=lots'], '/resources/limits/memory'),
    (BOTS_CHART, ['--set', 'bots[0].spec.replicas=1'], 'name'),
    (BOTS_CHART, ['--set', 'bots[0].name=x', '--set', 'bots[0].spec.replicas=two'], '/bots/0/spec/replicas'),
    (BOTS_CHART, ['--set', 'bots[0].name=x', '--set', 'bots[0].spec.modle.name=x'], 'modle'),
    (BOTS_CHART, ['--set', 'bots[0].name=Bad_Name', '--set', 'bots[0].spec.replicas=1'], '/bots/0/name'),
], ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_values_fail_at_install_time_naming_the_field(chart, args, named):
    proc = helm('template', 'x', str(chart), *args, check=False)
    assert proc.returncode != 0, f'{args} was accepted'
    assert named in proc.stderr, proc.stderr


# --- the CRD ------------------------------------------------------------------------------------------

def test_the_charts_crd_is_the_generated_one_and_kept_on_uninstall():
    want = yaml.safe_load(CRD_FILE.read_text())
    [crd] = [d for d in render(OPERATOR_CHART) if d['kind'] == 'CustomResourceDefinition']
    assert crd['spec'] == want['spec']
    assert crd['metadata']['name'] == want['metadata']['name']
    assert crd['metadata']['annotations'] == {'helm.sh/resource-policy': 'keep'}
    [crd] = [d for d in render(OPERATOR_CHART, '--set', 'crds.keep=false') if d['kind'] == 'CustomResourceDefinition']
    assert 'annotations' not in crd['metadata']
    assert not [d for d in render(OPERATOR_CHART, '--set', 'crds.install=false')
                if d['kind'] == 'CustomResourceDefinition']


def test_generated_chart_files_and_plain_manifests_are_up_to_date(tmp_path):
    sync = subprocess.run([sys.executable, str(ROOT / 'scripts/sync-charts.py'), '--check'],
                          capture_output=True, text=True)
    assert sync.returncode == 0, sync.stderr
    out = tmp_path / 'clawdbot-operator.yaml'
    subprocess.run([str(ROOT / 'scripts/render-deploy-manifests.sh'), str(out)], check=True,
                   env={'HELM': HELM, 'PATH': '/usr/bin:/bin'})
    assert out.read_text() == (ROOT / 'deploy/clawdbot-operator.yaml').read_text(), \
        "deploy/clawdbot-operator.yaml is stale: run 'make deploy-manifests' and commit"


# --- monitoring ---------------------------------------------------------------------------------------

def test_monitoring_objects_only_where_the_api_exists():
    on = ['-f', str(OPERATOR_CHART / 'ci/monitoring-values.yaml')]
    apis = [a for api in MONITORING_APIS for a in ('--api-versions', api)]
    kinds = {d['kind']: d for d in render(OPERATOR_CHART, *on, *apis)}
    assert {'ServiceMonitor', 'PrometheusRule'} <= kinds.keys()
    rules = yaml.safe_load((ROOT / 'deploy/prometheus/clawdbot-operator-rules.yaml').read_text())
    assert kinds['PrometheusRule']['spec'] == rules['spec']
    assert kinds['ServiceMonitor']['metadata']['labels']['release'] == 'prometheus'
    svc = kinds['Service']
    assert kinds['ServiceMonitor']['spec']['selector']['matchLabels'].items() <= svc['metadata']['labels'].items()
    assert kinds['ServiceMonitor']['spec']['endpoints'][0]['port'] == svc['spec']['ports'][0]['name']
    without = {d['kind'] for d in render(OPERATOR_CHART, *on)}
    assert not without & {'ServiceMonitor', 'PrometheusRule'}


# --- RBAC against the operator's code ------------------------------------------------------------------

def test_no_rbac_rule_uses_a_wildcard():
    for args in ([], ['-f', str(OPERATOR_CHART / 'ci/namespaced-values.yaml')]):
        for rule in rules_of(render(OPERATOR_CHART, *args)):
            for field in ('apiGroups', 'resources', 'verbs'):
                assert '*' not in rule.get(field, []), rule
            assert 'nonResourceURLs' not in rule and 'resourceNames' not in rule, rule


@pytest.mark.parametrize('mode', ['cluster', 'namespaced'])
def test_rbac_grants_exactly_what_the_operator_code_needs(mode):
    args = ['-f', str(OPERATOR_CHART / 'ci/namespaced-values.yaml')] if mode == 'namespaced' else []
    docs = render(OPERATOR_CHART, *args)
    deployment = next(d for d in docs if d['kind'] == 'Deployment')
    sa = deployment['spec']['template']['spec']['serviceAccountName']
    env = {e['name']: e.get('value') for e in deployment['spec']['template']['spec']['containers'][0]['env']}
    watched = env.get('WATCH_NAMESPACE')
    assert (watched == 'team-a,team-b') if mode == 'namespaced' else watched is None
    grants = Grants(docs, 'clawdbot-system', sa)
    needed = required_permissions()
    for p in needed:
        group, resource = p['apiGroup'], p['resource']
        wheres = {'cluster': [None], 'own': ['clawdbot-system'],
                  'watched': watched.split(',') if watched else [None]}[p['scope']]
        for verb in p['verbs']:
            for where in wheres:
                assert grants.allows(group, resource, verb, where), \
                    f'{verb} {group}/{resource} ({p["scope"]}, {where or "cluster-wide"}) not granted'
    # Nothing beyond the list: every granted verb is one the code uses.
    used = {(p['apiGroup'], p['resource'], v) for p in needed for v in p['verbs']}
    for rule in grants.cluster + [r for rules in grants.namespaced.values() for r in rules]:
        for group in rule['apiGroups']:
            for resource in rule['resources']:
                for verb in rule['verbs']:
                    assert (group, resource, verb) in used, f'{verb} {group}/{resource} is granted but never used'
    if mode == 'namespaced':
        # No cluster-wide access to anything but StorageClasses.
        assert {(g, r) for rule in grants.cluster for g in rule['apiGroups'] for r in rule['resources']} \
            == {('storage.k8s.io', 'storageclasses')}


def test_chart_readme_lists_every_permission():
    readme = (OPERATOR_CHART / 'README.md').read_text()
    for p in required_permissions():
        row = f'| `{p["apiGroup"] or "core"}` | `{p["resource"]}` |'
        assert row in readme, f'chart README has no row {row}'
        line = next(line for line in readme.splitlines() if line.startswith(row))
        assert all(v in line for v in p['verbs']), f'{row}: the README does not list every verb ({p["verbs"]})'


# --- the operator's pod ------------------------------------------------------------------------------

def test_operator_pod_is_non_root_read_only_and_probed():
    deployment = next(d for d in render(OPERATOR_CHART) if d['kind'] == 'Deployment')
    pod = deployment['spec']['template']['spec']
    [c] = pod['containers']
    assert deployment['spec']['replicas'] == 2
    assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] == 65532
    assert c['securityContext']['readOnlyRootFilesystem'] is True
    assert c['securityContext']['allowPrivilegeEscalation'] is False
    assert c['securityContext']['capabilities']['drop'] == ['ALL']
    assert c['livenessProbe']['httpGet']['path'] == '/healthz' and c['readinessProbe']['httpGet']['path'] == '/readyz'
    assert c['resources']['limits']['memory'] and c['resources']['requests']['cpu']
    assert c['args'][0] == 'run'
