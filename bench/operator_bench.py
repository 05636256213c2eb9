#!/usr/bin/env python3
"""Operator benchmark against the API server emulator (tests/operator/emulator.py).

Measures, for the release clawdbot-operator binary:
  - create -> all children applied latency: one bot at a time (unloaded) and
    a burst of N bots created back to back (p50/p99). "Applied" is the moment
    the operator's status write for the bot lands: it comes after every child.
  - the operator's own CPU time per reconcile (utime+stime from /proc over the
    reconcile count from its /metrics) and its peak RSS with N bots;
  - API writes per idle minute after convergence (Lease renewals aside).
The emulator is Python and far slower than a real API server: the latency
figures include its time; the CPU and memory figures are the operator's alone.

Each burst runs twice: bots with a model endpoint only ("plain"), and bots
that also ask for managed Redis and a managed PostgreSQL with backups
("managed": 11 more children each, and generated credentials).

Usage: operator_bench.py OPERATOR_BIN PYTHON_WITH_KMOCK OUT_JSON [N] [IDLE_SECS] [plain|managed]
       operator_bench.py --update DOC_MD PLAIN_JSON MANAGED_JSON   (rewrites the operator section)
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchutil import cpu_secs, free_port, status_kb

ROOT = Path(__file__).resolve().parents[1]
GROUP = '/apis/clawdbot.io/v1alpha1'




class Api:
    def __init__(self, url):
        self.url = url

    def call(self, method, path, body=None, ctype='application/json'):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={'Content-Type': ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, None






def metric(url, name):
    with urllib.request.urlopen(url + '/metrics', timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(' ', 1)[1])
    return total


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def status_written(api, ns, name):
    code, obj = api.call('GET', f'{GROUP}/namespaces/{ns}/clawdbots/{name}')
    return code == 200 and bool((obj or {}).get('status', {}).get('observedGeneration'))


def main():
    operator_bin, python, out = sys.argv[1], sys.argv[2], sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    idle_secs = int(sys.argv[5]) if len(sys.argv) > 5 else 60
    kind = sys.argv[6] if len(sys.argv) > 6 else 'plain'
    assert kind in ('plain', 'managed'), kind
    work = Path(tempfile.mkdtemp(prefix='operator-bench-'))
    kubeconfig = work / 'kubeconfig'
    emu = subprocess.Popen([python, str(ROOT / 'tests/operator/emulator.py'), '--port', '0', '--kubeconfig', str(kubeconfig)],
                           stdout=subprocess.PIPE, stderr=open(work / 'emulator.log', 'w'), text=True)
    procs = [emu]
    try:
        line = emu.stdout.readline()
        assert line.startswith('listening on '), line
        api = Api(line.split()[-1])
        port = free_port()
        env = {**os.environ, 'KUBECONFIG': str(kubeconfig), 'POD_NAMESPACE': 'default', 'RUST_LOG': 'warn'}
        op = subprocess.Popen([operator_bin, 'run', '--metrics-addr', f'127.0.0.1:{port}'], env=env,
                              stdout=open(work / 'operator.log', 'w'), stderr=subprocess.STDOUT)
        procs.append(op)
        murl = f'http://127.0.0.1:{port}'
        deadline = time.time() + 30
        while True:
            try:
                if metric(murl, 'clawdbot_operator_leader') == 1:
                    break
            except OSError:
                pass
            assert time.time() < deadline, 'operator did not become leader'
            time.sleep(0.05)
        idle_rss = status_kb(op.pid, 'VmRSS', 0)

        api.call('POST', '/api/v1/namespaces', {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': 'bench'}})

        def bot(name):
            spec = {'model': {'endpoint': 'http://llm:8000/v1', 'name': 'm'}}
            if kind == 'managed':
                spec.update(redis={'managed': {}}, database={'managed': {'backup': {'enabled': True}}})
            return {'apiVersion': 'clawdbot.io/v1alpha1', 'kind': 'ClawdBot',
                    'metadata': {'name': name, 'namespace': 'bench'}, 'spec': spec}

        # Unloaded: one bot at a time.
        single = []
        for i in range(30):
            name = f'single-{i}'
            t0 = time.perf_counter()
            api.call('POST', f'{GROUP}/namespaces/bench/clawdbots', bot(name))
            while not status_written(api, 'bench', name):
                time.sleep(0.002)
            single.append((time.perf_counter() - t0) * 1000)

        # Burst: N bots back to back.
        time.sleep(3)  # the single bots' last events
        cpu0, rec0 = cpu_secs(op.pid), metric(murl, 'clawdbot_operator_reconcile_total')
        created = {}
        t_start = time.perf_counter()
        for i in range(n):
            name = f'bot-{i}'
            created[name] = time.perf_counter()
            api.call('POST', f'{GROUP}/namespaces/bench/clawdbots', bot(name))
        create_secs = time.perf_counter() - t_start
        done = {}
        deadline = time.time() + 900
        while len(done) < n:
            assert time.time() < deadline, f'only {len(done)}/{n} converged'
            code, lst = api.call('GET', f'{GROUP}/namespaces/bench/clawdbots')
            now = time.perf_counter()
            for item in lst['items']:
                name = item['metadata']['name']
                if name in created and name not in done and item.get('status', {}).get('observedGeneration'):
                    done[name] = now - created[name]
            time.sleep(0.2)
        burst_secs = time.perf_counter() - t_start
        time.sleep(3)  # let the events of the last applies settle
        cpu1, rec1 = cpu_secs(op.pid), metric(murl, 'clawdbot_operator_reconcile_total')
        reconciles = rec1 - rec0
        peak_rss = status_kb(op.pid, 'VmHWM', 0)

        # Idle: writes after convergence.
        time.sleep(2)
        _, writes = api.call('GET', '/_emulator/writes')
        mark = len(writes)
        time.sleep(idle_secs)
        _, writes = api.call('GET', '/_emulator/writes')
        idle = [w for w in writes[mark:] if '/leases' not in w['path']]
        lease = [w for w in writes[mark:] if '/leases' in w['path']]

        result = {
            'kind': kind,
            'bots': n,
            'reconciles_per_bot': reconciles / n,
            'single_p50_ms': pct(single, 50), 'single_p99_ms': pct(single, 99),
            'burst_p50_ms': pct([v * 1000 for v in done.values()], 50),
            'burst_p99_ms': pct([v * 1000 for v in done.values()], 99),
            'burst_create_secs': create_secs, 'burst_total_secs': burst_secs,
            'reconciles': reconciles,
            'cpu_ms_per_reconcile': (cpu1 - cpu0) * 1000 / max(reconciles, 1),
            'cpu_ms_per_bot': (cpu1 - cpu0) * 1000 / n,
            'idle_rss_kb': idle_rss, 'peak_rss_kb': peak_rss,
            'idle_secs': idle_secs, 'idle_writes': len(idle), 'idle_lease_writes': len(lease),
            'idle_writes_per_minute': len(idle) * 60 / idle_secs,
            'idle_write_samples': idle[:5],
        }
        Path(out).write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def markdown(plain_json, managed_json):
    plain = json.loads(Path(plain_json).read_text())
    managed = json.loads(Path(managed_json).read_text())
    ok = lambda good: '**PASS**' if good else '**FAIL**'
    mb = lambda kb: f'{kb * 1024 / 1e6:.1f} MB'
    rows = []
    for label, r in (('plain', plain), ('managed Redis + PostgreSQL', managed)):
        rows += [
            f"| Reconciles per bot, {r['bots']}-bot burst, {label} | <= 1.5 | {r['reconciles_per_bot']:.2f} ({r['reconciles']:.0f} reconciles) | {ok(r['reconciles_per_bot'] <= 1.5)} |",
            f"| Operator CPU per reconcile, {label} | <= 1 ms | {r['cpu_ms_per_reconcile']:.2f} ms ({r['cpu_ms_per_bot']:.2f} ms per bot, all its reconciles) | {ok(r['cpu_ms_per_reconcile'] <= 1.0)} |",
            f"| Peak RSS with {r['bots']} ClawdBots, {label} | <= 100 MB | {mb(r['peak_rss_kb'])} (idle before any bot: {mb(r['idle_rss_kb'])}) | {ok(r['peak_rss_kb'] * 1024 <= 100e6)} |",
            f"| API writes per idle minute after convergence, {label} | 0 (Lease renewals aside) | {r['idle_writes_per_minute']:.0f} over {r['idle_secs']} s ({r['idle_lease_writes']} Lease renewals) | {ok(r['idle_writes'] == 0)} |",
        ]
    measures = []
    for label, r in (('plain', plain), ('managed', managed)):
        measures += [
            f"| create -> children applied, one bot at a time (30 bots), {label} | p50 {r['single_p50_ms']:.1f} ms, p99 {r['single_p99_ms']:.1f} ms |",
            f"| create -> children applied, {r['bots']} bots back to back, {label} | p50 {r['burst_p50_ms']:.0f} ms, p99 {r['burst_p99_ms']:.0f} ms (creates took {r['burst_create_secs']:.1f} s; all converged after {r['burst_total_secs']:.1f} s) |",
        ]
    nl = '\n'
    return f"""## Operator (clawdbot-operator against the API server emulator)

Command: `make bench`, or this section alone: `bash bench/operator.sh` (runs `bench/operator_bench.py`
twice and rewrites this section). The release `clawdbot-operator` runs against
`tests/operator/emulator.py` (kmock with the project's compatibility layer; Python, single process,
much slower than a real API server), with default flags (8 concurrent reconciles). "plain": each
ClawdBot has a model endpoint and no optional children. "managed": each also asks for
`redis.managed` and `database.managed` with backups (StatefulSets, Services, NetworkPolicies,
generated Secrets, the connections Secret, the backup CronJob and its volume). "Applied" is when
the operator's status write for the bot is visible, which comes after every child. Latencies include
the emulator's time; CPU and memory are the operator process's alone (`utime+stime` from
`/proc/PID/stat` over the reconcile count from its `/metrics`; `VmHWM`). Reconciles are counted from
just before the burst to 3 s after the last bot converged.

| Target (from the issue) | Goal | Measured | Result |
| --- | --- | --- | --- |
{nl.join(rows)}

| Measure | Value |
| --- | --- |
{nl.join(measures)}

Before the watch caches and the event batching (plain bots, the same burst): 2.94 reconciles per
bot at 3.58 ms each, about 10.5 ms of operator CPU per bot, peak RSS 45 MB. Most of what is left is
the HTTP requests a new bot needs (an apply per child, the status, one Event) and decoding the watch
events they cause.

Where the rest goes (`perf record --call-graph dwarf` over the plain burst, 2026-12-05): a plain bot
is 7 writes (the key Secret, ServiceAccount, ConfigMap, Deployment, Service, status, one Event) and
the watch events they cause. The kernel's loopback TCP, epoll and context switches take about a
quarter of the operator's CPU, malloc/free and memcpy another fifth, hyper/tower/tokio's request
and connection tasks most of the rest; JSON decoding of answers is a few percent (asking the server
for metadata-only answers to applies and status writes made no measurable difference, so it was
not kept), rendering the ConfigMap's YAML about 3%. No single part is worth a rewrite: the 1 ms
target would need fewer requests per new bot than the Kubernetes API allows.

CPU figures depend on the host: the same build (65525da) measured 4.26 ms per plain reconcile on
the host of 2026-12-05, where the emulator also took 2.3x as long for the burst. Compare figures
from one run only.
"""


def update(doc, plain_json, managed_json):
    """Replaces the operator section of DOC (up to the next ## heading)."""
    text = Path(doc).read_text()
    start = text.index('## Operator (clawdbot-operator')
    end = text.find('\n## ', start + 1)
    end = len(text) if end < 0 else end + 1
    Path(doc).write_text(text[:start] + markdown(plain_json, managed_json) + '\n' + text[end:])


if __name__ == '__main__':
    if sys.argv[1] == '--markdown':
        print('\n' + markdown(sys.argv[2], sys.argv[3]), end='')
    elif sys.argv[1] == '--update':
        update(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
