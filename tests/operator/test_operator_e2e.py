"""The real clawdbot-operator binary against the API server emulator.

One operator process serves the whole session (the `operator` fixture in
conftest.py); each test works in its own namespace (the `namespace` fixture),
so tests do not see each other's bots.
"""
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import Emulator, KubeError, free_port, operator_bin

wait_for = Emulator.wait_for

GROUP = '/apis/clawdbot.io/v1alpha1'


def bot(ns, name='hello', spec=None):
    return {'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot',
            'metadata': {'name': name, 'namespace': ns}, 'spec': spec or {}}


def bot_path(ns, name='hello'):
    return f'{GROUP}/namespaces/{ns}/clawdbots/{name}'


def get_or_none(emulator, path):
    try:
        return emulator.get(path)
    except KubeError as e:
        if e.status == 404:
            return None
        raise


def condition(obj, type_):
    for c in (obj or {}).get('status', {}).get('conditions', []):
        if c['type'] == type_:
            return c
    return None


def children_paths(ns, name='hello'):
    return {
        'Deployment': f'/apis/apps/v1/namespaces/{ns}/deployments/{name}',
        'Service': f'/api/v1/namespaces/{ns}/services/{name}',
        'ConfigMap': f'/api/v1/namespaces/{ns}/configmaps/{name}-config',
        'ServiceAccount': f'/api/v1/namespaces/{ns}/serviceaccounts/{name}',
        'Secret': f'/api/v1/namespaces/{ns}/secrets/{name}-api-keys',
    }


def mark_rolled_out(emulator, ns, name='hello'):
    """The emulator runs no Deployment controller: play its part."""
    path = f'/apis/apps/v1/namespaces/{ns}/deployments/{name}'
    dep = emulator.get(path)
    n = dep['spec'].get('replicas', 1)
    emulator.patch_status(path, {'observedGeneration': dep['metadata']['generation'], 'replicas': n,
                                 'readyReplicas': n, 'updatedReplicas': n, 'availableReplicas': n})


def config_hash(emulator, ns, name='hello'):
    dep = emulator.get(f'/apis/apps/v1/namespaces/{ns}/deployments/{name}')
    return dep['spec']['template']['metadata']['annotations']['clawdbot.io/config-hash']


def operator_writes(emulator, since=0):
    """Writes after `since`, Lease renewals aside."""
    return [w for w in emulator.writes()[since:] if '/leases' not in w['path']]


def test_children_appear_with_owner_references_and_ready_follows_the_rollout(emulator, operator, namespace):
    cb = emulator.create(bot(namespace))
    for kind, path in children_paths(namespace).items():
        obj = wait_for(lambda: get_or_none(emulator, path), message=f'{kind} to be created')
        owner = obj['metadata']['ownerReferences'][0]
        assert (owner['kind'], owner['uid'], owner['controller']) == ('ClawdBot', cb['metadata']['uid'], True), kind
        assert obj['metadata']['labels']['app.kubernetes.io/managed-by'] == 'clawdbot-operator'
    wait_for(lambda: (condition(emulator.get(bot_path(namespace)), 'Progressing') or {}).get('status') == 'True',
             message='Progressing=True')
    assert condition(emulator.get(bot_path(namespace)), 'Ready')['status'] == 'False'
    ready = f'clawdbot_operator_bot_condition{{clawdbot="hello",condition="Ready",namespace="{namespace}"}}'
    wait_for(lambda: metric_value(operator, ready) == 0, message='Ready=0 on /metrics')
    mark_rolled_out(emulator, namespace)
    emulator.kubectl('wait', '--for=condition=Ready', 'clawdbot/hello', '-n', namespace, '--timeout=30s')
    # The per-bot series the ClawdBotDegraded alert reads, from the operator's watch cache.
    wait_for(lambda: metric_value(operator, ready) == 1, message='Ready=1 on /metrics')
    st = emulator.get(bot_path(namespace))['status']
    assert st['endpoint'] == f'http://hello.{namespace}.svc:18789'
    assert st['readyReplicas'] == 1 and st['observedGeneration'] == 1
    assert st['authSecretName'] == 'hello-api-keys'
    events = emulator.get(f'/apis/events.k8s.io/v1/namespaces/{namespace}/events')['items']
    notes = [e['note'] for e in events if e['reason'] == 'Created' and e['type'] == 'Normal']
    assert len(notes) == 1, notes  # one Event names everything a reconcile created
    for child in ('Secret hello-api-keys', 'ServiceAccount hello', 'ConfigMap hello-config', 'Deployment hello',
                  'Service hello'):
        assert child in notes[0], notes


def test_a_spec_change_updates_the_config_and_rolls_the_pods(emulator, operator, namespace):
    emulator.create(bot(namespace))
    first = wait_for(lambda: get_or_none(emulator, children_paths(namespace)['Deployment']) and config_hash(emulator, namespace))
    emulator.patch(bot_path(namespace), {'spec': {'model': {'systemPrompt': 'You are terse.'}}})
    cm_path = children_paths(namespace)['ConfigMap']
    wait_for(lambda: 'You are terse.' in emulator.get(cm_path)['data']['config.yaml'], message='ConfigMap updated')
    wait_for(lambda: config_hash(emulator, namespace) != first, message='pod template hash changed')
    wait_for(lambda: emulator.get(bot_path(namespace)).get('status', {}).get('observedGeneration') == 2)


def test_a_changed_secret_rolls_the_pods(emulator, operator, namespace):
    emulator.create({'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'model', 'namespace': namespace},
                     'stringData': {'key': 'one'}, 'data': {'key': 'b25l'}})
    emulator.create(bot(namespace, spec={'model': {'endpoint': 'http://llm:8000/v1', 'name': 'm',
                                                   'apiKeySecretRef': {'name': 'model', 'key': 'key'}}}))
    first = wait_for(lambda: get_or_none(emulator, children_paths(namespace)['Deployment']) and config_hash(emulator, namespace))
    emulator.patch(f'/api/v1/namespaces/{namespace}/secrets/model', {'data': {'key': 'dHdv'}})
    wait_for(lambda: config_hash(emulator, namespace) != first, message='hash changed after the Secret changed')
    env = emulator.get(children_paths(namespace)['Deployment'])['spec']['template']['spec']['containers'][0]['env']
    assert {'name': 'MODEL_API_KEY', 'valueFrom': {'secretKeyRef': {'name': 'model', 'key': 'key', 'optional': False}}} in env


def test_a_missing_secret_is_reported(emulator, operator, namespace):
    emulator.create(bot(namespace, spec={'model': {'endpoint': 'http://llm:8000/v1',
                                                   'apiKeySecretRef': {'name': 'nope', 'key': 'key'}}}))
    c = wait_for(lambda: (condition(emulator.get(bot_path(namespace)), 'Degraded') or {}).get('reason') == 'SecretNotFound'
                 and condition(emulator.get(bot_path(namespace)), 'Degraded'))
    assert 'nope' in c['message'] and c['status'] == 'True'


def test_deleted_and_edited_children_are_put_back(emulator, operator, namespace):
    emulator.create(bot(namespace))
    paths = children_paths(namespace)
    svc = wait_for(lambda: get_or_none(emulator, paths['Service']))
    emulator.delete(paths['Service'])
    again = wait_for(lambda: get_or_none(emulator, paths['Service']), message='Service recreated')
    assert again['metadata']['uid'] != svc['metadata']['uid']
    wait_for(lambda: get_or_none(emulator, paths['Deployment']))
    emulator.patch(paths['Deployment'], {'spec': {'replicas': 5}})
    wait_for(lambda: emulator.get(paths['Deployment'])['spec']['replicas'] == 1, message='replicas put back')


REDIS_EXTERNAL = {'external': {'urlSecretRef': {'name': 'redis', 'key': 'url'}}}


def test_the_scale_subresource_drives_the_deployment(emulator, operator, namespace):
    emulator.create(bot(namespace, spec={'redis': REDIS_EXTERNAL}))
    dep_path = children_paths(namespace)['Deployment']
    wait_for(lambda: get_or_none(emulator, dep_path))
    emulator.kubectl('scale', 'clawdbot/hello', '--replicas=3', '-n', namespace)
    wait_for(lambda: emulator.get(dep_path)['spec']['replicas'] == 3, message='replicas mirrored')
    scale = emulator.get(f'{bot_path(namespace)}/scale')
    assert scale['spec']['replicas'] == 3
    assert 'app.kubernetes.io/instance=hello' in scale['status']['selector']


def test_optional_children_follow_the_spec(emulator, operator, namespace):
    emulator.create(bot(namespace, spec={'ingress': {'enabled': True, 'host': 'bot.example.com'},
                                         'disruptionBudget': {'enabled': True, 'maxUnavailable': 1}}))
    ing = f'/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/hello'
    pdb = f'/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/hello'
    wait_for(lambda: get_or_none(emulator, ing) and get_or_none(emulator, pdb), message='ingress and PDB')
    emulator.patch(bot_path(namespace), {'spec': {'ingress': None}})
    wait_for(lambda: get_or_none(emulator, ing) is None, message='ingress deleted')
    assert get_or_none(emulator, pdb) is not None


def test_invalid_and_unreadable_bots_are_degraded_and_the_others_still_reconciled(emulator, operator, namespace):
    # The emulator enforces no schema, like an API server without CEL would not
    # stop the first: the operator must.
    emulator.create(bot(namespace, 'no-endpoint', {'model': {'backend': 'OpenAI'}}))
    emulator.create(bot(namespace, 'wrong-types', {'replicas': 'three', 'model': 5}))
    emulator.create(bot(namespace, 'fine'))
    wait_for(lambda: get_or_none(emulator, children_paths(namespace, 'fine')['Deployment']), message='the valid bot reconciled')
    for name, field in [('no-endpoint', 'spec.model.endpoint'), ('wrong-types', 'spec.')]:
        c = wait_for(lambda: condition(emulator.get(bot_path(namespace, name)), 'Degraded'), message=f'{name} Degraded')
        assert c['status'] == 'True' and c['reason'] == 'InvalidSpec' and field in c['message'], c
        assert get_or_none(emulator, children_paths(namespace, name)['Deployment']) is None
    events = emulator.get(f'/apis/events.k8s.io/v1/namespaces/{namespace}/events')['items']
    warned = {e['regarding']['name'] for e in events if e['type'] == 'Warning' and e['reason'] == 'InvalidSpec'}
    assert warned == {'no-endpoint', 'wrong-types'}
    # Fixing the spec heals it.
    emulator.patch(bot_path(namespace, 'no-endpoint'), {'spec': {'model': {'endpoint': 'http://llm:8000/v1'}}})
    wait_for(lambda: condition(emulator.get(bot_path(namespace, 'no-endpoint')), 'Degraded')['status'] == 'False')


def test_a_paused_bot_gets_no_writes(emulator, operator, namespace):
    emulator.create(bot(namespace))
    dep_path = children_paths(namespace)['Deployment']
    wait_for(lambda: get_or_none(emulator, dep_path))
    emulator.patch(bot_path(namespace), {'spec': {'paused': True}})
    wait_for(lambda: (condition(emulator.get(bot_path(namespace)), 'Paused') or {}).get('status') == 'True')
    time.sleep(0.5)
    emulator.patch(dep_path, {'spec': {'replicas': 4}})
    mark = len(emulator.writes())
    time.sleep(3)
    mine = [w for w in operator_writes(emulator, mark) if f'/namespaces/{namespace}/' in w['path']]
    assert mine == [], mine
    assert emulator.get(dep_path)['spec']['replicas'] == 4, 'a paused bot is left alone'
    emulator.patch(bot_path(namespace), {'spec': {'paused': False}})
    wait_for(lambda: emulator.get(dep_path)['spec']['replicas'] == 1, message='resumed and put back')


def mark_statefulset_ready(emulator, ns, name):
    """No StatefulSet controller here either: report its pod ready."""
    path = f'/apis/apps/v1/namespaces/{ns}/statefulsets/{name}'
    sts = wait_for(lambda: get_or_none(emulator, path), message=f'StatefulSet {name}')
    emulator.patch_status(path, {'observedGeneration': sts['metadata']['generation'], 'replicas': 1,
                                 'readyReplicas': 1, 'availableReplicas': 1,
                                 'currentRevision': 'r1', 'updateRevision': 'r1'})


def test_zero_writes_after_convergence(emulator, operator, namespace):
    emulator.create(bot(namespace, spec={'autoscaling': {'enabled': True, 'minReplicas': 1, 'maxReplicas': 3},
                                         'redis': {'managed': {}}}))
    wait_for(lambda: get_or_none(emulator, children_paths(namespace)['Deployment']))
    mark_statefulset_ready(emulator, namespace, 'hello-redis')
    mark_rolled_out(emulator, namespace)
    wait_for(lambda: (condition(emulator.get(bot_path(namespace)), 'Ready') or {}).get('status') == 'True')
    time.sleep(1)
    mark = len(emulator.writes())
    time.sleep(8)
    writes = operator_writes(emulator, mark)
    assert writes == [], f'writes during a quiet period: {json.dumps(writes, indent=1)}'


def test_deleting_the_bot_deletes_its_children(emulator, operator, namespace):
    emulator.create(bot(namespace))
    paths = children_paths(namespace)
    wait_for(lambda: all(get_or_none(emulator, p) for p in paths.values()))
    series = f'clawdbot_operator_bot_condition{{clawdbot="hello",condition="Degraded",namespace="{namespace}"}}'
    wait_for(lambda: metric_value(operator, series) is not None, message='the Degraded series')
    assert metric_value(operator, series) == 0
    emulator.delete(bot_path(namespace))
    wait_for(lambda: all(get_or_none(emulator, p) is None for p in paths.values()), message='children collected')
    wait_for(lambda: metric_value(operator, series) is None, message='condition series removed with the bot')


def metric_value(operator, series):
    """The value of one series on the operator's /metrics, None when absent."""
    with urllib.request.urlopen(operator['url'] + '/metrics', timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + ' '):
                return float(line.rsplit(' ', 1)[1])
    return None


def test_metrics_and_probes(operator):
    url = operator['url']
    for path in ('/healthz', '/readyz'):
        with urllib.request.urlopen(url + path, timeout=2) as r:
            assert r.status == 200
    with urllib.request.urlopen(url + '/metrics', timeout=2) as r:
        text = r.read().decode()
    for name in ('clawdbot_operator_reconcile_total{result="ok"}', 'clawdbot_operator_reconcile_duration_seconds_bucket',
                 'clawdbot_operator_managed_objects{kind="Deployment"}', 'clawdbot_operator_leader 1'):
        assert name in text, name


# --- Redis and the database: managed, external, CloudNativePG, absent ----------------

def path(ns, kind, name):
    group = {'StatefulSet': '/apis/apps/v1', 'Deployment': '/apis/apps/v1', 'CronJob': '/apis/batch/v1',
             'NetworkPolicy': '/apis/networking.k8s.io/v1',
             'Cluster': '/apis/postgresql.cnpg.io/v1'}.get(kind, '/api/v1')
    plural = {'NetworkPolicy': 'networkpolicies', 'PersistentVolumeClaim': 'persistentvolumeclaims'}.get(
        kind, kind.lower() + 's')
    return f'{group}/namespaces/{ns}/{plural}/{name}'


MANAGED = {'redis': {'managed': {}}, 'database': {'managed': {'backup': {'enabled': True}}}}
MANAGED_CHILDREN = [('StatefulSet', 'hello-redis'), ('Service', 'hello-redis'), ('NetworkPolicy', 'hello-redis'),
                    ('Secret', 'hello-redis'), ('StatefulSet', 'hello-db'), ('Service', 'hello-db'),
                    ('NetworkPolicy', 'hello-db'), ('Secret', 'hello-db'), ('Secret', 'hello-connections'),
                    ('CronJob', 'hello-db-backup'), ('PersistentVolumeClaim', 'hello-db-backup')]


def wait_degraded(emulator, ns, reason, name='hello'):
    return wait_for(lambda: (c := condition(emulator.get(bot_path(ns, name)), 'Degraded')) and c['status'] == 'True'
                    and c['reason'] == reason and c, message=f'Degraded {reason}')


def test_switching_redis_and_database_modes_creates_and_removes_exactly_their_children(emulator, operator, namespace):
    emulator.create({'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'redis', 'namespace': namespace},
                     'stringData': {'url': 'redis://redis.elsewhere:6379/0'}})
    emulator.create(bot(namespace, spec={'replicas': 2, **MANAGED}))
    for kind, name in MANAGED_CHILDREN:
        wait_for(lambda: get_or_none(emulator, path(namespace, kind, name)), message=f'{kind} {name}')
    db_secret = emulator.get(path(namespace, 'Secret', 'hello-db'))
    dep = wait_for(lambda: get_or_none(emulator, path(namespace, 'Deployment', 'hello')))
    env = dep['spec']['template']['spec']['containers'][0]['env']
    assert {'name': 'REDIS_URL', 'valueFrom': {'secretKeyRef': {'name': 'hello-connections', 'key': 'redis-url',
                                                                 'optional': False}}} in env

    # Redis -> external, database -> absent (SQLite in each pod).
    emulator.patch(bot_path(namespace), {'spec': {
        'redis': {'managed': None, 'external': {'urlSecretRef': {'name': 'redis', 'key': 'url'}}},
        'database': None}})
    gone = [c for c in MANAGED_CHILDREN if c not in {('Secret', 'hello-db'), ('PersistentVolumeClaim', 'hello-db-backup')}]
    for kind, name in gone:
        wait_for(lambda: get_or_none(emulator, path(namespace, kind, name)) is None, message=f'{kind} {name} deleted')
    # Kept with the data they belong to (retained volumes): the credentials and the dumps.
    assert emulator.get(path(namespace, 'Secret', 'hello-db'))['data'] == db_secret['data']
    assert get_or_none(emulator, path(namespace, 'PersistentVolumeClaim', 'hello-db-backup'))
    env = emulator.get(path(namespace, 'Deployment', 'hello'))['spec']['template']['spec']['containers'][0]['env']
    assert {'name': 'REDIS_URL', 'valueFrom': {'secretKeyRef': {'name': 'redis', 'key': 'url', 'optional': False}}} in env
    assert not any(e['name'] == 'DATABASE_URL' for e in env)

    # Back to managed: the database finds its old credentials, byte for byte.
    emulator.patch(bot_path(namespace), {'spec': {'redis': {'external': None, 'managed': {}},
                                                  'database': MANAGED['database']}})
    for kind, name in MANAGED_CHILDREN:
        wait_for(lambda: get_or_none(emulator, path(namespace, kind, name)), message=f'{kind} {name} again')
    assert emulator.get(path(namespace, 'Secret', 'hello-db'))['data'] == db_secret['data']


def test_generated_credentials_survive_reconciles_restarts_and_edits(emulator, operator, namespace):
    emulator.create(bot(namespace, spec=dict(MANAGED)))
    names = ['hello-redis', 'hello-db', 'hello-connections', 'hello-api-keys']
    for n in names:
        wait_for(lambda: get_or_none(emulator, path(namespace, 'Secret', n)), message=f'Secret {n}')
    before = {n: emulator.get(path(namespace, 'Secret', n))['data'] for n in names}
    emulator.patch(bot_path(namespace), {'spec': {'model': {'systemPrompt': 'Be brief.'}}})
    wait_for(lambda: emulator.get(bot_path(namespace)).get('status', {}).get('observedGeneration') == 2)
    operator['restart']()
    emulator.patch(bot_path(namespace), {'spec': {'database': {'managed': {'size': '5Gi'}}}})
    wait_for(lambda: emulator.get(bot_path(namespace)).get('status', {}).get('observedGeneration') == 3)
    after = {n: emulator.get(path(namespace, 'Secret', n))['data'] for n in names}
    assert after == before


def test_the_database_volume_is_retained_unless_asked_and_never_deleted_by_the_operator(emulator, operator, namespace):
    emulator.create(bot(namespace, spec={'database': {'managed': {}}}))
    sts = wait_for(lambda: get_or_none(emulator, path(namespace, 'StatefulSet', 'hello-db')))
    assert sts['spec']['persistentVolumeClaimRetentionPolicy'] == {'whenDeleted': 'Retain', 'whenScaled': 'Retain'}
    # The StatefulSet controller would make this claim from the template.
    template = sts['spec']['volumeClaimTemplates'][0]
    emulator.create({'apiVersion': 'v1', 'kind': 'PersistentVolumeClaim',
                     'metadata': {'name': 'data-hello-db-0', 'namespace': namespace,
                                  'labels': template['metadata']['labels']},
                     'spec': template['spec']})
    emulator.patch(bot_path(namespace), {'spec': {'database': {'managed': {'deleteClaimOnDelete': True}}}})
    wait_for(lambda: emulator.get(path(namespace, 'StatefulSet', 'hello-db'))['spec']
             ['persistentVolumeClaimRetentionPolicy']['whenDeleted'] == 'Delete', message='retention Delete')
    emulator.delete(bot_path(namespace))
    wait_for(lambda: get_or_none(emulator, path(namespace, 'StatefulSet', 'hello-db')) is None)
    time.sleep(1)
    # Deleting a claim is the StatefulSet controller's job (whenDeleted), never the operator's.
    assert get_or_none(emulator, path(namespace, 'PersistentVolumeClaim', 'data-hello-db-0'))
    mine = [w for w in emulator.writes() if 'persistentvolumeclaims/data-hello-db-0' in w['path']
            and w['method'] == 'DELETE']
    assert mine == []


def test_an_unowned_object_with_a_childs_name_is_never_modified(emulator, operator, namespace):
    cm = emulator.create({'apiVersion': 'v1', 'kind': 'ConfigMap',
                          'metadata': {'name': 'hello-config', 'namespace': namespace}, 'data': {'mine': 'yes'}})
    emulator.create(bot(namespace))
    c = wait_degraded(emulator, namespace, 'NameConflict')
    assert 'ConfigMap hello-config' in c['message']
    wait_for(lambda: get_or_none(emulator, children_paths(namespace)['Deployment']), message='the rest is applied')
    now = emulator.get(path(namespace, 'ConfigMap', 'hello-config'))
    assert now['metadata']['resourceVersion'] == cm['metadata']['resourceVersion']
    assert now['data'] == {'mine': 'yes'} and 'ownerReferences' not in now['metadata']
    events = emulator.get(f'/apis/events.k8s.io/v1/namespaces/{namespace}/events')['items']
    assert any(e['reason'] == 'NameConflict' and e['type'] == 'Warning' for e in events)


CNPG_CRD = {
    'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
    'metadata': {'name': 'clusters.postgresql.cnpg.io'},
    'spec': {'group': 'postgresql.cnpg.io', 'scope': 'Namespaced',
             'names': {'kind': 'Cluster', 'listKind': 'ClusterList', 'plural': 'clusters', 'singular': 'cluster'},
             'versions': [{'name': 'v1', 'served': True, 'storage': True, 'subresources': {'status': {}},
                           'schema': {'openAPIV3Schema': {'type': 'object',
                                                          'x-kubernetes-preserve-unknown-fields': True}}}]},
}


def test_cloudnativepg_installed_after_start_is_picked_up(emulator, operator, namespace):
    emulator.create(bot(namespace, spec={'database': {'cloudNativePG': {'instances': 2, 'storage': {'size': '1Gi'}}}}))
    c = wait_degraded(emulator, namespace, 'CloudNativePGMissing')
    assert 'postgresql.cnpg.io/v1' in c['message']
    cluster_path = path(namespace, 'Cluster', 'hello-db')
    try:
        emulator.create(CNPG_CRD)
        cluster = wait_for(lambda: get_or_none(emulator, cluster_path), timeout=30,
                           message='the Cluster once CloudNativePG is installed (no operator restart)')
        assert cluster['spec']['instances'] == 2
        wait_for(lambda: condition(emulator.get(bot_path(namespace)), 'Degraded')['status'] == 'False')
        emulator.patch_status(cluster_path, {'readyInstances': 2, 'phase': 'Cluster in healthy state'})
        emulator.patch_status(children_paths(namespace)['Deployment'], {})  # nudge: status changes trigger
        wait_for(lambda: condition(emulator.get(bot_path(namespace)), 'DatabaseReady')['reason'] == 'ClusterReady',
                 message='DatabaseReady from the Cluster status')
    finally:
        emulator.delete('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusters.postgresql.cnpg.io')


def test_autoscaling_without_replicas_gets_a_scale_subresource_of_one(emulator, operator, namespace):
    # spec.replicas left out, as GitOps users are told: the schema default
    # gives the scale subresource 1 (an HPA on an empty one stays at
    # ScalingDisabled), and the HPA targets the ClawdBot.
    emulator.create(bot(namespace, spec={'redis': {'managed': {}},
                                         'autoscaling': {'enabled': True, 'minReplicas': 2, 'maxReplicas': 5}}))
    scale = emulator.get(f'{bot_path(namespace)}/scale')
    assert scale['spec']['replicas'] == 1
    hpa = wait_for(lambda: get_or_none(
        emulator, f'/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/hello'))
    assert hpa['spec']['scaleTargetRef'] == {'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot', 'name': 'hello'}
    # The HPA raises it through /scale; the operator mirrors it.
    emulator.patch(f'{bot_path(namespace)}/scale', {'spec': {'replicas': 2}})
    wait_for(lambda: emulator.get(children_paths(namespace)['Deployment'])['spec']['replicas'] == 2)


def test_an_external_redis_is_judged_by_the_runtimes_own_report(emulator, operator, runtime_health, namespace):
    emulator.create({'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'redis', 'namespace': namespace},
                     'stringData': {'url': 'redis://redis.elsewhere:6379/0'}})
    runtime_health.checks[f'{namespace}/hello'] = {'redis': 'down: connection refused', 'database': 'ok'}
    emulator.create(bot(namespace, spec={'redis': {'external': {'urlSecretRef': {'name': 'redis', 'key': 'url'}}}}))
    wait_for(lambda: get_or_none(emulator, children_paths(namespace)['Deployment']))
    c = wait_for(lambda: condition(emulator.get(bot_path(namespace)), 'RedisReady'))
    assert c['status'] == 'Unknown', 'no pod to ask yet'
    mark_rolled_out(emulator, namespace)
    c = wait_for(lambda: (c := condition(emulator.get(bot_path(namespace)), 'RedisReady'))['status'] == 'False' and c,
                 message='RedisReady False from /health/ready')
    assert 'connection refused' in c['message']
    assert condition(emulator.get(bot_path(namespace)), 'Ready')['status'] == 'False'
    runtime_health.checks[f'{namespace}/hello'] = {'redis': 'ok', 'database': 'ok'}
    emulator.patch_status(children_paths(namespace)['Deployment'], {'conditions': [{'type': 'Available', 'status': 'True'}]})
    wait_for(lambda: condition(emulator.get(bot_path(namespace)), 'Ready')['status'] == 'True',
             message='Ready once the runtime reports Redis ok')


def test_an_older_kubernetes_is_named_in_the_log_and_an_event(tmp_path):
    # A second, private emulator that says it is Kubernetes 1.29.
    kubeconfig = tmp_path / 'kubeconfig'
    emu = subprocess.Popen([sys.executable, str(Path(__file__).parent / 'emulator.py'), '--port', '0',
                            '--kubeconfig', str(kubeconfig), '--kube-version', '1.29.4'],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    log_path = tmp_path / 'operator.log'
    op = None
    try:
        line = emu.stdout.readline()
        assert line.startswith('listening on '), line
        old = Emulator(line.split()[-1], kubeconfig, None)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(('KUBE', 'POD_', 'WATCH_'))}
        env.update(KUBECONFIG=str(kubeconfig), POD_NAMESPACE='default', POD_NAME='operator-old', RUST_LOG='info')
        with open(log_path, 'w') as log:
            op = subprocess.Popen([operator_bin(), 'run', '--metrics-addr', f'127.0.0.1:{port}'],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        events = wait_for(lambda: [e for e in old.get('/apis/events.k8s.io/v1/namespaces/default/events')['items']
                                   if e['reason'] == 'UnsupportedKubernetesVersion'],
                          timeout=30, message='the version Event')
        assert events[0]['type'] == 'Warning'
        assert events[0]['regarding']['kind'] == 'Pod' and events[0]['regarding']['name'] == 'operator-old'
        assert '1.30' in events[0]['note'] and 'v1.29.4' in events[0]['note']
        assert 'older than 1.30' in log_path.read_text()
    finally:
        for p in (op, emu):
            if p:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
