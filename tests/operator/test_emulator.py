"""The emulator's compatibility layer, checked with kubectl and plain HTTP.

Run: .cache/operator-venv/bin/pytest -q tests/operator/test_emulator.py
"""
import asyncio
import json
import pathlib

import pytest
import yaml

import emulator as emulator_module
from conftest import KubeError

CB = '/apis/clawdbot.io/v1alpha1'
CLAWDBOT_CRD = pathlib.Path(__file__).resolve().parents[2] / 'crds' / 'clawdbot.io_clawdbots.yaml'


def clawdbot(ns, name='bot', replicas=1, labels=None):
    return {'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot',
            'metadata': {'name': name, 'namespace': ns, **({'labels': labels} if labels else {})},
            'spec': {'replicas': replicas, 'model': {'name': 'gpt'}}}


def configmap(ns, name, labels=None, **extra):
    return {'apiVersion': 'v1', 'kind': 'ConfigMap',
            'metadata': {'name': name, 'namespace': ns, 'labels': labels or {}, **extra}, 'data': {'k': 'v'}}


def names(items):
    return sorted(item['metadata']['name'] for item in items)


def test_discovery_lists_clawdbot_and_not_monitoring(emulator):
    groups = {g['name']: g for g in emulator.get('/apis')['groups']}
    assert 'clawdbot.io' in groups and 'monitoring.coreos.com' not in groups
    assert groups['autoscaling']['preferredVersion']['version'] == 'v2'
    for group in ('apps', 'coordination.k8s.io', 'events.k8s.io', 'policy', 'autoscaling', 'networking.k8s.io',
                  'apiextensions.k8s.io'):
        assert group in groups
    assert emulator.get('/api')['versions'] == ['v1']
    core = emulator.get('/api/v1')
    assert core['groupVersion'] == 'v1'
    assert {'namespaces', 'configmaps', 'secrets', 'services', 'serviceaccounts', 'events', 'pods'} <= \
        {r['name'] for r in core['resources']}
    resources = {r['name']: r for r in emulator.get(f'{CB}')['resources']}
    assert resources['clawdbots']['kind'] == 'ClawdBot' and resources['clawdbots']['shortNames'] == ['cb']
    assert resources['clawdbots']['namespaced'] is True
    assert {'clawdbots/status', 'clawdbots/scale'} <= set(resources)
    status, body = emulator.request('GET', '/apis/monitoring.coreos.com/v1')
    assert status == 404 and body['reason'] == 'NotFound'
    status, body = emulator.request('GET', '/apis/monitoring.coreos.com/v1/namespaces/default/servicemonitors')
    assert status == 404 and body['kind'] == 'Status' and body['reason'] == 'NotFound'
    version = emulator.get('/version')
    assert (version['major'], version['minor']) == ('1', '35')


def test_create_get_list_carry_kind_and_server_metadata(emulator, namespace):
    created = emulator.create(clawdbot(namespace))
    meta = created['metadata']
    assert meta['uid'] and meta['creationTimestamp'].endswith('Z') and meta['generation'] == 1
    assert int(meta['resourceVersion']) > 0 and meta['namespace'] == namespace
    fetched = emulator.get(f'{CB}/namespaces/{namespace}/clawdbots/bot')
    assert fetched == created
    listed = emulator.get(f'{CB}/namespaces/{namespace}/clawdbots')
    assert listed['kind'] == 'ClawdBotList' and listed['apiVersion'] == 'clawdbot.io/v1alpha1'
    assert int(listed['metadata']['resourceVersion']) >= int(meta['resourceVersion'])
    assert [i['metadata']['uid'] for i in listed['items']] == [meta['uid']]
    assert listed['items'][0]['kind'] == 'ClawdBot'
    # across namespaces too
    everywhere = emulator.get(f'{CB}/clawdbots')
    assert meta['uid'] in [i['metadata']['uid'] for i in everywhere['items']]


def test_kubectl_server_side_apply_creates_then_updates(emulator, namespace, tmp_path):
    manifest = tmp_path / 'bot.json'
    manifest.write_text(json.dumps(clawdbot(namespace, replicas=1)))
    emulator.clear_writes()
    out = emulator.kubectl('apply', '--server-side', '--field-manager', 'x', '-f', str(manifest)).stdout
    assert 'serverside-applied' in out
    first = emulator.get(f'{CB}/namespaces/{namespace}/clawdbots/bot')
    assert first['spec']['replicas'] == 1 and first['metadata']['generation'] == 1

    manifest.write_text(json.dumps(clawdbot(namespace, replicas=3)))
    emulator.kubectl('apply', '--server-side', '--field-manager', 'x', '-f', str(manifest))
    second = emulator.get(f'{CB}/namespaces/{namespace}/clawdbots/bot')
    assert second['spec']['replicas'] == 3 and second['metadata']['generation'] == 2
    assert second['metadata']['uid'] == first['metadata']['uid']

    applies = [w for w in emulator.writes() if w['method'] == 'PATCH']
    assert [(w['fieldManager'], w['code'], w['changed']) for w in applies] == [('x', 201, True), ('x', 200, True)]


def test_kubectl_get_by_short_name(emulator, namespace):
    emulator.create(clawdbot(namespace, name='short'))
    out = emulator.kubectl('get', 'cb', '-n', namespace).stdout
    assert 'short' in out.split()
    resources = emulator.kubectl('api-resources', '--api-group=clawdbot.io').stdout
    assert 'cb' in resources.split() and 'ClawdBot' in resources.split()
    missing = emulator.kubectl('get', 'cb', 'nope', '-n', namespace, check=False)
    assert missing.returncode != 0 and 'NotFound' in missing.stderr


def test_status_writes_do_not_bump_generation(emulator, namespace):
    path = f'{CB}/namespaces/{namespace}/clawdbots/bot'
    created = emulator.create({**clawdbot(namespace), 'status': {'replicas': 9}})
    assert 'status' not in created  # like the real server: status only through /status
    after_status = emulator.patch_status(path, {'replicas': 1, 'endpoint': 'http://bot'})
    assert after_status['status'] == {'replicas': 1, 'endpoint': 'http://bot'}
    assert after_status['metadata']['generation'] == 1
    assert int(after_status['metadata']['resourceVersion']) > int(created['metadata']['resourceVersion'])
    # status in a main-resource write is ignored; spec changes bump generation
    after_spec = emulator.patch(path, {'spec': {'replicas': 2}, 'status': {'replicas': 7}})
    assert after_spec['status']['replicas'] == 1 and after_spec['metadata']['generation'] == 2
    # a metadata-only change keeps the generation
    after_label = emulator.patch(path, {'metadata': {'labels': {'a': 'b'}}})
    assert after_label['metadata']['generation'] == 2 and after_label['metadata']['labels'] == {'a': 'b'}
    # a /status write cannot change spec
    emulator.patch(f'{path}/status', {'spec': {'replicas': 5}, 'status': {'replicas': 2}})
    assert emulator.get(path)['spec']['replicas'] == 2


def test_noop_apply_emits_no_event_and_keeps_resource_version(emulator, namespace):
    obj = clawdbot(namespace)
    first = emulator.apply(obj)
    rv = first['metadata']['resourceVersion']
    with emulator.watch(f'{CB}/namespaces/{namespace}/clawdbots', resourceVersion=rv) as watch:
        emulator.clear_writes()
        again = emulator.apply(obj)
        assert again['metadata']['resourceVersion'] == rv
        assert watch.collect(1.0) == []
        assert [w['changed'] for w in emulator.writes()] == [False]
        # a real change does arrive on the same watch
        emulator.apply(clawdbot(namespace, replicas=2))
        event = watch.next(5)
        assert event['type'] == 'MODIFIED' and event['object']['spec']['replicas'] == 2


def test_label_selectors_on_list(emulator, namespace):
    base = f'/api/v1/namespaces/{namespace}/configmaps'
    emulator.create(configmap(namespace, 'web', {'app': 'bot', 'tier': 'web'}))
    emulator.create(configmap(namespace, 'db', {'app': 'bot', 'tier': 'db'}))
    emulator.create(configmap(namespace, 'other', {'app': 'x'}))

    def select(selector):
        return names(emulator.get(base, labelSelector=selector)['items'])
    assert select('app=bot') == ['db', 'web']
    assert select('app==bot,tier=web') == ['web']
    assert select('tier!=web') == ['db', 'other']
    assert select('tier in (web, db)') == ['db', 'web']
    assert select('tier notin (web)') == ['db', 'other']
    assert select('tier') == ['db', 'web']
    assert select('!tier') == ['other']
    assert names(emulator.get(base, fieldSelector='metadata.name=db')['items']) == ['db']
    assert names(emulator.get(base, fieldSelector=f'metadata.namespace={namespace},metadata.name!=db')['items']) \
        == ['other', 'web']
    assert emulator.kubectl('get', 'configmaps', '-n', namespace, '-l', 'tier=db', '-o', 'name').stdout.split() \
        == ['configmap/db']
    status, body = emulator.request('GET', base, params={'labelSelector': 'a in (b'})
    assert status == 400 and body['reason'] == 'BadRequest'


def test_label_selected_watch_sees_objects_enter_and_leave(emulator, namespace):
    base = f'/api/v1/namespaces/{namespace}/configmaps'
    emulator.create(configmap(namespace, 'before', {'app': 'bot'}))
    with emulator.watch(base, labelSelector='app=bot') as watch:
        initial = watch.next(5)
        assert (initial['type'], initial['object']['metadata']['name']) == ('ADDED', 'before')
        emulator.create(configmap(namespace, 'unlabelled'))
        emulator.patch(f'{base}/unlabelled', {'metadata': {'labels': {'app': 'bot'}}})  # enters the selection
        emulator.patch(f'{base}/before', {'metadata': {'labels': {'app': 'other'}}})  # leaves it
        emulator.create(configmap(namespace, 'elsewhere', {'app': 'other'}))
        events = [(e['type'], e['object']['metadata']['name']) for e in watch.collect(1.0)]
    assert events == [('ADDED', 'unlabelled'), ('DELETED', 'before')]


def test_watch_resumes_from_resource_version(emulator, namespace):
    base = f'/api/v1/namespaces/{namespace}/configmaps'
    rv = emulator.get(base)['metadata']['resourceVersion']
    emulator.create(configmap(namespace, 'a'))
    emulator.patch(f'{base}/a', {'data': {'k': 'changed'}})
    emulator.delete(f'{base}/a')
    with emulator.watch(base, resourceVersion=rv, allowWatchBookmarks='true', timeoutSeconds='10') as watch:
        events = [(e['type'], e['object']['metadata']['name']) for e in watch.collect(1.0)]
    assert events == [('ADDED', 'a'), ('MODIFIED', 'a'), ('DELETED', 'a')]


def test_error_bodies_are_kubernetes_statuses(emulator, namespace):
    status, body = emulator.request('GET', f'{CB}/namespaces/{namespace}/clawdbots/missing')
    assert status == 404
    assert {k: body[k] for k in ('kind', 'apiVersion', 'status', 'reason', 'code')} == \
        {'kind': 'Status', 'apiVersion': 'v1', 'status': 'Failure', 'reason': 'NotFound', 'code': 404}
    assert body['message'] == 'clawdbots.clawdbot.io "missing" not found'
    emulator.create(clawdbot(namespace))
    status, body = emulator.request('POST', f'{CB}/namespaces/{namespace}/clawdbots', clawdbot(namespace))
    assert status == 409 and body['reason'] == 'AlreadyExists' and body['code'] == 409
    status, body = emulator.request('PATCH', f'{CB}/namespaces/{namespace}/clawdbots/missing', {'spec': {}},
                                    'application/merge-patch+json')
    assert status == 404 and body['reason'] == 'NotFound'
    status, body = emulator.request('POST', f'{CB}/namespaces/{namespace}/clawdbots', b'{not json')
    assert status == 400 and body['reason'] == 'BadRequest'
    with pytest.raises(KubeError) as error:
        emulator.get(f'/api/v1/namespaces/{namespace}/secrets/missing')
    assert error.value.status == 404 and error.value.body['message'] == 'secrets "missing" not found'


def test_put_checks_resource_version(emulator, namespace):
    path = f'/api/v1/namespaces/{namespace}/configmaps/cm'
    current = emulator.create(configmap(namespace, 'cm'))
    stale = json.loads(json.dumps(current))
    current['data'] = {'k': 'new'}
    replaced = emulator.put(path, current)
    assert replaced['data'] == {'k': 'new'}
    assert int(replaced['metadata']['resourceVersion']) > int(current['metadata']['resourceVersion'])
    stale['data'] = {'k': 'lost update'}
    status, body = emulator.request('PUT', path, stale)
    assert status == 409 and body['reason'] == 'Conflict'
    assert emulator.get(path)['data'] == {'k': 'new'}
    status, _ = emulator.request('PUT', f'/api/v1/namespaces/{namespace}/configmaps/absent',
                                 configmap(namespace, 'absent'))
    assert status == 404


def test_owner_references_are_garbage_collected(emulator, namespace):
    bot = emulator.create(clawdbot(namespace))
    owner = {'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot', 'name': 'bot',
             'uid': bot['metadata']['uid'], 'controller': True, 'blockOwnerDeletion': True}
    emulator.create(configmap(namespace, 'child', ownerReferences=[owner]))
    emulator.create(configmap(namespace, 'unrelated'))
    base = f'/api/v1/namespaces/{namespace}/configmaps'
    deleted = emulator.delete(f'{CB}/namespaces/{namespace}/clawdbots/bot')
    assert deleted['metadata']['uid'] == bot['metadata']['uid']
    emulator.wait_for(lambda: names(emulator.get(base)['items']) == ['unrelated'], timeout=5,
                      message='the owned ConfigMap to be collected')
    collected = [w for w in emulator.writes() if w['internal']]
    assert collected[-1]['method'] == 'DELETE' and collected[-1]['path'] == f'{base}/child'


def test_objects_created_for_an_owner_that_is_gone_are_collected(emulator, namespace):
    gone = {'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot', 'name': 'gone',
            'uid': 'no-such-uid', 'controller': True}
    emulator.create(configmap(namespace, 'late-child', ownerReferences=[gone]))
    emulator.create(configmap(namespace, 'kept'))
    base = f'/api/v1/namespaces/{namespace}/configmaps'
    emulator.wait_for(lambda: names(emulator.get(base)['items']) == ['kept'], timeout=5,
                      message='the child of an absent owner to be collected')


def test_finalizers_hold_deletion_and_json_patch_test_of_missing_path(emulator, namespace):
    path = f'{CB}/namespaces/{namespace}/clawdbots/bot'
    emulator.create(clawdbot(namespace))
    # kube-runtime's finalizer(): test that /metadata/finalizers is absent (null), then add it
    add = [{'op': 'test', 'path': '/metadata/finalizers', 'value': None},
           {'op': 'add', 'path': '/metadata/finalizers', 'value': ['clawdbot.io/cleanup']}]
    assert emulator.patch(path, add, 'application/json-patch+json')['metadata']['finalizers'] == ['clawdbot.io/cleanup']
    # removing the last one leaves no empty list behind (omitempty), so the same test-and-add works again
    removed = emulator.patch(path, [{'op': 'remove', 'path': '/metadata/finalizers/0'}], 'application/json-patch+json')
    assert 'finalizers' not in removed['metadata']
    emulator.patch(path, add, 'application/json-patch+json')
    marked = emulator.delete(path)
    assert marked['metadata']['deletionTimestamp'] and emulator.get(path)['metadata']['deletionTimestamp']
    status, body = emulator.request('PATCH', path, [{'op': 'test', 'path': '/metadata/finalizers/0', 'value': 'x'}],
                                    'application/json-patch+json')
    assert status == 422 and body['reason'] == 'Invalid'
    emulator.patch(path, [{'op': 'remove', 'path': '/metadata/finalizers/0'}], 'application/json-patch+json')
    status, _ = emulator.request('GET', path)
    assert status == 404


def test_scale_subresource(emulator, namespace):
    path = f'{CB}/namespaces/{namespace}/clawdbots/bot'
    emulator.create(clawdbot(namespace, replicas=1))
    emulator.patch_status(path, {'replicas': 1, 'selector': 'app=bot'})
    emulator.kubectl('scale', 'cb/bot', '-n', namespace, '--replicas=4')
    scale = emulator.get(f'{path}/scale')
    assert scale['kind'] == 'Scale' and scale['spec']['replicas'] == 4
    assert scale['status'] == {'replicas': 1, 'selector': 'app=bot'}
    assert emulator.get(path)['spec']['replicas'] == 4


def test_deployment_status_subresource(emulator, namespace):
    deployment = {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': {'name': 'web', 'namespace': namespace},
                  'spec': {'replicas': 1, 'selector': {'matchLabels': {'app': 'web'}},
                           'template': {'metadata': {'labels': {'app': 'web'}},
                                        'spec': {'containers': [{'name': 'c', 'image': 'img'}]}}}}
    applied = emulator.apply(deployment)
    path = emulator.path_of(deployment)
    assert path == f'/apis/apps/v1/namespaces/{namespace}/deployments/web'
    ready = emulator.patch_status(path, {'replicas': 1, 'readyReplicas': 1, 'availableReplicas': 1,
                                         'observedGeneration': 1})
    assert ready['status']['readyReplicas'] == 1 and ready['metadata']['generation'] == 1
    # re-applying the same spec leaves the status (written by "the controller") alone
    again = emulator.apply(deployment)
    assert again['status']['readyReplicas'] == 1
    assert again['metadata']['resourceVersion'] == ready['metadata']['resourceVersion'] != \
        applied['metadata']['resourceVersion']


def test_lease_and_events_apis(emulator, namespace):
    lease = {'apiVersion': 'coordination.k8s.io/v1', 'kind': 'Lease',
             'metadata': {'name': 'clawdbot-operator', 'namespace': namespace},
             'spec': {'holderIdentity': 'a', 'leaseDurationSeconds': 15}}
    created = emulator.create(lease)
    created['spec']['holderIdentity'] = 'b'
    assert emulator.put(emulator.path_of(lease), created)['spec']['holderIdentity'] == 'b'
    status, body = emulator.request('PUT', emulator.path_of(lease), created)  # stale resourceVersion now
    assert status == 409 and body['reason'] == 'Conflict'
    event = {'apiVersion': 'events.k8s.io/v1', 'kind': 'Event',
             'metadata': {'generateName': 'bot.', 'namespace': namespace},
             'reason': 'Reconciled', 'note': 'ok', 'type': 'Normal', 'action': 'Reconcile',
             'reportingController': 'clawdbot-operator', 'reportingInstance': 'x',
             'eventTime': '2026-01-01T00:00:00.000000Z',
             'regarding': {'kind': 'ClawdBot', 'name': 'bot', 'namespace': namespace}}
    made = emulator.create(event)
    assert made['metadata']['name'].startswith('bot.') and len(made['metadata']['name']) > len('bot.')
    listed = emulator.get(f'/apis/events.k8s.io/v1/namespaces/{namespace}/events')
    assert listed['kind'] == 'EventList' and len(listed['items']) == 1


def test_crd_creation_serves_the_new_resource(emulator, namespace):
    crd = {'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
           'metadata': {'name': 'widgets.example.com'},
           'spec': {'group': 'example.com', 'scope': 'Namespaced',
                    'names': {'plural': 'widgets', 'singular': 'widget', 'kind': 'Widget', 'shortNames': ['wd']},
                    'versions': [{'name': 'v1', 'served': True, 'storage': True, 'subresources': {'status': {}},
                                  'schema': {'openAPIV3Schema': {'type': 'object'}}}]}}
    created = emulator.apply(crd)
    conditions = {c['type']: c['status'] for c in created['status']['conditions']}
    assert conditions == {'NamesAccepted': 'True', 'Established': 'True'}
    assert 'example.com' in [g['name'] for g in emulator.get('/apis')['groups']]
    emulator.create({'apiVersion': 'example.com/v1', 'kind': 'Widget',
                     'metadata': {'name': 'w', 'namespace': namespace}})
    assert emulator.kubectl('get', 'wd', '-n', namespace, '-o', 'name').stdout.split() == ['widget.example.com/w']
    emulator.delete('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com')
    assert 'example.com' not in [g['name'] for g in emulator.get('/apis')['groups']]


def test_writes_log(emulator, namespace):
    emulator.clear_writes()
    assert emulator.writes() == []
    path = f'/api/v1/namespaces/{namespace}/configmaps/logged'
    emulator.create(configmap(namespace, 'logged'))
    emulator.patch(path, {'data': {'k': 'v'}}, fieldManager='me')  # no change
    emulator.request('GET', path)  # reads are not logged
    emulator.delete(path)
    log = emulator.writes()
    assert [(w['method'], w['path'], w['fieldManager'], w['changed'], w['code']) for w in log] == [
        ('POST', f'/api/v1/namespaces/{namespace}/configmaps', None, True, 201),
        ('PATCH', path, 'me', False, 200),
        ('DELETE', path, None, True, 200),
    ]
    assert all(w['time'].endswith('Z') and not w['internal'] for w in log)
    emulator.clear_writes()
    assert emulator.writes() == []


def test_namespace_deletion_deletes_its_objects(emulator):
    emulator.create({'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'doomed'}})
    emulator.create(configmap('doomed', 'inside'))
    emulator.create(clawdbot('doomed'))
    emulator.kubectl('delete', 'namespace', 'doomed')
    emulator.wait_for(lambda: not emulator.get('/api/v1/namespaces/doomed/configmaps')['items']
                      and not emulator.get(f'{CB}/namespaces/doomed/clawdbots')['items'], timeout=5,
                      message='the namespace to be emptied')


def test_server_dry_run_changes_nothing(emulator, namespace, tmp_path):
    path = f'{CB}/namespaces/{namespace}/clawdbots/bot'
    before = emulator.create(clawdbot(namespace, replicas=1))
    manifest = tmp_path / 'bot.json'
    manifest.write_text(json.dumps(clawdbot(namespace, replicas=5)))
    out = emulator.kubectl('apply', '--server-side', '--dry-run=server', '-f', str(manifest)).stdout
    assert 'server dry run' in out
    assert emulator.get(path) == before
    answer = emulator.patch(path, {'spec': {'replicas': 6}}, dryRun='All')
    assert answer['spec']['replicas'] == 6 and emulator.get(path) == before
    emulator.delete(path, dryRun='All')
    assert emulator.get(path) == before


# A CRD of our own with `default`s at several depths (group defaults.example.com, so that it does not clash
# with the widgets.example.com CRD of test_crd_creation_serves_the_new_resource).
WIDGETS = '/apis/defaults.example.com/v1'
WIDGET_SCHEMA = {'type': 'object', 'properties': {
    'spec': {'type': 'object', 'default': {}, 'properties': {
        'size': {'type': 'integer', 'default': 3},
        'enabled': {'type': 'boolean', 'default': True},
        'color': {'type': 'string', 'default': 'blue'},  # not nullable: an explicit null gets the default
        'note': {'type': 'string', 'nullable': True, 'default': 'none'},  # nullable: an explicit null stays
        'limits': {'type': 'object', 'default': {}, 'properties': {'cpu': {'type': 'string', 'default': '1'}}},
        'config': {'type': 'object', 'properties': {  # no default of its own: nothing beneath it when absent
            'mode': {'type': 'string', 'default': 'fast'},
            'tuning': {'type': 'object', 'properties': {'level': {'type': 'integer', 'default': 5}}}}},
        'ports': {'type': 'array', 'items': {'type': 'object', 'properties': {
            'port': {'type': 'integer'}, 'protocol': {'type': 'string', 'default': 'TCP'}}}},
        'pools': {'type': 'object', 'additionalProperties': {'type': 'object', 'properties': {
            'weight': {'type': 'integer', 'default': 1}}}}}},
    'status': {'type': 'object', 'properties': {
        'ready': {'type': 'boolean'}, 'phase': {'type': 'string', 'default': 'Pending'}}}}}
WIDGET_DEFAULTS = {'size': 3, 'enabled': True, 'color': 'blue', 'note': 'none', 'limits': {'cpu': '1'}}


def widget_crd(schema=WIDGET_SCHEMA):
    return {'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
            'metadata': {'name': 'widgets.defaults.example.com'},
            'spec': {'group': 'defaults.example.com', 'scope': 'Namespaced',
                     'names': {'plural': 'widgets', 'singular': 'widget', 'kind': 'Widget'},
                     'versions': [{'name': 'v1', 'served': True, 'storage': True, 'subresources': {'status': {}},
                                   'schema': {'openAPIV3Schema': schema}}]}}


def widget(ns, name, spec=None):
    return {'apiVersion': 'defaults.example.com/v1', 'kind': 'Widget', 'metadata': {'name': name, 'namespace': ns},
            **({'spec': spec} if spec is not None else {})}


@pytest.fixture
def widgets(emulator):
    emulator.apply(widget_crd())
    yield f'{WIDGETS}/namespaces'
    emulator.delete('/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.defaults.example.com')


def test_crd_schema_defaults_on_create(emulator, namespace, widgets):
    # nothing given: the defaulted spec, and its defaulted `limits`; no `config`, `ports` or `pools`
    bare = emulator.create(widget(namespace, 'bare'))
    assert bare['spec'] == WIDGET_DEFAULTS and 'status' not in bare
    assert emulator.get(f'{widgets}/{namespace}/widgets/bare') == bare
    # explicit values are kept (false and 0 too); defaults go into present objects, array items and map values
    given = emulator.create(widget(namespace, 'given', {
        'size': 0, 'enabled': False, 'color': None, 'note': None, 'limits': {'cpu': '2'}, 'config': {},
        'ports': [{'port': 80}, {'port': 53, 'protocol': 'UDP'}], 'pools': {'a': {}, 'b': {'weight': 7}}}))
    assert given['spec'] == {
        'size': 0, 'enabled': False, 'color': 'blue', 'note': None, 'limits': {'cpu': '2'},
        'config': {'mode': 'fast'},  # `tuning` is absent and has no default: nothing beneath it
        'ports': [{'port': 80, 'protocol': 'TCP'}, {'port': 53, 'protocol': 'UDP'}],
        'pools': {'a': {'weight': 1}, 'b': {'weight': 7}}}
    # server-side apply that creates, and kubectl create -f, are defaulted the same way
    applied = emulator.apply(widget(namespace, 'applied', {'config': {'tuning': {}}}))
    assert applied['spec'] == {**WIDGET_DEFAULTS, 'config': {'mode': 'fast', 'tuning': {'level': 5}}}
    emulator.kubectl('create', '-f', '-', input=json.dumps(widget(namespace, 'kubectl', {'size': 9})))
    assert emulator.get(f'{widgets}/{namespace}/widgets/kubectl')['spec'] == {**WIDGET_DEFAULTS, 'size': 9}


def test_crd_schema_defaults_on_update(emulator, namespace, widgets):
    path = f'{widgets}/{namespace}/widgets/w'
    emulator.apply(widget(namespace, 'w', {'size': 5}))
    # a removed field gets its default back, as on a real server (every write is defaulted)
    removed = emulator.patch(path, {'spec': {'size': None}})
    assert removed['spec'] == WIDGET_DEFAULTS and removed['metadata']['generation'] == 2
    replaced = emulator.put(path, {**widget(namespace, 'w', {'ports': [{'port': 1}]}),
                                   'metadata': removed['metadata']})
    assert replaced['spec'] == {**WIDGET_DEFAULTS, 'ports': [{'port': 1, 'protocol': 'TCP'}]}
    # re-applying what is there (defaults included) changes nothing
    emulator.clear_writes()
    emulator.apply(widget(namespace, 'w', {'ports': [{'port': 1}]}))
    assert [w['changed'] for w in emulator.writes()] == [False]


def test_status_writes_default_status_but_not_spec(emulator, namespace, widgets):
    path = f'{widgets}/{namespace}/widgets/w'
    created = emulator.create(widget(namespace, 'w'))
    # the schema gains a spec default after the object was stored
    schema = json.loads(json.dumps(WIDGET_SCHEMA))
    schema['properties']['spec']['properties']['extra'] = {'type': 'string', 'default': 'x'}
    emulator.apply(widget_crd(schema))
    after_status = emulator.patch_status(path, {'ready': True})
    assert after_status['status'] == {'ready': True, 'phase': 'Pending'}
    assert after_status['spec'] == created['spec'] and after_status['metadata']['generation'] == 1
    # the next main-resource write gets it
    after_label = emulator.patch(path, {'metadata': {'labels': {'a': 'b'}}})
    assert after_label['spec'] == {**WIDGET_DEFAULTS, 'extra': 'x'}
    assert after_label['status'] == after_status['status']


def test_clawdbot_gets_the_defaults_of_its_crd_file(emulator, namespace):
    if not CLAWDBOT_CRD.exists():
        pytest.skip(f'{CLAWDBOT_CRD} is missing')
    crd = yaml.safe_load(CLAWDBOT_CRD.read_text())
    schema = next(v for v in crd['spec']['versions'] if v['name'] == 'v1alpha1')['schema']['openAPIV3Schema']
    spec_props = schema['properties']['spec']['properties']
    bot = clawdbot(namespace, name='defaulted')
    del bot['spec']['replicas']
    created = emulator.create(bot)
    # every top-level spec field that the file gives a default shows up
    assert {k for k, p in spec_props.items() if p.get('default') is not None} <= set(created['spec'])
    if spec_props['replicas'].get('default') != 1:
        pytest.skip('the ClawdBot CRD file does not declare spec.replicas default 1 (yet)')
    assert created['spec']['replicas'] == 1
    applied = emulator.apply({**bot, 'metadata': {**bot['metadata'], 'name': 'applied'}})
    assert applied['spec']['replicas'] == 1
    assert emulator.create(clawdbot(namespace, name='three', replicas=3))['spec']['replicas'] == 3


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # kmock's bundled-resources loader
def test_unreadable_crd_file_warns_and_clawdbot_is_served_without_defaults(tmp_path, capsys):
    widget_file = tmp_path / 'widgets.yaml'
    widget_file.write_text(yaml.safe_dump_all([{'kind': 'ConfigMap'}, widget_crd()]))

    async def build():
        return emulator_module.build_emulator([tmp_path / 'missing.yaml', widget_file])
    emu = asyncio.run(build())
    assert 'warning: ignoring CRD file' in capsys.readouterr().err
    assert 'clawdbot.io/v1alpha1/clawdbots' in emu.resources
    assert [f'{r.group}/{r.version}/{r.plural}' for r in emu.schemas] == ['defaults.example.com/v1/widgets']


def test_metadata_only_requests_get_partial_object_metadata(emulator, namespace):
    # kube-rs's metadata watches and get_metadata ask for PartialObjectMetadata;
    # a real API server then sends metadata only (not the whole object).
    import urllib.request
    emulator.create({'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': 'm', 'namespace': namespace,
                                                                          'labels': {'a': 'b'}},
                     'data': {'big': 'x' * 1000}})
    accept = 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1'

    def get(path):
        req = urllib.request.Request(emulator.url + path, headers={'Accept': accept})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.readline() if 'watch' in path else r.read())

    one = get(f'/api/v1/namespaces/{namespace}/configmaps/m')
    assert (one['kind'], one['apiVersion']) == ('PartialObjectMetadata', 'meta.k8s.io/v1')
    assert one['metadata']['labels'] == {'a': 'b'} and 'data' not in one
    lst = get(f'/api/v1/namespaces/{namespace}/configmaps')
    assert lst['kind'] == 'PartialObjectMetadataList' and lst['items'][0]['metadata']['name'] == 'm'
    assert 'data' not in lst['items'][0]
    event = get(f'/api/v1/namespaces/{namespace}/configmaps?watch=true&timeoutSeconds=1')
    assert event['type'] == 'ADDED' and event['object']['kind'] == 'PartialObjectMetadata'
    assert 'data' not in event['object']
    # Without the header: the whole object.
    assert emulator.get(f'/api/v1/namespaces/{namespace}/configmaps/m')['data']['big'] == 'x' * 1000
