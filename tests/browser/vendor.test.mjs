// The web chat's vendored marked (bot-runtime/assets/vendor) is the pinned
// package, unmodified: fails when the two differ (an upgrade half done, or
// an edit to third-party code).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

test('vendored marked equals the pinned package', () => {
  const vendored = readFileSync(new URL('../../bot-runtime/assets/vendor/marked.umd.js', import.meta.url));
  const pinned = readFileSync(new URL('./node_modules/marked/lib/marked.umd.js', import.meta.url));
  assert.ok(vendored.equals(pinned), 'run the upgrade steps in bot-runtime/assets/vendor/README.md');
  const version = JSON.parse(readFileSync(new URL('./package.json', import.meta.url))).devDependencies.marked;
  assert.ok(vendored.toString('utf8', 0, 200).includes(`marked v${version}`), 'the header names the pinned version');
});
