#!/usr/bin/env python3
"""Kubernetes API emulator for the clawdbot-operator end-to-end tests.

    python emulator.py --port 0 --kubeconfig /tmp/kubeconfig [--crd FILE ...]

kmock 0.8 supplies the HTTP server, the resource registry with bundled discovery
data (a k3s cluster's built-in APIs) and the discovery endpoints. Its stock object
handlers are too loose for kube-rs and kubectl (see README.md), so every request
for objects (`/api/v1/...`, `/apis/<group>/<version>/...` with a resource) is
served by the compatibility layer below instead; everything else (discovery,
/version) still goes through kmock, with a few fixes.
"""
import argparse
import asyncio
import bisect
import copy
import datetime
import json
import pathlib
import random
import re
import string
import sys
import uuid

import aiohttp.web
import jsonpatch
import jsonpointer
import kmock
import yaml

CRD = kmock.resource('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')
NAMESPACES = kmock.resource('', 'v1', 'namespaces')
VERBS = {'create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'}
BOOKMARK_EVERY = 5.0  # seconds of watch idleness before a BOOKMARK (only if the client allows them)
# The ClawdBot CRD, whose schema defaults the emulator applies (the repository root is two levels up).
CLAWDBOT_CRD = pathlib.Path(__file__).resolve().parents[2] / 'crds' / 'clawdbot.io_clawdbots.yaml'

# Matches /api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]] and /apis/GROUP/VERSION/...
PATH = re.compile(r'^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))'
                  r'(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$')


class ApiError(Exception):
    """Answered as a metav1.Status body, the form kube-rs and kubectl parse."""
    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status_body(code, reason, message):
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': message, 'reason': reason, 'code': code}


def now():
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def merge(target, patch):
    """JSON merge patch (RFC 7386), also used for server-side apply: the applied
    object's fields replace, dicts merge recursively, lists are replaced wholesale
    and null deletes. Returns a new object; `target` is not modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def normalize(obj):
    """Drop empty metadata lists/maps, as Go's omitempty does on a real server: kube-runtime's finalizer()
    tests `/metadata/finalizers` for null once its list is empty, which must then pass."""
    meta = obj['metadata']
    for field in ('labels', 'annotations', 'finalizers', 'ownerReferences'):
        if field in meta and not meta[field]:
            del meta[field]
    return {k: v for k, v in obj.items() if v is not None}


def apply_defaults(value, schema):
    """Structural-schema defaulting, as kube-apiserver applies a CRD's openAPIV3Schema (apiextensions-apiserver's
    defaulting.Default): in an object, each property with a non-null `default` that is absent, or null while not
    `nullable`, gets a copy of the default; then every field is defaulted by its property's schema (else by
    `additionalProperties`) and every array element by `items`. So defaults are defaulted in turn, and nothing
    is set beneath an absent parent that has no default itself. Modifies `value` in place."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get('properties') or {}
        for key, prop in props.items():
            if isinstance(prop, dict) and prop.get('default') is not None and \
                    (key not in value or (value[key] is None and not prop.get('nullable'))):
                value[key] = copy.deepcopy(prop['default'])
        for key, field in value.items():
            apply_defaults(field, props[key] if key in props else schema.get('additionalProperties'))
    elif isinstance(value, list):
        for item in value:
            apply_defaults(item, schema.get('items'))


def version_key(version):
    """Kubernetes version priority (v2 > v1 > v1beta2 > v1beta1 > v1alpha1), for sorting."""
    m = re.fullmatch(r'v(\d+)(?:(alpha|beta)(\d+))?', version)
    if not m:
        return (0, 0, 0)
    return ({'alpha': 1, 'beta': 2}.get(m[2], 3), int(m[1]), int(m[3] or 0))


def parse_label_selector(text):
    """labelSelector -> predicate over a labels dict (=, ==, !=, in, notin, exists, !exists)."""
    tests = []
    for part in filter(str.strip, re.split(r',(?![^(]*\))', text or '')):
        if m := re.fullmatch(r'\s*!\s*([\w./-]+)\s*', part):
            tests.append(lambda l, k=m[1]: k not in l)
        elif m := re.fullmatch(r'\s*([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*', part):
            values = {v.strip() for v in m[3].split(',')}
            tests.append(lambda l, k=m[1], vs=values, neg=m[2] == 'notin': (l.get(k) in vs) != neg)
        elif m := re.fullmatch(r'\s*([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)\s*', part):
            tests.append(lambda l, k=m[1], v=m[3], neg=m[2] == '!=': (l.get(k) == v) != neg)
        elif m := re.fullmatch(r'\s*([\w./-]+)\s*', part):
            tests.append(lambda l, k=m[1]: k in l)
        else:
            raise ApiError(400, 'BadRequest', f'unable to parse requirement: {part!r}')
    return lambda labels: all(t(labels or {}) for t in tests)


def parse_field_selector(text):
    """fieldSelector -> predicate over an object; any dotted path (metadata.name, ...), =, ==, !=."""
    tests = []
    for part in filter(str.strip, (text or '').split(',')):
        m = re.fullmatch(r'\s*([\w.]+)\s*(!=|==|=)\s*(.*?)\s*', part)
        if not m:
            raise ApiError(400, 'BadRequest', f'invalid field selector: {part!r}')

        def test(obj, path=m[1].split('.'), value=m[3], neg=m[2] == '!='):
            for step in path:
                obj = obj.get(step) if isinstance(obj, dict) else None
            return (str(obj if obj is not None else '') == value) != neg
        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


def metadata_only(raw):
    """Whether the client asked for metadata only (`Accept: application/json;as=PartialObjectMetadata
    [List];g=meta.k8s.io;v=v1`), as kube-rs's metadata watches and `get_metadata` do."""
    return 'as=PartialObjectMetadata' in raw.headers.get('Accept', '')


def as_partial(obj):
    """An object or list as the API server answers a metadata-only request: PartialObjectMetadata
    (List), `meta.k8s.io/v1`, metadata and nothing else."""
    if 'items' in obj:
        return {'kind': 'PartialObjectMetadataList', 'apiVersion': 'meta.k8s.io/v1',
                'metadata': obj.get('metadata', {}), 'items': [as_partial(o) for o in obj['items']]}
    return {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': obj['metadata']}


class Emulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.rv = 0  # global resourceVersion counter, like etcd's revision
        self.store = {}  # (resource, namespace or '', name) -> object; committed objects are never mutated
        self.events = []  # (rv, resource, type, object, previous object): all watch events ever, for resuming
        self.tick = asyncio.Event()  # replaced after every commit; watchers wait on it
        self.writes = []  # the test-observable log of writes
        self.requests = []  # every request, reads and watches included (the chart's RBAC test)
        self.dry_run = False  # set while serving a ?dryRun=All request: compute the answer, commit nothing
        self.schemas = {}  # resource -> its CRD's openAPIV3Schema (for defaulting); none for built-in types

    # --- kmock discovery, fixed --------------------------------------------------------------------

    async def _serve_version(self, request):  # /api/v1 and /apis/<group>/<version>
        doc = await super()._serve_version(request)
        doc['groupVersion'] = doc['groupVersion'].lstrip('/')  # stock says "/v1" for the core group
        for entry in doc['resources']:
            entry['namespaced'] = bool(entry['namespaced'])
            entry['verbs'] = sorted(entry['verbs'])
            if '/' in entry['name']:  # subresources: no short names (kubectl would resolve them too)
                entry.update(shortNames=[], categories=[], verbs=['get', 'patch', 'update'])
            if entry['name'].endswith('/scale'):
                entry.update(group='autoscaling', version='v1', kind='Scale')
        doc['resources'].sort(key=lambda entry: entry['name'])
        return doc

    def _group_doc(self, group):
        # Stock picks the "preferred" version from an unordered set; use Kubernetes' priority order.
        versions = sorted({r.version for r in self.resources if r.group == group}, key=version_key, reverse=True)
        entries = [{'groupVersion': f'{group}/{v}', 'version': v} for v in versions]
        return {'name': group, 'versions': entries, 'preferredVersion': entries[0]}

    async def _serve_api(self, request):  # k8s-openapi's APIVersions requires serverAddressByClientCIDRs
        return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
            {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{request.url.host}:{request.url.port}'}]}

    async def _serve_apis(self, request):
        groups = sorted({r.group for r in self.resources if r.group})
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': [self._group_doc(g) for g in groups]}

    async def _serve_group(self, request):
        if not any(r.group == request.resource.group for r in self.resources):
            raise kmock.KubernetesResourceNotFoundError()
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._group_doc(request.resource.group)}

    server_version = (1, 35, 0)  # what GET /version reports (--kube-version)

    async def _serve_server_version(self, request):
        major, minor, patch = self.server_version
        return {'major': str(major), 'minor': str(minor), 'emulationMajor': str(major), 'emulationMinor': str(minor),
                'minCompatibilityMajor': str(major), 'minCompatibilityMinor': str(minor - 1),
                'gitVersion': f'v{major}.{minor}.{patch}',
                'gitCommit': '0' * 40, 'gitTreeState': 'clean', 'buildDate': '2025-12-17T00:00:00Z',
                'goVersion': 'go1.25.5', 'compiler': 'gc', 'platform': 'linux/amd64'}

    async def _render_error(self, exc):  # stock reasons ("Endpoint Not Found") are not Kubernetes reasons
        code = getattr(exc, 'status', 500)
        reason, message = ('NotFound', 'the server could not find the requested resource') if code == 404 \
            else ('InternalError', repr(exc))
        return aiohttp.web.json_response(status_body(code, reason, message), status=code)

    def _openapi_v3(self, gv_path):
        """Just enough OpenAPI v3 for kubectl to see that PATCH takes `fieldValidation`: it then leaves
        validation to the server (which does none) instead of failing to download schemas."""
        gvs = {(f'apis/{r.group}/{r.version}' if r.group else 'api/v1'): r for r in self.resources}
        if not gv_path:
            return aiohttp.web.json_response({'paths': {p: {'serverRelativeURL': f'/openapi/v3/{p}?hash=0'}
                                                        for p in sorted(gvs)}})
        if gv_path not in gvs:
            return aiohttp.web.json_response(status_body(404, 'NotFound', 'no such OpenAPI document'), status=404)
        paths = {}
        for res in (r for r in self.resources if gvs[gv_path].group == r.group and gvs[gv_path].version == r.version):
            info = self.resources[res]
            gvk = {'group': res.group, 'version': res.version, 'kind': info.kind}
            patch = {'x-kubernetes-group-version-kind': gvk, 'responses': {'200': {'description': 'OK'}},
                     'parameters': [{'name': 'fieldValidation', 'in': 'query', 'schema': {'type': 'string'}}]}
            ns = '/namespaces/{namespace}' if info.namespaced else ''
            paths[f'/{gv_path}{ns}/{res.plural}/{{name}}'] = {'patch': patch}
        return aiohttp.web.json_response({'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': 'v1.35.0'},
                                          'paths': paths, 'components': {'schemas': {}}})

    # --- request entry: objects are served here, everything else by kmock ---------------------------

    async def __call__(self, raw):
        if raw.path == '/_emulator/writes':
            if raw.method == 'DELETE':
                self.writes.clear()
            return aiohttp.web.json_response(self.writes)
        if raw.path == '/_emulator/requests':
            if raw.method == 'DELETE':
                self.requests.clear()
            return aiohttp.web.json_response(self.requests)
        self.requests.append({'method': raw.method, 'path': raw.path, 'query': raw.query_string,
                              'userAgent': raw.headers.get('User-Agent', '')})
        if raw.path in ('/healthz', '/livez', '/readyz'):
            return aiohttp.web.Response(text='ok')
        if raw.path.startswith('/openapi/v3'):
            return self._openapi_v3(raw.path.removeprefix('/openapi/v3').strip('/'))
        m = PATH.match(raw.path)
        if m is None:  # discovery, /version, ...: kmock
            return await super().__call__(raw)
        route = dict(group=m['group'] or '', version=m['version'] or 'v1', ns=m['ns'], plural=m['plural'],
                     name=m['name'], sub=m['sub'])
        if m['core'] and m['ns'] and m['plural'] in ('status', 'finalize') and not m['name']:
            route.update(ns=None, plural='namespaces', name=m['ns'], sub=m['plural'])  # /namespaces/X/status
        write = {'time': now(), 'method': raw.method, 'path': raw.path, 'query': raw.query_string,
                 'fieldManager': raw.query.get('fieldManager'), 'internal': False}
        await raw.read()  # the last wait before serving: from here on no other request can commit in between
        rv_before, self.dry_run = self.rv, 'dryRun' in raw.query
        try:
            result = await self._serve(raw, route)
        except ApiError as e:
            result = aiohttp.web.json_response(status_body(e.code, e.reason, e.message), status=e.code)
        finally:
            self.dry_run = False
        if raw.method in ('POST', 'PUT', 'PATCH', 'DELETE'):
            self.writes.append({**write, 'code': result.status, 'changed': self.rv != rv_before})
        return result

    async def _serve(self, raw, route):
        res = kmock.resource(route['group'], route['version'], route['plural'])
        info = self.resources[res] if res in self.resources else None
        if info is None or (route['ns'] and not info.namespaced):
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        if route['sub'] and route['sub'] not in info.subresources & {'status', 'scale'}:
            raise ApiError(404, 'NotFound', 'the server could not find the requested resource')
        ns = route['ns'] or ''
        key = (res, ns, route['name'])
        q = raw.query
        if raw.method == 'GET' and q.get('watch') in ('1', 'true'):
            return await self._watch(raw, res, info, ns, route['name'], q, metadata_only(raw))
        body = await raw.read()
        if body and ('protobuf' in raw.content_type or 'cbor' in raw.content_type):
            # kubectl's typed commands (create namespace/configmap/...) send protobuf; without the schemas it
            # cannot be decoded, so refuse it plainly (kube-rs and `kubectl create/apply -f` send JSON)
            raise ApiError(415, 'UnsupportedMediaType', f'the body content type {raw.content_type} is not supported')
        try:
            body = json.loads(body) if body else None
        except ValueError:
            try:
                body = yaml.safe_load(body)
            except yaml.YAMLError as e:
                raise ApiError(400, 'BadRequest', f'cannot parse the body: {e}')
        answer = None
        if raw.method == 'GET' and route['name'] is None:
            answer = 200, self._list(res, info, ns, q)
        elif raw.method == 'GET':
            answer = 200, self._scale(res, info, self._get(key)) if route['sub'] == 'scale' else self._get(key)
        elif raw.method == 'POST' and route['name'] is None and (ns or not info.namespaced):
            answer = 201, self._create(res, info, ns, body)
        elif raw.method == 'DELETE' and route['name'] is None:
            deleted = [self._delete(k, body, q) for k, o in self._select(res, ns, q)]
            answer = 200, {'kind': f'{info.kind}List', 'apiVersion': self._gv(res), 'items': deleted}
        elif raw.method == 'DELETE':
            answer = 200, self._delete(key, body, q)
        elif raw.method in ('PUT', 'PATCH') and route['name']:
            answer = self._update(res, info, key, route['sub'], raw.method, raw.content_type, body, q)
        if answer is None:
            raise ApiError(405, 'MethodNotAllowed', f'{raw.method} is not supported on {raw.path}')
        if raw.method == 'GET' and not route['sub'] and metadata_only(raw):
            answer = answer[0], as_partial(answer[1])
        return aiohttp.web.json_response(answer[1], status=answer[0])

    # --- reads --------------------------------------------------------------------------------------

    @staticmethod
    def _gv(res):
        return f'{res.group}/{res.version}' if res.group else res.version

    def _not_found(self, res, name):
        return ApiError(404, 'NotFound', f'{res.plural}{"." + res.group if res.group else ""} "{name}" not found')

    def _get(self, key):
        if key not in self.store:
            raise self._not_found(key[0], key[2])
        return self.store[key]

    def _select(self, res, ns, q, name=None):
        """(key, object) pairs of one resource, filtered by namespace, name and selectors."""
        labels = parse_label_selector(q.get('labelSelector'))
        fields = parse_field_selector(q.get('fieldSelector'))
        return sorted(((k, o) for k, o in self.store.items() if k[0] == res and (not ns or k[1] == ns)
                       and (name is None or k[2] == name) and labels(o['metadata'].get('labels'))
                       and fields(o)), key=lambda pair: pair[0][1:])

    def _list(self, res, info, ns, q):
        return {'kind': f'{info.kind}List', 'apiVersion': self._gv(res),
                'metadata': {'resourceVersion': str(self.rv)}, 'items': [o for _, o in self._select(res, ns, q)]}

    def _scale(self, res, info, obj):
        """The autoscaling/v1 Scale view, with the paths the ClawdBot CRD declares for its scale subresource."""
        selector = obj.get('status', {}).get('selector')
        if selector is None:  # Deployments: from spec.selector.matchLabels
            selector = ','.join(f'{k}={v}' for k, v in obj.get('spec', {}).get('selector', {})
                                .get('matchLabels', {}).items())
        meta = {k: v for k, v in obj['metadata'].items() if k in ('name', 'namespace', 'uid', 'resourceVersion',
                                                                  'creationTimestamp')}
        return {'kind': 'Scale', 'apiVersion': 'autoscaling/v1', 'metadata': meta,
                'spec': {'replicas': obj.get('spec', {}).get('replicas', 0)},
                'status': {'replicas': obj.get('status', {}).get('replicas', 0), 'selector': selector}}

    # --- writes -------------------------------------------------------------------------------------

    def _commit(self, key, etype, new, old):
        """Every change goes through here: bump the global resourceVersion, store, wake the watchers."""
        if self.dry_run:
            return new
        self.rv += 1
        new = {**new, 'metadata': {**new['metadata'], 'resourceVersion': str(self.rv)}}
        if etype == 'DELETED':
            del self.store[key]
        else:
            self.store[key] = new
        if key[0] == CRD:
            self._register_crd(new, etype == 'DELETED')
        self.events.append((self.rv, key[0], etype, new, old))
        self.tick.set()
        self.tick = asyncio.Event()
        refs = new['metadata'].get('ownerReferences') or []
        if etype == 'ADDED' and refs:
            # The real garbage collector also deletes objects created with owners that are already
            # gone (e.g. a controller that applied a child just after its owner was deleted).
            asyncio.get_running_loop().call_soon(self._collect_dangling, key, new['metadata']['uid'])
        return new

    def _collect_dangling(self, key, uid):
        obj = self.store.get(key)
        if obj is None or obj['metadata']['uid'] != uid:
            return
        uids = {o['metadata']['uid'] for o in self.store.values()}
        if any(r.get('uid') in uids for r in obj['metadata'].get('ownerReferences') or []):
            return
        res, ns, name = key
        path = (f'/apis/{res.group}/{res.version}' if res.group else '/api/v1') + \
            (f'/namespaces/{ns}' if ns else '') + f'/{res.plural}/{name}'
        self._delete(key, None, {})
        self.writes.append({'time': now(), 'path': path, 'query': '', 'fieldManager': 'garbage-collector',
                            'internal': True, 'code': 200, 'changed': True, 'method': 'DELETE'})

    def _check_body(self, res, info, body, name=None):
        if not isinstance(body, dict):
            raise ApiError(400, 'BadRequest', 'the body must be an object')
        gv, kind = body.get('apiVersion'), body.get('kind')
        if (gv and gv != self._gv(res)) or (kind and kind != info.kind):
            raise ApiError(400, 'BadRequest', f'the API version/kind {gv}/{kind} does not match the expected '
                                              f'{self._gv(res)}/{info.kind}')
        if name and body.get('metadata', {}).get('name') not in (None, name):
            raise ApiError(400, 'BadRequest', 'the name of the object does not match the name on the URL')

    def _create(self, res, info, ns, body):
        self._check_body(res, info, body)
        obj = copy.deepcopy(body)
        apply_defaults(obj, self.schemas.get(res))  # like the real server, before anything else looks at it
        meta = obj.setdefault('metadata', {})
        if not meta.get('name') and meta.get('generateName'):
            meta['name'] = meta['generateName'] + ''.join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if not meta.get('name'):
            raise ApiError(422, 'Invalid', 'metadata.name: Required value: name or generateName is required')
        if meta.get('namespace', ns) != ns and info.namespaced:
            raise ApiError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace '
                                              'sent on the request')
        key = (res, ns, meta['name'])
        if key in self.store:
            qualified = f'{res.plural}{"." + res.group if res.group else ""}'
            raise ApiError(409, 'AlreadyExists', f'{qualified} "{meta["name"]}" already exists')
        for field in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields'):
            meta.pop(field, None)
        if ns:
            meta['namespace'] = ns
        else:
            meta.pop('namespace', None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj.update(apiVersion=self._gv(res), kind=info.kind)
        if 'status' in info.subresources:  # like the real server: status is only written via /status
            obj.pop('status', None)
        if res == NAMESPACES:
            obj['status'] = {'phase': 'Active'}
        obj = normalize(obj)
        if res == CRD:  # nothing establishes CRDs here; say they are, so clients waiting for it go on
            names = obj.setdefault('spec', {}).get('names', {})
            stored = [v.get('name') for v in obj['spec'].get('versions', []) if v.get('storage')]
            obj['status'] = {'acceptedNames': names, 'storedVersions': stored,
                             'conditions': [{'type': t, 'status': 'True', 'reason': t, 'message': '',
                                             'lastTransitionTime': now()} for t in ('NamesAccepted', 'Established')]}
        return self._commit(key, 'ADDED', obj, None)

    def _update(self, res, info, key, sub, method, ctype, body, q):
        """PUT and PATCH (merge, strategic merge as merge, JSON patch, server-side apply) -> (code, object)."""
        apply = ctype == 'application/apply-patch+yaml'
        if apply and not q.get('fieldManager'):
            raise ApiError(400, 'BadRequest', 'PATCH, fieldManager is required for apply requests')
        if (apply or method == 'PUT') and sub != 'scale':
            self._check_body(res, info, body, key[2])
        old = self.store.get(key)
        if old is None:
            if apply and not sub:  # server-side apply creates
                return 201, self._create(res, info, key[1], {**body, 'metadata': {**body.get('metadata', {}),
                                                                                   'name': key[2]}})
            raise self._not_found(res, key[2])
        base = self._scale(res, info, old) if sub == 'scale' else old
        if method == 'PUT' or apply:
            cand = merge(base, body) if apply else copy.deepcopy(body)
        elif ctype == 'application/json-patch+json':
            cand = self._json_patch(base, body)
        elif ctype in ('application/merge-patch+json', 'application/strategic-merge-patch+json'):
            cand = merge(base, body)
        else:
            raise ApiError(415, 'UnsupportedMediaType', f'the media type {ctype!r} is not supported')
        if sub != 'scale':  # the whole result is defaulted; a /status write then takes only its status
            apply_defaults(cand, self.schemas.get(res))
        given_rv = cand.get('metadata', {}).get('resourceVersion')
        if given_rv and given_rv != base['metadata']['resourceVersion']:
            raise ApiError(409, 'Conflict', f'Operation cannot be fulfilled on {res.plural} "{key[2]}": the object '
                                            'has been modified; please apply your changes to the latest version '
                                            'and try again')
        new = copy.deepcopy(old)
        if sub == 'scale':
            new.setdefault('spec', {})['replicas'] = cand.get('spec', {}).get('replicas')
        elif sub == 'status':  # /status writes only status
            new['status'] = cand.get('status')
        else:  # main resource: everything but status (if it is a subresource) and server-owned metadata
            meta = {**cand.get('metadata', {}), **{k: old['metadata'].get(k) for k in (
                'name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'resourceVersion',
                'deletionTimestamp', 'deletionGracePeriodSeconds')}}
            new = {**cand, 'apiVersion': old['apiVersion'], 'kind': old['kind'],
                   'metadata': {k: v for k, v in meta.items() if v is not None}}
            if 'status' in info.subresources:
                new['status'] = old.get('status')
        new = normalize(new)
        if new == old:  # a no-op write: no new resourceVersion, no watch event
            return 200, self._scale(res, info, old) if sub == 'scale' else old
        if {k: v for k, v in new.items() if k not in ('metadata', 'status')} != \
                {k: v for k, v in old.items() if k not in ('metadata', 'status')}:
            new['metadata']['generation'] = old['metadata'].get('generation', 1) + 1
        new = self._commit(key, 'MODIFIED', new, old)
        if new['metadata'].get('deletionTimestamp') and not new['metadata'].get('finalizers'):
            self._remove(key, 'Background')  # the last finalizer is gone
        return 200, self._scale(res, info, new) if sub == 'scale' else new

    @staticmethod
    def _json_patch(obj, ops):
        if not isinstance(ops, list):
            raise ApiError(400, 'BadRequest', 'a JSON patch must be a list of operations')
        # Like the real server, `test` of null on a missing path passes (kube-runtime's finalizer() does that).
        ops = [op for op in ops if not (op.get('op') == 'test' and op.get('value') is None
                                        and jsonpointer.resolve_pointer(obj, op.get('path', ''), None) is None)]
        try:
            return jsonpatch.apply_patch(obj, ops)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise ApiError(422, 'Invalid', f'the JSON patch failed: {e}')

    def _delete(self, key, body, q):
        obj = self._get(key)
        opts = {**(body if isinstance(body, dict) else {}), **{k: v for k, v in q.items() if k == 'propagationPolicy'}}
        for field, value in (opts.get('preconditions') or {}).items():
            if value and obj['metadata'].get(field) != value:
                raise ApiError(409, 'Conflict', f'Precondition failed: {field} in precondition: {value}, '
                                                f'{field} in object meta: {obj["metadata"].get(field)}')
        if obj['metadata'].get('finalizers'):  # mark; the object goes when its finalizers are removed
            if obj['metadata'].get('deletionTimestamp'):
                return obj
            new = copy.deepcopy(obj)
            new['metadata'].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            return self._commit(key, 'MODIFIED', new, obj)
        return self._remove(key, opts.get('propagationPolicy') or 'Background')

    def _remove(self, key, policy):
        gone = self._commit(key, 'DELETED', self.store[key], self.store[key])
        if self.dry_run:
            return gone
        # Garbage collection runs after the response, as the real garbage collector does (Foreground is
        # treated as Background). Deleting a namespace deletes everything in it, like the namespace controller.
        asyncio.get_running_loop().call_soon(self._collect, gone, policy)
        return gone

    def _collect(self, owner, policy):
        uid, uids = owner['metadata']['uid'], {o['metadata']['uid'] for o in self.store.values()}
        for key, obj in list(self.store.items()):
            refs = obj['metadata'].get('ownerReferences') or []
            in_ns = owner['kind'] == 'Namespace' and key[1] == owner['metadata']['name']
            if key not in self.store or not (in_ns or any(r.get('uid') == uid for r in refs)):
                continue
            res, ns, name = key
            path = (f'/apis/{res.group}/{res.version}' if res.group else '/api/v1') + \
                (f'/namespaces/{ns}' if ns else '') + f'/{res.plural}/{name}'
            log = {'time': now(), 'path': path, 'query': '', 'fieldManager': 'garbage-collector',
                   'internal': True, 'code': 200, 'changed': True}
            alive = [r for r in refs if r.get('uid') in uids]
            if not in_ns and (policy == 'Orphan' or alive):  # other owners remain: drop the dangling reference
                new = copy.deepcopy(obj)
                new['metadata']['ownerReferences'] = alive
                self._commit(key, 'MODIFIED', normalize(new), obj)
                self.writes.append({**log, 'method': 'PATCH'})
            else:
                self._delete(key, None, {})
                self.writes.append({**log, 'method': 'DELETE'})

    def _register_crd(self, crd, deleted):
        """Serve (or stop serving) the resources a CustomResourceDefinition declares, with their schemas."""
        spec = crd.get('spec', {})
        names = spec.get('names', {})
        for version in spec.get('versions', []):
            res = kmock.resource(spec.get('group'), version.get('name'), names.get('plural'))
            if deleted or not version.get('served', True):
                self.resources.pop(res, None)
                self.schemas.pop(res, None)
                continue
            self.schemas[res] = (version.get('schema') or {}).get('openAPIV3Schema')
            self.resources[res] = kmock.ResourceInfo(
                kind=names.get('kind'), singular=names.get('singular') or names.get('kind', '').lower(),
                namespaced=spec.get('scope') == 'Namespaced', verbs=VERBS, shortnames=names.get('shortNames', []),
                categories=names.get('categories', []), subresources=set(version.get('subresources') or {}))

    # --- watch --------------------------------------------------------------------------------------

    async def _watch(self, raw, res, info, ns, name, q, partial=False):
        since = q.get('resourceVersion')
        initial = q.get('sendInitialEvents') == 'true' or since in (None, '', '0')
        if not initial and not since.isdigit():
            raise ApiError(400, 'BadRequest', f'invalid resourceVersion {since!r}')
        labels = parse_label_selector(q.get('labelSelector'))
        fields = parse_field_selector(q.get('fieldSelector'))
        bookmarks = q.get('allowWatchBookmarks') in ('1', 'true')
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(q.get('timeoutSeconds') or 1800)

        def visible(obj):
            meta = obj['metadata']
            return ((not ns or meta.get('namespace') == ns) and (name is None or meta['name'] == name)
                    and labels(meta.get('labels')) and fields(obj))

        def bookmark(annotations=None):
            meta = {'resourceVersion': str(self.rv), **({'annotations': annotations} if annotations else {})}
            return {'type': 'BOOKMARK', 'object': {'kind': info.kind, 'apiVersion': self._gv(res), 'metadata': meta}}

        out = []  # events to send, collected synchronously, so nothing committed in between is missed
        if initial:
            start = self.rv
            out = [{'type': 'ADDED', 'object': o} for _, o in self._select(res, ns, q, name)]
            if q.get('sendInitialEvents') == 'true':
                out.append(bookmark({'k8s.io/initial-events-end': 'true'}))
        else:
            start = int(since)
        pos = bisect.bisect_right(self.events, start, key=lambda e: e[0])
        resp = aiohttp.web.StreamResponse(headers={'Content-Type': 'application/json'})
        await resp.prepare(raw)
        try:
            while True:
                tick = self.tick
                for _, eres, etype, obj, old in self.events[pos:]:
                    if eres != res:
                        continue
                    now_in, was_in = visible(obj), old is not None and visible(old)
                    if etype == 'MODIFIED' and now_in != was_in:  # moved in/out of the selection
                        etype = 'ADDED' if now_in else 'DELETED'
                    if now_in or (etype == 'DELETED' and was_in):
                        out.append({'type': etype, 'object': obj})
                pos = len(self.events)
                for event in out:
                    if partial:
                        event = {'type': event['type'], 'object': as_partial(event['object'])}
                    await resp.write(json.dumps(event).encode() + b'\n')
                out = []
                left = deadline - loop.time()
                if left <= 0 or raw.transport is None or raw.transport.is_closing():
                    break
                try:
                    await asyncio.wait_for(tick.wait(), min(left, BOOKMARK_EVERY))
                except TimeoutError:
                    if bookmarks:
                        out.append(bookmark())
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        return resp


def build_emulator(crd_files=(CLAWDBOT_CRD,)):
    """The emulator with the bundled built-in APIs, ClawdBot, and the CRDs in `crd_files` served as if installed
    (no CustomResourceDefinition objects are stored for them), with their schema defaults. ClawdBot is served
    even when its CRD file cannot be read, then without defaults."""
    emu = Emulator()
    emu.resources.load_bundled()
    emu.resources['clawdbot.io/v1alpha1/clawdbots'] = kmock.ResourceInfo(
        kind='ClawdBot', singular='clawdbot', namespaced=True, verbs=VERBS, shortnames={'cb'},
        categories={'clawdbot'}, subresources={'status', 'scale'})
    for path in crd_files:
        try:
            with open(path) as f:
                docs = list(yaml.load_all(f, Loader=getattr(yaml, 'CSafeLoader', yaml.SafeLoader)))
            crds = [d for d in docs if isinstance(d, dict) and d.get('kind') == 'CustomResourceDefinition']
            if not crds:
                raise ValueError('no CustomResourceDefinition in it')
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f'emulator: warning: ignoring CRD file {path}: {e} (its resources get no schema defaults; '
                  'ClawdBot is served regardless)', file=sys.stderr, flush=True)
            continue
        for crd in crds:
            emu._register_crd(crd, False)
    for ns in ('default', 'kube-system', 'kube-public'):
        emu._create(NAMESPACES, emu.resources[NAMESPACES], '', {'metadata': {'name': ns}})
    return emu


def kubeconfig(url):
    return {'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'emulator', 'preferences': {},
            'clusters': [{'name': 'emulator', 'cluster': {'server': url}}],
            'users': [{'name': 'emulator', 'user': {}}],
            'contexts': [{'name': 'emulator', 'context': {'cluster': 'emulator', 'user': 'emulator',
                                                          'namespace': 'default'}}]}


async def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, default=0, help='TCP port on 127.0.0.1 (0: a free one)')
    parser.add_argument('--kubeconfig', help='write a kubeconfig pointing at the emulator here')
    parser.add_argument('--crd', action='append', metavar='FILE',
                        help='serve the CustomResourceDefinitions in this YAML file, with their schema defaults '
                             f'(repeatable; replaces the default, {CLAWDBOT_CRD})')
    parser.add_argument('--kube-version', default='1.35.0', metavar='X.Y.Z',
                        help='the Kubernetes version GET /version reports (default 1.35.0)')
    args = parser.parse_args(argv)
    emu = build_emulator(args.crd or (CLAWDBOT_CRD,))
    emu.server_version = tuple(int(p) for p in args.kube_version.split('.'))
    async with emu, kmock.Server(emu, port=args.port or None) as server:
        url = f'http://127.0.0.1:{server.port}'
        if args.kubeconfig:
            with open(args.kubeconfig, 'w') as f:
                yaml.safe_dump(kubeconfig(url), f)
        print(f'listening on {url}', flush=True)
        await asyncio.Event().wait()


if __name__ == '__main__':
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
