// Shared helpers for the browser tests: child processes, free ports, Chromium.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import net from 'node:net';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

export const LAUNCH_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run',
];

export function launchBrowser() {
  try {
    accessSync(CHROMIUM, constants.X_OK);
  } catch {
    throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set CHROMIUM_BIN)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
}

/** Read a required env var naming an executable; throw a clear error otherwise. */
export function requireBin(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`environment variable ${name} is not set; run e.g. ` +
      'MOCK_UPSTREAM_BIN=$PWD/target/debug/mock-upstream BOT_RUNTIME_BIN=$PWD/target/debug/bot-runtime ' +
      'node --test tests/browser/  (after cargo build -p bot-runtime -p clawdbot-bench)');
  }
  try {
    accessSync(v, constants.X_OK);
  } catch {
    throw new Error(`${name}=${v} is not an executable file (build it first: ` +
      'cargo build -p bot-runtime -p clawdbot-bench)');
  }
  return v;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const children = new Set();

// Last resort if the runner exits without the after() hooks finishing.
process.on('exit', () => {
  for (const c of children) {
    try { c.proc.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Spawn a child; keep the tail of its output for error messages.
 * Returns { proc, name, output(), exited (promise), waitFor(regex, ms) }.
 */
export function startProcess(name, bin, args, env) {
  const proc = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters = [];
  const onData = (d) => {
    out += d.toString();
    if (out.length > 64 * 1024) out = out.slice(-32 * 1024);
    for (const w of [...waiters]) w();
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      children.delete(child);
      for (const w of [...waiters]) w();
      resolve(exitInfo);
    });
    proc.on('error', (err) => {
      out += `\n[spawn error] ${err.message}\n`;
      exitInfo = exitInfo || { code: null, signal: null, error: err };
      children.delete(child);
      for (const w of [...waiters]) w();
      resolve(exitInfo);
    });
  });
  const child = {
    proc, name, exited,
    output: () => out,
    get exitInfo() { return exitInfo; },
    waitFor(regex, ms = 15000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(regex);
          if (m) { done(); resolve(m); return; }
          if (exitInfo) {
            done();
            reject(new Error(`${name} exited (${JSON.stringify(exitInfo)}) before printing ${regex}; output:\n${out}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${name} did not print ${regex} within ${ms} ms; output:\n${out}`));
        }, ms);
        const done = () => { clearTimeout(timer); const i = waiters.indexOf(check); if (i >= 0) waiters.splice(i, 1); };
        waiters.push(check);
        check();
      });
    },
  };
  children.add(child);
  return child;
}

/** SIGTERM every child still running, SIGKILL after a grace period; wait for exits. */
export async function killAll(graceMs = 3000) {
  const live = [...children];
  for (const c of live) {
    try { c.proc.kill('SIGTERM'); } catch { /* gone */ }
  }
  await Promise.all(live.map(async (c) => {
    let t;
    const timeout = new Promise((r) => { t = setTimeout(r, graceMs, 'timeout'); });
    const r = await Promise.race([c.exited, timeout]);
    clearTimeout(t);
    if (r === 'timeout') {
      try { c.proc.kill('SIGKILL'); } catch { /* gone */ }
      await c.exited;
    }
  }));
}

/** Poll url until it answers 200; fail early if the child exits. */
export async function waitReady(url, child, ms = 30000) {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child.exitInfo) {
      throw new Error(`${child.name} exited (${JSON.stringify(child.exitInfo)}) before ${url} was ready; output:\n${child.output()}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      last = `HTTP ${res.status}`;
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch (e) {
      last = e.cause?.code || e.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready within ${ms} ms (last: ${last}); ${child.name} output:\n${child.output()}`);
}
