// The official OpenAI Node SDK streams a code_interpreter run through the proxy: the code comes
// as several `toolCallDelta` input fragments, the logs output and the final message arrive, and
// the SDK's accumulated snapshots agree with the raw events. Run by
// tests/sdk/test_code_interpreter.py (which also checks what it reports against the stored
// step); exits non-zero with the failed assertion otherwise.
//
// env: OPENAI_BASE_URL (the proxy's /v1), OPENAI_API_KEY, NODE_SDK_DIR (scripts/node-sdk.sh),
//      CI_MODEL (the fake upstream's code-calling model)
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const sdkDir = process.env.NODE_SDK_DIR;
assert.ok(sdkDir, 'NODE_SDK_DIR is not set (scripts/node-sdk.sh prints it)');
// The SDK lives in .cache/node-sdk, not beside this file: resolve it from there.
const require = createRequire(join(sdkDir, 'package.json'));
const { OpenAI } = require('openai');
const sdkVersion = JSON.parse(
  readFileSync(join(sdkDir, 'node_modules', 'openai', 'package.json'), 'utf8'),
).version;

const client = new OpenAI({ maxRetries: 0, timeout: 60_000 });
const code = 'words = ["alpha", "beta\\tgamma"]\nfor w in words:\n    print("word:", w)\nlen(words) * 21';

const assistant = await client.beta.assistants.create({
  model: process.env.CI_MODEL ?? 'fake-code-interpreter',
  tools: [{ type: 'code_interpreter' }],
});
const thread = await client.beta.threads.create({
  messages: [{ role: 'user', content: 'Run this:\n```python\n' + code + '\n```\n' }],
});

const events = [];
const inputDeltas = [];
let created = 0;
let deltaCallbacks = 0;
let doneCall = null;
let text = '';
const stream = client.beta.threads.runs
  .stream(thread.id, { assistant_id: assistant.id })
  // A copy: the SDK accumulates later deltas into the first delta's objects.
  .on('event', (e) => events.push(structuredClone(e)))
  .on('toolCallCreated', (call) => {
    assert.equal(call.type, 'code_interpreter');
    created += 1;
  })
  .on('toolCallDelta', (delta, snapshot) => {
    deltaCallbacks += 1;
    assert.equal(delta.type, 'code_interpreter');
    assert.equal(snapshot.type, 'code_interpreter');
  })
  .on('toolCallDone', (call) => {
    doneCall = call;
  })
  .on('textDelta', (delta) => {
    text += delta.value ?? '';
  });
const run = await stream.finalRun();
assert.equal(run.status, 'completed', JSON.stringify(run.last_error));

// The raw deltas: input fragments in order, then outputs.
let logs = '';
let firstOutput = Infinity;
let lastInput = -1;
events.forEach((e, i) => {
  if (e.event !== 'thread.run.step.delta') return;
  for (const tc of e.data.delta.step_details?.tool_calls ?? []) {
    const ci = tc.code_interpreter;
    if (!ci) continue;
    if (ci.input) {
      inputDeltas.push(ci.input);
      lastInput = i;
    }
    for (const o of ci.outputs ?? []) {
      firstOutput = Math.min(firstOutput, i);
      if (o.type === 'logs') logs += o.logs ?? '';
    }
  }
});
assert.equal(inputDeltas.join(''), code);
assert.ok(inputDeltas.length >= 3, `input came in ${inputDeltas.length} deltas`);
assert.ok(lastInput < firstOutput, 'all input deltas come before the outputs');
assert.match(logs, /word: alpha\nword: beta\tgamma\n/);
assert.match(logs, /42/);

// The SDK's own accumulation agrees.
assert.equal(created, 1);
assert.ok(deltaCallbacks >= 2, `toolCallDelta fired ${deltaCallbacks} times`);
assert.ok(doneCall, 'toolCallDone fired');
assert.equal(doneCall.code_interpreter.input, code);
const doneLogs = doneCall.code_interpreter.outputs
  .filter((o) => o.type === 'logs')
  .map((o) => o.logs)
  .join('');
assert.equal(doneLogs, logs);

const names = events.map((e) => e.event);
const idx = (name, type) =>
  names.findIndex((n, i) => n === name && (type === undefined || events[i].data.type === type));
assert.ok(idx('thread.run.step.created', 'tool_calls') < idx('thread.run.step.in_progress'));
assert.ok(idx('thread.run.step.completed', 'tool_calls') < idx('thread.run.step.created', 'message_creation'));
assert.equal(names.at(-1), 'thread.run.completed');

const [message] = await stream.finalMessages();
const part = message.content.find((p) => p.type === 'text');
assert.equal(part.text.value, text);
assert.ok(text.startsWith('Tool results: ') && text.includes('word: alpha'), text);

console.log(
  JSON.stringify({
    sdk: sdkVersion,
    run_id: run.id,
    thread_id: thread.id,
    code,
    logs,
    input_deltas: inputDeltas.length,
  }),
);
