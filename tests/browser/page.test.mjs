// Contract test of bot-runtime/assets/index.html against a scripted fake of the chat API
// (no Rust binaries needed): SSE framing edge cases, error paths, history, XSS safety.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { launchBrowser } from './lib.mjs';

const PAGE = readFileSync(new URL('../../bot-runtime/assets/index.html', import.meta.url));
const MARKED = readFileSync(new URL('../../bot-runtime/assets/vendor/marked.umd.js', import.meta.url));
const MARKDOWN = '## Steps\n\n1. **Install** the `operator`\n2. Apply [the CRD](https://example.com/crd) and [bad](javascript:alert(1))\n\n' +
  '| key | value |\n|---|---|\n| parallel | 4 |\n| queue | 16 |\n\n- a\n- b\n\n<script>window.__xss=3</script>\n';
const XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const jsonError = (res, status, message, extra = {}, param = null) => {
  res.writeHead(status, { 'content-type': 'application/json', ...extra });
  res.end(JSON.stringify({ error: { message, type: 'test', param, code: null } }));
};

// Write raw bytes in awkward pieces: split inside \r\n and inside UTF-8 sequences.
async function writeSplit(res, text, piece = 3) {
  const buf = Buffer.from(text);
  for (let i = 0; i < buf.length; i += piece) {
    res.write(buf.subarray(i, i + piece));
    await sleep(2);
  }
}

function sse(event, data, eol = '\n') {
  return `event: ${event}${eol}data: ${JSON.stringify(data)}${eol}${eol}`;
}

const done = (reply, sid = 'sess-1') => ({
  session_id: sid, reply, model: 'fake', usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
});

const requests = [];

async function chat(req, res, body) {
  requests.push(body);
  if (body.session_id === 'expired') return jsonError(res, 404, 'session not found');
  if (body.session_id === 'malformed') return jsonError(res, 400, 'bad session_id', {}, 'session_id');
  const sid = body.session_id || 'sess-1';
  switch (body.message) {
    case 'busy': return jsonError(res, 409, 'a turn is already running for this session');
    case 'slow': return jsonError(res, 429, 'rate limited', { 'retry-after': '7' });
    case 'boom': return jsonError(res, 500, 'upstream exploded');
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  if (body.message === 'split') {
    await writeSplit(res, ': comment\r\n\r\n' + sse('delta', { content: 'Héllo ' }, '\r\n') +
      sse('delta', { content: 'wörld ✓' }, '\r\n'));
    await sleep(400);
    await writeSplit(res, sse('done', done('Héllo wörld ✓', sid), '\r\n'), 5);
  } else if (body.message === 'fail') {
    res.write(sse('delta', { content: 'Part' }));
    await sleep(100);
    res.write(sse('error', { error: { message: 'model crashed', type: 'upstream_error', param: null, code: null } }));
  } else if (body.message === 'xss') {
    const reply = XSS + '\n```js\nlet a = "<b>x</b>";\n```\nend';
    res.write(sse('delta', { content: reply }));
    res.write(sse('done', done(reply, sid)));
  } else if (body.message === 'markdown') {
    res.write(sse('delta', { content: MARKDOWN.slice(0, 40) }));
    await sleep(30);
    res.write(sse('delta', { content: MARKDOWN.slice(40) }));
    res.write(sse('done', done(MARKDOWN, sid)));
  } else if (body.message === 'faq') {
    const reply = 'Run `make run`.';
    res.write(sse('delta', { content: reply }));
    res.write(sse('done', { ...done(reply, sid), model: 'knowledge', source: { kind: 'faq', id: 'run', title: 'How do I start it? <b>' } }));
  } else if (body.message === 'cut') {
    res.write(sse('delta', { content: 'half' }));
    await sleep(50);
  } else {
    res.write(sse('delta', { content: 'echo: ' }));
    await sleep(50);
    res.write(sse('delta', { content: body.message }));
    res.write(sse('done', done('echo: ' + body.message, sid)));
  }
  res.end();
}

const HISTORY = {
  hist: [
    { role: 'user', content: 'show me', created_at: '2025-01-01T00:00:00Z' },
    { role: 'assistant', content: XSS + '\n```\ncode <i>here</i>\n```', created_at: '2025-01-01T00:00:01Z' },
  ],
  expired: [],
};

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    return res.end(PAGE);
  }
  if (req.method === 'GET' && url.pathname === '/assets/marked.umd.js') {
    res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
    return res.end(MARKED);
  }
  const m = url.pathname.match(/^\/api\/v1\/sessions\/([^/]+)\/messages$/);
  if (req.method === 'GET' && m) {
    const id = decodeURIComponent(m[1]);
    if (id === 'malformed') return jsonError(res, 400, 'bad session_id', {}, 'session_id');
    if (!HISTORY[id]) return jsonError(res, 404, 'session not found');
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ session_id: id, messages: HISTORY[id] }));
  }
  if (req.method === 'POST' && url.pathname === '/api/v1/chat') {
    let raw = '';
    for await (const c of req) raw += c;
    return chat(req, res, JSON.parse(raw));
  }
  jsonError(res, 404, 'no route');
});

let browser, base;

before(async () => {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}/`;
  browser = await launchBrowser();
});

after(async () => {
  try {
    if (browser) await browser.close();
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

async function freshPage(sessionId, options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(base);
  if (sessionId) {
    await page.evaluate((id) => sessionStorage.setItem('clawdbot.sessionId', id), sessionId);
    await page.reload();
  }
  return { page, errors, close: () => context.close() };
}

async function send(page, text) {
  await page.locator('#message').fill(text);
  await page.locator('#send').click();
  await page.waitForFunction(() => {
    const el = [...document.querySelectorAll('#messages .msg.assistant')].pop();
    return !document.querySelector('#send').disabled && (!el || el.dataset.state !== 'streaming');
  }, null, { timeout: 10000 });
}

const msgs = (page) => page.$$eval('#messages > *', (els) => els.map((e) => ({
  cls: e.className, state: e.dataset.state ?? null, text: e.textContent,
})));

describe('index.html against a fake API', () => {
  test('a zh-CN browser gets the Chinese page; the switch changes and remembers the language', async () => {
    const { page, errors, close } = await freshPage(null, { locale: 'zh-CN' });
    try {
      assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
      assert.equal(await page.textContent('#send'), '发送');
      assert.equal(await page.getAttribute('#message', 'placeholder'), '给 ClawdBot 发消息');
      assert.equal(await page.textContent('#new-session'), '新会话');
      await page.selectOption('#lang', 'en');
      assert.equal(await page.textContent('#send'), 'Send');
      await page.reload();
      assert.equal(await page.textContent('#send'), 'Send', 'the choice outlives a reload');
      assert.equal(await page.getAttribute('html', 'lang'), 'en');
      assert.deepEqual(errors, []);
    } finally { await close(); }
    const english = await freshPage(null, { locale: 'en-US' });
    try {
      assert.equal(await english.page.textContent('#send'), 'Send');
    } finally { await english.close(); }
  });

  test('Markdown answers become elements: a table, lists, bold, code, safe links; <script> stays text', async () => {
    const { page, errors, close } = await freshPage();
    try {
      await send(page, 'markdown');
      const shape = await page.$eval('#messages .msg.assistant', (m) => ({
        h: m.querySelector('h4')?.textContent,
        ol: [...m.querySelectorAll('ol > li')].map((li) => li.textContent),
        strong: m.querySelector('ol strong')?.textContent,
        code: m.querySelector('ol code')?.textContent,
        links: [...m.querySelectorAll('a')].map((a) => [a.textContent, a.getAttribute('href')]),
        th: [...m.querySelectorAll('table thead th')].map((c) => c.textContent),
        rows: [...m.querySelectorAll('table tbody tr')].map((r) => [...r.children].map((c) => c.textContent)),
        ul: [...m.querySelectorAll('ul > li')].map((li) => li.textContent),
        scripts: m.querySelectorAll('script').length,
        text: m.textContent,
      }));
      assert.equal(shape.h, 'Steps');
      assert.deepEqual(shape.ol, ['Install the operator', 'Apply the CRD and bad']);
      assert.equal(shape.strong, 'Install');
      assert.equal(shape.code, 'operator');
      assert.deepEqual(shape.links, [['the CRD', 'https://example.com/crd']], 'javascript: links become plain text');
      assert.deepEqual(shape.th, ['key', 'value']);
      assert.deepEqual(shape.rows, [['parallel', '4'], ['queue', '16']]);
      assert.deepEqual(shape.ul, ['a', 'b']);
      assert.equal(shape.scripts, 0);
      assert.ok(shape.text.includes('<script>window.__xss=3</script>'), shape.text);
      assert.equal(await page.evaluate(() => window.__xss), undefined);
      assert.deepEqual(errors, []);
    } finally { await close(); }
  });

  test('an answer from the FAQ shows its source under it, as text', async () => {
    const { page, errors, close } = await freshPage(null, { locale: 'zh-CN' });
    try {
      await send(page, 'faq');
      const source = await page.textContent('#messages .msg.assistant .source');
      assert.equal(source, '来源: How do I start it? <b>');
      assert.equal(await page.$$eval('#messages .msg.assistant .source b', (b) => b.length), 0);
      assert.deepEqual(errors, []);
    } finally { await close(); }
  });

  test('SSE split anywhere, CRLF, UTF-8 across chunks', async () => {
    const { page, errors, close } = await freshPage();
    try {
      await send(page, 'split');
      const all = await msgs(page);
      assert.deepEqual(all.at(-1), { cls: 'msg assistant', state: 'done', text: 'Héllo wörld ✓' });
      assert.equal(await page.evaluate(() => sessionStorage.getItem('clawdbot.sessionId')), 'sess-1');
      assert.equal(await page.locator('#messages .msg.assistant').getAttribute('title'), 'fake · 3 tokens');
      // Second turn carries the session id.
      requests.length = 0;
      await send(page, 'again');
      assert.deepEqual(requests, [{ message: 'again', stream: true, session_id: 'sess-1' }]);
      assert.deepEqual(errors, []);
    } finally { await close(); }
  });

  test('error event mid-stream keeps partial text and shows an error bubble', async () => {
    const { page, close } = await freshPage();
    try {
      await send(page, 'fail');
      const all = await msgs(page);
      assert.deepEqual(all.slice(-2), [
        { cls: 'msg assistant', state: 'error', text: 'Part' },
        { cls: 'msg error', state: null, text: 'model crashed' },
      ]);
      await send(page, 'cut');
      assert.deepEqual((await msgs(page)).slice(-2).map((m) => m.state ?? m.cls), ['error', 'msg error']);
    } finally { await close(); }
  });

  test('409, 429 (Retry-After) and 500 become error bubbles and the text is offered again', async () => {
    const { page, close } = await freshPage();
    try {
      await send(page, 'busy');
      assert.equal((await msgs(page)).at(-1).text, 'a turn is already running for this session');
      assert.equal(await page.locator('#message').inputValue(), 'busy');
      await send(page, 'slow');
      assert.match((await msgs(page)).at(-1).text, /rate limited.*7/);
      await send(page, 'boom');
      const all = await msgs(page);
      assert.equal(all.at(-1).cls, 'msg error');
      assert.equal(all.at(-1).text, 'upstream exploded');
      assert.equal(await page.locator('#messages .msg.assistant').count(), 0, 'no empty assistant bubbles left');
    } finally { await close(); }
  });

  test('expired session (404) starts a new one and resends', async () => {
    const { page, close } = await freshPage('expired');
    try {
      requests.length = 0;
      await send(page, 'hi');
      assert.deepEqual(requests, [
        { message: 'hi', stream: true, session_id: 'expired' },
        { message: 'hi', stream: true },
      ]);
      const all = await msgs(page);
      assert.equal(all.filter((m) => m.cls === 'msg user').length, 1, 'one user bubble');
      assert.match(all.find((m) => m.cls === 'notice').text, /new session/i);
      assert.deepEqual(all.at(-1), { cls: 'msg assistant', state: 'done', text: 'echo: hi' });
      assert.equal(await page.evaluate(() => sessionStorage.getItem('clawdbot.sessionId')), 'sess-1');
    } finally { await close(); }
  });

  test('history is rendered as text (no HTML injection) with code fences as <pre>', async () => {
    const { page, close } = await freshPage('hist');
    try {
      await page.waitForFunction(() => document.querySelectorAll('#messages .msg').length === 2);
      assert.equal(await page.locator('#messages img, #messages script, #messages i').count(), 0, 'no injected elements');
      assert.equal(await page.locator('#messages .msg.assistant pre code').textContent(), 'code <i>here</i>');
      await send(page, 'xss');
      assert.equal(await page.locator('#messages img, #messages script, #messages b').count(), 0);
      assert.equal(await page.locator('#messages .msg.assistant pre code').nth(1).textContent(), 'let a = "<b>x</b>";');
      assert.equal(await page.evaluate(() => window.__xss), undefined);
    } finally { await close(); }
  });

  test('malformed session id (400, param session_id) is forgotten on load and on send', async () => {
    const { page, close } = await freshPage('malformed');
    try {
      await page.waitForFunction(() => sessionStorage.getItem('clawdbot.sessionId') === null);
      await page.evaluate(() => sessionStorage.setItem('clawdbot.sessionId', 'malformed'));
      requests.length = 0;
      await send(page, 'yo');
      assert.deepEqual(requests.map((r) => r.session_id), ['malformed', undefined]);
      assert.deepEqual((await msgs(page)).at(-1), { cls: 'msg assistant', state: 'done', text: 'echo: yo' });
      assert.equal(await page.locator('#messages .msg.error').count(), 0);
    } finally { await close(); }
  });

  test('unknown stored session is forgotten; New session clears the view', async () => {
    const { page, close } = await freshPage('gone');
    try {
      await page.waitForFunction(() => sessionStorage.getItem('clawdbot.sessionId') === null);
      await send(page, 'x');
      assert.equal(await page.locator('#messages .msg').count(), 2);
      await page.locator('#new-session').click();
      assert.equal(await page.locator('#messages').evaluate((el) => el.childElementCount), 0);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('clawdbot.sessionId')), null);
    } finally { await close(); }
  });

  test('Enter sends, Shift+Enter inserts a newline, textarea grows', async () => {
    const { page, close } = await freshPage();
    try {
      const box = page.locator('#message');
      await box.click();
      const h0 = await box.evaluate((e) => e.offsetHeight);
      await page.keyboard.type('line one');
      await page.keyboard.press('Shift+Enter');
      await page.keyboard.type('line two');
      await page.keyboard.press('Shift+Enter');
      await page.keyboard.type('line three');
      assert.equal(await box.inputValue(), 'line one\nline two\nline three');
      assert.ok(await box.evaluate((e) => e.offsetHeight) > h0, 'textarea grew');
      await page.keyboard.press('Enter');
      await page.waitForFunction(() => document.querySelector('#messages .msg.assistant')?.dataset.state === 'done');
      assert.equal(await page.locator('#messages .msg.user').textContent(), 'line one\nline two\nline three');
      assert.equal(await box.inputValue(), '');
    } finally { await close(); }
  });
});
