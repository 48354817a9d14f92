#!/usr/bin/env node
// A pushwire client in Node.js with the npm ws package: the same flow as index.html (pushwire.js's
// run) — POST /v1/connect with Node's fetch and a node:crypto HMAC, a WebSocket to the ws endpoint
// given, LOGIN, PUSH_ACK for each push, then a text message on a second WebSocket, which the
// gateway refuses — reporting each step as one JSON line on stdout
// ({"step", "detail"}). It exits 0 after the pushes asked for, 1 on any failure (the error on
// stdout as step "error" and on stderr), 2 on bad arguments.
//
//   node node-client.js --control http://127.0.0.1:7000 --app APP --secret SECRET --device DEV \
//     [--user USER] [--ws-path /ws] [--pushes 1] [--timeout 60]
'use strict';

const crypto = require('node:crypto');
const WebSocket = require('ws');
const pushwire = require('./pushwire.js');

const usage = 'usage: node node-client.js --control URL --app APP --secret SECRET --device DEVICE ' +
  '[--user USER] [--ws-path /ws] [--pushes N] [--timeout SECONDS]';

function parseArgs(argv) {
  const known = new Set(['control', 'app', 'secret', 'device', 'user', 'ws-path', 'pushes', 'timeout']);
  const o = { 'ws-path': '/ws', pushes: '1', timeout: '60', user: '' };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !known.has(m[1])) throw new Error('unknown argument ' + JSON.stringify(argv[i]));
    let v = m[2];
    if (v === undefined) {
      if (i + 1 >= argv.length) throw new Error('--' + m[1] + ': missing value');
      v = argv[++i];
    }
    o[m[1]] = v;
  }
  for (const k of ['control', 'app', 'secret', 'device']) {
    if (!o[k]) throw new Error('--' + k + ': required');
  }
  for (const k of ['pushes', 'timeout']) {
    const n = Number(o[k]);
    if (!Number.isInteger(n) || n < 1) throw new Error('--' + k + ': want a positive integer, got ' + JSON.stringify(o[k]));
    o[k] = n;
  }
  if (!o['ws-path'].startsWith('/')) throw new Error('--ws-path: must start with "/", got ' + JSON.stringify(o['ws-path']));
  return o;
}

function report(step, detail) {
  process.stdout.write(JSON.stringify({ step: step, detail: detail }) + '\n');
  return Promise.resolve();
}

async function hmac(secret, message) {
  return crypto.createHmac('sha256', secret).update(message, 'utf8').digest('hex');
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write('node-client: ' + err.message + '\n' + usage + '\n');
    process.exit(2);
  }
  if (typeof fetch !== 'function') throw new Error('this Node.js (' + process.version + ') has no fetch: need Node 18 or later');
  const timer = setTimeout(() => {
    report('error', { error: 'not done within ' + o.timeout + ' s' });
    process.stderr.write('node-client: not done within ' + o.timeout + ' s\n');
    process.exit(1);
  }, o.timeout * 1000);
  await report('loaded', { node: process.version, ws: require('ws/package.json').version });
  const opts = {
    control: o.control, app: o.app, secret: o.secret, device: o.device, user: o.user,
    platform: 'web', network: 'wifi', sdk: 'pushwire-node/1', wsPath: o['ws-path'], pushes: o.pushes,
    fetch: fetch, WebSocket: WebSocket, hmac: hmac, report: report,
  };
  const res = await pushwire.run(opts);
  await report('done', { pushes: res.pushes });
  // A text message is refused: ERROR BAD_FRAME, then the gateway closes.
  await report('text-refused', await pushwire.textProbe(opts, res.url));
  clearTimeout(timer);
}

main().catch((err) => {
  report('error', { error: String(err && err.message ? err.message : err), stack: String(err && err.stack || '') });
  process.stderr.write('node-client: ' + (err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
