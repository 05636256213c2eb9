"""The contract between what the operator renders for managed Redis and PostgreSQL and the real servers.

The official redis/postgres images cannot run here (no container engine), so this module takes the objects
the real operator writes to the emulator for a ClawdBot with `spec.redis.managed` and
`spec.database.managed.backup.enabled`, and runs them against the real redis-server, PostgreSQL,
bot-runtime, pg_dump and pg_restore of this machine:

- redis: `redis-server` started with the StatefulSet's container args, `$(VAR)` expanded from the
  container env (secretKeyRef -> the rendered Secret) the way the kubelet does, only `--dir` changed. An
  unauthenticated PING gets NOAUTH; the readiness probe's own `sh -c` command passes with the container's
  REDISCLI_AUTH and fails without it.
- postgres: a cluster of its own (pg_createcluster, initdb given the rendered POSTGRES_INITDB_ARGS), the role
  and database from the `<bot>-db` Secret, as the image's entrypoint makes them. TCP logins use SCRAM: a
  wrong password is refused, the Secret's one works.
- bot-runtime, given REDIS_URL and DATABASE_URL byte-for-byte from `<bot>-connections` (the Secret the
  Deployment's secretKeyRefs name), reports both ready, answers a chat (mock upstream model), writes the
  conversation row to PostgreSQL and the session to Redis.
- the backup CronJob's `sh -c` script, with its rendered env (only BACKUP_DIR and KEEP changed), writes
  dumps under distinct names, keeps the newest KEEP, leaves no `.partial`; the newest dump restores
  (`pg_restore --clean --if-exists --no-owner`, the documented procedure) into a fresh database as the
  application role, and the conversation row is in it.

Host names: the URLs name `<bot>-redis.<ns>.svc:6379` and `<bot>-db.<ns>.svc:5432`, the CronJob
`PGHOST=<bot>-db`. Everything runs in a private network + mount namespace (`unshare --net --mount`; we are
root) with its own loopback and a bind-mounted /etc/hosts mapping those names to 127.0.0.1, so redis listens
on 6379 and PostgreSQL on 5432 in there (the shared servers outside are untouched) and no URL is rewritten.
Commands enter it with `nsenter`. The cluster's Unix socket goes to a directory of its own.

The operator is the session's one (the `operator` fixture in conftest.py), shared with
test_operator_e2e.py; this module works in a namespace of its own.

Binaries: OPERATOR_BIN, BOT_RUNTIME_BIN, MOCK_UPSTREAM_BIN (default target/debug/...).
"""
import base64
import json
import os
import re
import secrets
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

import test_operator_e2e as e2e  # helpers only (bot, get_or_none)
from conftest import Emulator

sys.path.append(str(Path(__file__).resolve().parents[1]))
import pyharness as ph  # noqa: E402

wait_for = Emulator.wait_for
ROOT = Path(__file__).resolve().parents[2]
BOT = 'contract'
REPLY = 'Managed stores work.'
API_KEY = 'contract-key-1'
MESSAGE = 'hello from the managed contract test'
RUNTIME_PORT, MOCK_PORT = 18789, 18000  # inside the private network namespace


def binary(var, name):
    path = os.environ.get(var) or str(ROOT / 'target' / 'debug' / name)
    if not os.access(path, os.X_OK):
        pytest.fail(f'{name} not found at {path}: cargo build --workspace --bins, or set {var}', pytrace=False)
    return path


def clean_env(**extra):
    """This process's environment minus anything that would configure libpq, redis-cli or bot-runtime."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PG', 'REDIS', 'CLAWDBOT_', 'MODEL_', 'OPENAI_')) and k != 'DATABASE_URL'}
    return {**env, **extra}


def run(cmd, env=None, input=None, timeout=60, check=True):
    try:
        p = subprocess.run(cmd, env=env or clean_env(), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f'timed out after {timeout}s: {shlex.join(cmd)}', pytrace=False)
    if check and p.returncode != 0:
        pytest.fail(f'{shlex.join(cmd)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}', pytrace=False)
    return p


def expand(value, env):
    """The kubelet's $(VAR) expansion: `$$` is a literal `$`, an unknown $(VAR) stays as it is."""
    return re.sub(r'\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)',
                  lambda m: '$' if m[0] == '$$' else env.get(m[1], m[0]), value)


def container_env(container, secrets_by_name):
    """A container's env as the kubelet gives it: values, secretKeyRefs resolved, $(VAR) expanded."""
    env = {}
    for e in container.get('env', []):
        if 'valueFrom' in e:
            ref = e['valueFrom']['secretKeyRef']
            env[e['name']] = secrets_by_name[ref['name']][ref['key']]
        else:
            env[e['name']] = expand(e.get('value', ''), env)
    return env


# --- what the operator renders ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def rendered(emulator, operator):
    ns = f't-{uuid.uuid4().hex[:8]}'
    emulator.create({'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': ns}})
    emulator.create(e2e.bot(ns, BOT, {'redis': {'managed': {}},
                                      'database': {'managed': {'backup': {'enabled': True}}}}))
    core, apps = f'/api/v1/namespaces/{ns}', f'/apis/apps/v1/namespaces/{ns}'
    paths = {'redis_secret': f'{core}/secrets/{BOT}-redis', 'db_secret': f'{core}/secrets/{BOT}-db',
             'connections': f'{core}/secrets/{BOT}-connections',
             'redis_sts': f'{apps}/statefulsets/{BOT}-redis', 'db_sts': f'{apps}/statefulsets/{BOT}-db',
             'cronjob': f'/apis/batch/v1/namespaces/{ns}/cronjobs/{BOT}-db-backup',
             'deployment': f'{apps}/deployments/{BOT}'}
    objs = {}
    for key, path in paths.items():
        objs[key] = wait_for(lambda: e2e.get_or_none(emulator, path), timeout=30,
                             message=f'{path} (operator log: {operator["log"]})')
    secret_data = {o['metadata']['name']: {k: base64.b64decode(v).decode() for k, v in o.get('data', {}).items()}
                   for o in (objs['redis_secret'], objs['db_secret'], objs['connections'])}
    pod = lambda o: o['spec']['template']['spec']  # noqa: E731
    yield {'ns': ns, 'secrets': secret_data,
           'redis': pod(objs['redis_sts'])['containers'][0], 'postgres': pod(objs['db_sts'])['containers'][0],
           'backup': pod(objs['cronjob']['spec']['jobTemplate'])['containers'][0],
           'runtime': pod(objs['deployment'])['containers'][0]}
    emulator.request('DELETE', f'/api/v1/namespaces/{ns}')


def test_rendered_credentials_and_the_runtime_wiring(rendered):
    ns, s = rendered['ns'], rendered['secrets']
    redis_pw, db = s[f'{BOT}-redis']['password'], s[f'{BOT}-db']
    assert re.fullmatch(r'[0-9a-f]{48}', redis_pw), 'redis password: 48 hex characters'
    assert (db['username'], db['database']) == ('clawdbot', 'clawdbot') and len(db['password']) >= 32
    assert s[f'{BOT}-connections'] == {
        'redis-url': f'redis://:{redis_pw}@{BOT}-redis.{ns}.svc:6379/0',
        'database-url': f'postgres://clawdbot:{db["password"]}@{BOT}-db.{ns}.svc:5432/clawdbot'}
    refs = {e['name']: e.get('valueFrom', {}).get('secretKeyRef') for e in rendered['runtime']['env']}
    assert refs['REDIS_URL']['name'] == refs['DATABASE_URL']['name'] == f'{BOT}-connections'
    assert (refs['REDIS_URL']['key'], refs['DATABASE_URL']['key']) == ('redis-url', 'database-url')


# --- a private network namespace, with the Service names in its /etc/hosts ------------------------

class NetNs:
    def __init__(self, holder):
        self.holder = holder
        self.enter = ['nsenter', f'--target={holder.pid}', '--net', '--mount', '--']

    def run(self, cmd, **kw):
        return run(self.enter + cmd, **kw)

    def popen(self, cmd, log, env=None):
        with open(log, 'wb') as f:
            return subprocess.Popen(self.enter + cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    env=env or clean_env(), cwd=log.parent)

    def http(self, method, path, body=None, port=RUNTIME_PORT):
        cmd = ['curl', '-sS', '-m', '30', '-X', method, '-w', '\n%{http_code}', '-H', f'Authorization: Bearer {API_KEY}']
        if body is not None:
            cmd += ['-H', 'Content-Type: application/json', '--data-binary', json.dumps(body)]
        p = self.run(cmd + [f'http://127.0.0.1:{port}{path}'], check=False, timeout=40)
        text, _, code = p.stdout.rpartition('\n')
        return int(code or 0), text


@pytest.fixture(scope='module')
def netns(rendered, tmp_path_factory):
    s = rendered['secrets'][f'{BOT}-connections']
    names = {urllib.parse.urlsplit(s['redis-url']).hostname, urllib.parse.urlsplit(s['database-url']).hostname,
             next(e['value'] for e in rendered['backup']['env'] if e['name'] == 'PGHOST')}
    hosts = tmp_path_factory.mktemp('netns') / 'hosts'
    hosts.write_text(f'127.0.0.1 localhost\n::1 localhost\n127.0.0.1 {" ".join(sorted(names))}\n')
    setup = f'ip link set lo up && mount --bind {shlex.quote(str(hosts))} /etc/hosts && echo ready && exec sleep infinity'
    holder = subprocess.Popen(['unshare', '--net', '--mount', '--', 'sh', '-c', setup],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = select.select([holder.stdout], [], [], 10)[0] and holder.stdout.readline()
    if ready != 'ready\n':
        ph.stop(holder)
        pytest.fail(f'could not set up a network namespace (unshare --net --mount, as root): {ready!r}', pytrace=False)
    yield NetNs(holder)
    ph.stop(holder)


# --- redis, from the StatefulSet's args ------------------------------------------------------------

@pytest.fixture(scope='module')
def redis(rendered, netns, tmp_path_factory):
    c = rendered['redis']
    env = container_env(c, rendered['secrets'])
    args = [expand(a, env) for a in c['args']]
    workdir = tmp_path_factory.mktemp('redis')
    args[args.index('--dir') + 1] = str(workdir)
    proc = netns.popen(args, workdir / 'redis.log')
    probe = c['readinessProbe']['exec']['command']

    def ready():
        assert proc.poll() is None, f'redis-server {args} exited:\n{ph.tail(workdir / "redis.log")}'
        return netns.run(probe, env=clean_env(REDISCLI_AUTH=env['REDISCLI_AUTH']), check=False).returncode == 0
    try:
        wait_for(ready, timeout=20, interval=0.2, message='the redis readiness probe')
        yield {'env': env, 'probe': probe}
    finally:
        ph.stop(proc)


def redis_cli(netns, url, *args):
    """redis-cli on the parts of a redis:// URL (redis-cli 7.0's own -u sends AUTH with an empty user name for
    `redis://:PASSWORD@`, which redis refuses; redis-rs, in bot-runtime, sends AUTH PASSWORD)."""
    u = urllib.parse.urlsplit(url)
    cmd = ['redis-cli', '-h', u.hostname, '-p', str(u.port), '-n', u.path.lstrip('/') or '0', *args]
    return netns.run(cmd, env=clean_env(REDISCLI_AUTH=urllib.parse.unquote(u.password))).stdout.strip()


def test_managed_redis_requires_its_password(rendered, redis, netns):
    assert rendered['redis']['args'][0] == 'redis-server'
    assert 'NOAUTH' in netns.run(['redis-cli', '-h', '127.0.0.1', '-p', '6379', 'ping']).stdout
    assert netns.run(redis['probe'], check=False).returncode != 0, 'the probe passes without REDISCLI_AUTH'
    assert netns.run(redis['probe'], env=clean_env(REDISCLI_AUTH=redis['env']['REDISCLI_AUTH'])).returncode == 0
    assert redis_cli(netns, rendered['secrets'][f'{BOT}-connections']['redis-url'], 'ping') == 'PONG'


# --- PostgreSQL: a cluster of its own with password authentication --------------------------------

@pytest.fixture(scope='module')
def postgres(rendered, netns):
    env = container_env(rendered['postgres'], rendered['secrets'])
    version = max(os.listdir('/usr/lib/postgresql'), key=int)
    name = f'ctest{secrets.token_hex(4)}'
    base = Path(tempfile.mkdtemp(prefix='clawdbot-pg-'))
    os.chmod(base, 0o755)
    shutil.chown(base, 'postgres', 'postgres')
    sock = base / 'sock'
    port = str(urllib.parse.urlsplit(rendered['secrets'][f'{BOT}-connections']['database-url']).port)
    try:
        # ssl off and a socket directory of its own, as in the image; initdb gets the rendered args.
        run(['pg_createcluster', version, name, '-p', port, '-d', str(base / 'data'), '-s', str(sock),
             '-l', str(base / 'postgres.log'), '-o', 'ssl=off', '--',
             *shlex.split(env['POSTGRES_INITDB_ARGS']), '--auth-local=peer'])
        netns.run(['pg_ctlcluster', '--skip-systemctl-redirect', version, name, 'start'])
        superuser = ['runuser', '-u', 'postgres', '--', 'psql', '-h', str(sock), '-p', port, '-X', '-q',
                     '-v', 'ON_ERROR_STOP=1', '-d', 'postgres']
        # What the image's entrypoint does with POSTGRES_USER/PASSWORD/DB (less: the role is no superuser).
        netns.run(superuser + ['-v', f'user={env["POSTGRES_USER"]}', '-v', f'pw={env["POSTGRES_PASSWORD"]}',
                               '-v', f'db={env["POSTGRES_DB"]}'],
                  input='CREATE ROLE :"user" LOGIN PASSWORD :\'pw\';\nCREATE DATABASE :"db" OWNER :"user";\n')
        yield {'env': env, 'superuser': superuser, 'base': base}
    finally:
        p = run(['pg_dropcluster', '--stop', version, name], check=False, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
        if p.returncode != 0 and 'does not exist' not in p.stderr:
            pytest.fail(f'pg_dropcluster {version} {name} failed: {p.stderr}', pytrace=False)


def psql(netns, url, sql, check=True, **variables):
    args = [a for k, v in variables.items() for a in ('-v', f'{k}={v}')]
    p = netns.run(['psql', url, '-X', '-tA', '-v', 'ON_ERROR_STOP=1', *args], input=sql, check=check,
                  env=clean_env(PGCONNECT_TIMEOUT='10'))
    return p.stdout.strip() if p.returncode == 0 else None


def test_managed_postgres_uses_scram_passwords(rendered, postgres, netns):
    env, url = postgres['env'], rendered['secrets'][f'{BOT}-connections']['database-url']
    verifier = netns.run(postgres['superuser'] + ['-tA', '-v', f'user={env["POSTGRES_USER"]}'],
                         input="SELECT rolpassword FROM pg_authid WHERE rolname = :'user';\n").stdout
    assert verifier.startswith('SCRAM-SHA-256$'), verifier
    rules = netns.run(postgres['superuser'] + ['-tA'], input="SELECT DISTINCT auth_method FROM pg_hba_file_rules "
                      "WHERE type LIKE 'host%' AND 'replication' <> ALL(database);\n").stdout.split()
    assert rules == ['scram-sha-256'], f'TCP rules from POSTGRES_INITDB_ARGS: {rules}'
    wrong = netns.run(['psql', url.replace(env['POSTGRES_PASSWORD'], 'not-the-password'), '-c', 'SELECT 1'],
                      check=False, env=clean_env(PGCONNECT_TIMEOUT='10'))
    assert wrong.returncode != 0 and 'password authentication failed' in wrong.stderr, wrong.stderr
    assert psql(netns, url, 'SELECT current_user, current_database();') == 'clawdbot|clawdbot'


# --- bot-runtime on the rendered URLs --------------------------------------------------------------

@pytest.fixture(scope='module')
def conversation(rendered, redis, postgres, netns, tmp_path_factory):
    """bot-runtime (and a mock model) in the namespace; one chat answered. -> the chat's session id."""
    workdir = tmp_path_factory.mktemp('runtime')
    mock = netns.popen([binary('MOCK_UPSTREAM_BIN', 'mock-upstream'), '--listen', f'127.0.0.1:{MOCK_PORT}',
                        '--reply', REPLY, '--model', 'mock-model'], workdir / 'mock-upstream.log')
    urls = rendered['secrets'][f'{BOT}-connections']
    env = clean_env(REDIS_URL=urls['redis-url'], DATABASE_URL=urls['database-url'],
                    MODEL_ENDPOINT=f'http://127.0.0.1:{MOCK_PORT}/v1', MODEL_NAME='mock-model',
                    MODEL_API_KEY='upstream-key', CLAWDBOT_LISTEN=f'127.0.0.1:{RUNTIME_PORT}',
                    CLAWDBOT_API_KEYS=f'{API_KEY}:admin', RUST_BACKTRACE='1')
    runtime = netns.popen([binary('BOT_RUNTIME_BIN', 'bot-runtime')], workdir / 'bot-runtime.log', env=env)
    try:
        def ready():
            for p, n in ((mock, 'mock-upstream'), (runtime, 'bot-runtime')):
                assert p.poll() is None, f'{n} exited:\n{ph.tail(workdir / f"{n}.log")}'
            status, body = netns.http('GET', '/health/ready')
            return status == 200 and json.loads(body)
        health = wait_for(ready, timeout=60, interval=0.3, message=f'bot-runtime ready ({workdir})')
        assert health['checks'] == {'redis': 'ok', 'database': 'ok'}, health
        status, body = netns.http('POST', '/api/v1/chat', {'message': MESSAGE, 'user_id': 'contract-user'})
        assert status == 200, f'{status} {body}\n{ph.tail(workdir / "bot-runtime.log")}'
        answer = json.loads(body)
        assert answer['reply'] == REPLY, answer
        yield answer['session_id']
    finally:
        ph.stop(runtime)
        ph.stop(mock)


def count_rows(netns, url, sid, check=True):
    """The chat's rows in conversation_logs; None (check=False) while the query fails: bot-runtime creates its
    tables at its first log write."""
    n = psql(netns, url, "SELECT count(*) FROM conversation_logs WHERE session_id = :'sid' "
                         "AND user_input = :'msg' AND bot_response = :'reply';",
             check=check, sid=sid, msg=MESSAGE, reply=REPLY)
    return None if n is None else int(n)


def wait_logged(netns, url, sid):
    wait_for(lambda: count_rows(netns, url, sid, check=False) == 1, timeout=20, interval=0.3,
             message=f'the conversation row of session {sid} in PostgreSQL')


def test_the_runtime_keeps_sessions_in_redis_and_logs_in_postgres(rendered, conversation, netns):
    urls = rendered['secrets'][f'{BOT}-connections']
    wait_logged(netns, urls['database-url'], conversation)
    keys = redis_cli(netns, urls['redis-url'], '--scan', '--pattern', 'clawdbot:session:*').split()
    assert any(conversation in k for k in keys), keys


# --- the backup CronJob's script, and a restore ----------------------------------------------------

def test_the_backup_script_dumps_rotates_and_restores(rendered, conversation, postgres, netns, tmp_path_factory):
    urls = rendered['secrets'][f'{BOT}-connections']
    wait_logged(netns, urls['database-url'], conversation)
    c = rendered['backup']
    assert c['command'][:2] == ['sh', '-c']
    env = container_env(c, rendered['secrets'])
    assert (env['PGHOST'], env['PGPORT'], env['BACKUP_DIR'], env['KEEP']) == (f'{BOT}-db', '5432', '/backup', '7')
    backup_dir = tmp_path_factory.mktemp('backup')
    env.update(BACKUP_DIR=str(backup_dir), KEEP='2')
    written = []
    for i in range(3):
        if i:
            time.sleep(1.1)  # the file name has seconds
        out = netns.run(c['command'], env=clean_env(**env), timeout=120).stdout
        written.append(re.search(r'backup written: (\S+)', out)[1])
    assert len(set(written)) == 3, written
    files = sorted(p.name for p in backup_dir.iterdir())
    assert files == sorted(Path(w).name for w in written[1:]), f'kept {files}, written {written}'
    assert all(re.fullmatch(r'clawdbot-\d{8}T\d{6}Z\.dump', f) for f in files), files
    # The documented restore: an empty database, then pg_restore --clean --if-exists --no-owner.
    db = postgres['env']
    netns.run(postgres['superuser'] + ['-v', f'user={db["POSTGRES_USER"]}'],
              input='CREATE DATABASE clawdbot_restored OWNER :"user";\n')
    restored = urls['database-url'].rsplit('/', 1)[0] + '/clawdbot_restored'
    netns.run(['pg_restore', '--clean', '--if-exists', '--no-owner', '-d', restored, written[-1]], timeout=120)
    assert count_rows(netns, restored, conversation) == 1
