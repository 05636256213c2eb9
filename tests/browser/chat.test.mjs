// End-to-end test of the web chat page: real bot-runtime + mock upstream + headless Chromium.
//
//   cargo build -p bot-runtime -p clawdbot-bench
//   (cd tests/browser && npm ci)
//   MOCK_UPSTREAM_BIN=$PWD/target/debug/mock-upstream BOT_RUNTIME_BIN=$PWD/target/debug/bot-runtime \
//     node --test tests/browser/
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, killAll, launchBrowser, requireBin, startProcess, waitReady } from './lib.mjs';

// Missing binaries are a failure, never a skip.
const MOCK_BIN = requireBin('MOCK_UPSTREAM_BIN');
const RUNTIME_BIN = requireBin('BOT_RUNTIME_BIN');

const REPLY = 'The quick brown fox jumps over sleepy dogs.';
const SCREENSHOT = '/tmp/clawdbot-chat.png';

let mockBase; // http://ADDR/v1
let browser;
const tmpDirs = [];

async function startRuntime(name, extraEnv = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'clawdbot-browser-'));
  tmpDirs.push(dir);
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('CLAWDBOT_')) delete env[k];
  Object.assign(env, {
    MODEL_ENDPOINT: mockBase,
    MODEL_NAME: 'mock-model',
    CLAWDBOT_LISTEN: `127.0.0.1:${port}`,
    ...extraEnv,
  });
  // A null in extraEnv removes the variable (e.g. no upstream at all).
  for (const [k, v] of Object.entries(extraEnv)) if (v === null) delete env[k];
  const child = startProcess(name, RUNTIME_BIN, [], env);
  const base = `http://127.0.0.1:${port}`;
  await waitReady(`${base}/health/ready`, child);
  return { base, child };
}

/** Console errors and uncaught exceptions of the page, for a final assertion. */
function watchPage(page) {
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  const chats = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === '/api/v1/chat') chats.push(r);
  });
  return { problems, chats };
}

async function assistantState(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('#messages .msg.assistant');
    const el = all[all.length - 1];
    return el ? { state: el.dataset.state, text: el.textContent } : null;
  });
}

/** Wait for the last assistant message to settle; fail with the error bubble text if any. */
async function waitDone(page, ms = 20000) {
  try {
    await page.waitForFunction(() => {
      const all = document.querySelectorAll('#messages .msg.assistant');
      const el = all[all.length - 1];
      return (el && el.dataset.state !== 'streaming') || document.querySelector('#messages .msg.error');
    }, null, { timeout: ms });
  } catch (e) {
    throw new Error(`assistant reply did not finish: ${JSON.stringify(await assistantState(page))}; ${e.message}`);
  }
  const errors = await page.locator('#messages .msg.error').allTextContents();
  assert.deepEqual(errors, [], 'no error bubble expected');
  return assistantState(page);
}

before(async () => {
  const mock = startProcess('mock-upstream', MOCK_BIN, [
    '--listen', '127.0.0.1:0', '--reply', REPLY, '--chunk-delay-ms', '300', '--model', 'mock-model',
  ], process.env);
  const m = await mock.waitFor(/listening on http:\/\/(\S+)/);
  mockBase = `http://${m[1]}/v1`;
  browser = await launchBrowser();
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    await killAll();
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  }
});

describe('web chat page', () => {
  test('streams a reply, restores history after reload, starts a new session', { timeout: 90000 }, async () => {
    const { base, child } = await startRuntime('bot-runtime');
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    try {
      const page = await context.newPage();
      const { problems, chats } = watchPage(page);
      const res = await page.goto(base + '/');
      assert.equal(res.status(), 200, 'GET / status');
      assert.match(res.headers()['content-type'] || '', /text\/html/, 'GET / content-type');
      await page.locator('#message').waitFor();
      assert.equal(await page.locator('#messages .msg').count(), 0, 'empty log on first load');

      const question = 'Hello bot, tell me about foxes';
      await page.locator('#message').fill(question);
      await page.locator('#send').click();

      // Partial text while streaming.
      let partial;
      try {
        partial = await (await page.waitForFunction((full) => {
          const el = document.querySelector('#messages .msg.assistant');
          if (!el || el.dataset.state !== 'streaming') return false;
          const t = el.textContent;
          return t.length > 0 && t.length < full.length ? t : false;
        }, REPLY, { timeout: 15000, polling: 20 })).jsonValue();
      } catch (e) {
        throw new Error(`never saw a partial streamed reply; last assistant state ${JSON.stringify(await assistantState(page))}; ` +
          `errors: ${JSON.stringify(await page.locator('#messages .msg.error').allTextContents())}; runtime output:\n${child.output()}\n${e.message}`);
      }
      assert.ok(REPLY.startsWith(partial), `partial text ${JSON.stringify(partial)} is a prefix of the reply`);
      assert.ok(await page.locator('#messages .msg.assistant').isVisible(), 'assistant bubble visible while streaming');
      assert.ok(await page.locator('#send').isDisabled(), 'send button disabled while the turn runs');
      assert.equal(await page.locator('#messages .msg.user').textContent(), question);

      const done = await waitDone(page);
      assert.deepEqual(done, { state: 'done', text: REPLY }, 'final assistant message');
      assert.ok(await page.locator('#send').isEnabled(), 'send button enabled again');
      const sid = await page.evaluate(() => sessionStorage.getItem('clawdbot.sessionId'));
      assert.ok(sid, 'session id stored in sessionStorage');
      assert.equal(chats.length, 1, 'one chat request');
      const body = JSON.parse(chats[0].postData());
      assert.deepEqual(body, { message: question, stream: true }, 'first turn omits session_id');
      await page.screenshot({ path: SCREENSHOT, fullPage: false });

      // Reload: history comes back from the server.
      const historyRes = page.waitForResponse((r) => new URL(r.url()).pathname === `/api/v1/sessions/${encodeURIComponent(sid)}/messages`);
      await page.reload();
      assert.equal((await historyRes).status(), 200, 'history request status');
      await page.waitForFunction(() => document.querySelectorAll('#messages .msg').length >= 2, null, { timeout: 10000 });
      const restored = await page.$$eval('#messages .msg', (els) => els.map((e) => ({ cls: e.className, text: e.textContent })));
      assert.deepEqual(restored, [
        { cls: 'msg user', text: question },
        { cls: 'msg assistant', text: REPLY },
      ], 'history restored after reload');

      // New session: empty log, id forgotten.
      await page.locator('#new-session').click();
      assert.equal(await page.locator('#messages').evaluate((el) => el.childElementCount), 0, 'log empty after New session');
      assert.equal(await page.evaluate(() => sessionStorage.getItem('clawdbot.sessionId')), null, 'session id cleared');
      await page.reload();
      await page.locator('#message').waitFor();
      assert.equal(await page.locator('#messages .msg').count(), 0, 'still empty after reload');

      assert.deepEqual(problems, [], 'no page errors');
    } finally {
      await context.close();
    }
  });

  test('with no upstream, the local model and the FAQ answer in a Chinese page', { timeout: 90000 }, async () => {
    const repo = new URL('../../', import.meta.url).pathname;
    const { base } = await startRuntime('bot-runtime (local)', {
      MODEL_ENDPOINT: null,
      MODEL_NAME: null,
      MODEL_BACKEND: 'local',
      MODEL_PATH: path.join(repo, 'models/SmolLM2-135M-Instruct.Q4_1.gguf'),
      KNOWLEDGE_PATH: path.join(repo, 'examples/knowledge'),
      CLAWDBOT_KNOWLEDGE__EMBEDDINGS_PATH: path.join(repo, 'models/all-MiniLM-L6-v2.Q8_0.gguf'),
    });
    const context = await browser.newContext({ locale: 'zh-CN' });
    try {
      const page = await context.newPage();
      const { problems } = watchPage(page);
      await page.goto(base + '/');
      assert.equal(await page.textContent('#send'), '发送');
      await page.locator('#message').fill('What is the capital of France?');
      await page.locator('#send').click();
      const model = await waitDone(page, 60000);
      assert.match(model.text, /Paris/, 'the local model answers');
      assert.equal(await page.locator('#messages .msg.assistant').last().locator('.source').count(), 0);

      await page.locator('#message').fill('Which chat platforms does ClawdBot support?');
      await page.locator('#send').click();
      const faq = await waitDone(page, 60000);
      assert.match(faq.text, /DingTalk, Feishu\/Lark/);
      const source = await page.locator('#messages .msg.assistant').last().locator('.source').textContent();
      assert.equal(source, '来源: Which chat platforms does ClawdBot support?');
      assert.deepEqual(problems, [], 'no page errors');
    } finally {
      await context.close();
    }
  });

  test('asks for an API key on 401 and answers once it is given', { timeout: 90000 }, async () => {
    const { base } = await startRuntime('bot-runtime (auth)', { CLAWDBOT_API_KEYS: 'testkey123' });
    const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    try {
      const page = await context.newPage();
      const { problems, chats } = watchPage(page);
      await page.goto(base + '/');
      assert.ok(await page.locator('#key-form').isHidden(), 'key form hidden at first');

      await page.locator('#message').fill('Are you there?');
      await page.locator('#send').click();
      await page.locator('#api-key').waitFor({ state: 'visible', timeout: 10000 });
      assert.equal(await page.locator('#api-key').getAttribute('type'), 'password');
      assert.equal(await page.locator('#messages .msg.error').count(), 1, 'error bubble for 401');
      assert.equal(chats.length, 1);
      assert.equal((await chats[0].response()).status(), 401, 'first chat answered 401');

      await page.locator('#api-key').fill('testkey123');
      await page.locator('#save-key').click();
      const done = await (async () => {
        await page.waitForFunction(() => {
          const el = document.querySelector('#messages .msg.assistant');
          return el && el.dataset.state !== 'streaming';
        }, null, { timeout: 20000 });
        return assistantState(page);
      })();
      assert.deepEqual(done, { state: 'done', text: REPLY }, 'answered after the key was given');
      assert.equal(await page.evaluate(() => localStorage.getItem('clawdbot.apiKey')), 'testkey123');
      assert.ok(await page.locator('#key-form').isHidden(), 'key form hidden again');
      assert.equal(chats.length, 2, 'message resent once');
      assert.equal((await chats[1].allHeaders()).authorization, 'Bearer testkey123');
      await page.screenshot({ path: '/tmp/clawdbot-chat-auth.png' });

      // 401 is a console error of the failed fetch; nothing else may be.
      const unexpected = problems.filter((p) => !/status of 401/.test(p));
      assert.deepEqual(unexpected, [], 'no page errors');
    } finally {
      await context.close();
    }
  });
});
