#!/usr/bin/env node
// A loopback stand-in for the three cloud metadata services the watchdog
// reads (shared/research/k8s-and-anchors.md §1.7), on one port.  Node.js
// built-ins only.
//
//   node imds_fake.js [--vm-name NAME]
//
// GCE   GET /computeMetadata/v1/instance/preempted[?wait_for_change=true&last_etag=E&timeout_sec=N]
//       needs "Metadata-Flavor: Google" (else 403); body TRUE or FALSE with an ETag; a long
//       poll answers when the value's ETag differs from last_etag, or after timeout_sec.
// AWS   PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1..21600) -> token;
//       GET /latest/meta-data/spot/instance-action with X-aws-ec2-metadata-token:
//       401 without a valid token (IMDSv2 required), 404 while there is no notice,
//       else {"action": "terminate", "time": "..."}.
// Azure GET /metadata/scheduledevents?api-version=2020-07-01 with "Metadata: true"
//       (else 400) -> {"DocumentIncarnation": N, "Events": [...]};
//       GET /metadata/instance/compute/name?api-version=...&format=text -> the VM name.
//
// The first stdout line is "imds-fake listening on http://127.0.0.1:PORT".
// Control (same port, no auth):
//   POST /_fake/gce    {"preempted": true|false}
//   POST /_fake/aws    {"action": "terminate", "time": "..."} or {"action": null}
//   POST /_fake/azure  {"events": [...]} (DocumentIncarnation goes up)
//   GET  /_fake/state  {"requests": [{method, path, status, headers}], ...}
'use strict';
const crypto = require('crypto');
const http = require('http');

let vmName = 'vm-spot-1';
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--vm-name' && i + 1 < process.argv.length) vmName = process.argv[++i];
  else { process.stderr.write(`imds_fake: unknown argument ${process.argv[i]}\n`); process.exit(2); }
}

const S = {
  gce: { preempted: false, waiters: new Set() },
  aws: { action: null, tokens: new Map() },
  azure: { incarnation: 1, events: [] },
  requests: [],
};

const gceValue = () => (S.gce.preempted ? 'TRUE' : 'FALSE');
const gceEtag = () => crypto.createHash('sha1').update(gceValue()).digest('hex').slice(0, 16);

function send(res, log, code, body, headers = {}) {
  log.status = code;
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': typeof body === 'string' ? 'text/plain' : 'application/json',
    'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function gce(req, res, url, log) {
  if (req.headers['metadata-flavor'] !== 'Google') {
    return send(res, log, 403, 'Missing Metadata-Flavor:Google header.', { 'Metadata-Flavor': 'Google' });
  }
  if (url.pathname !== '/computeMetadata/v1/instance/preempted') return send(res, log, 404, 'Not Found');
  const answer = () => send(res, log, 200, gceValue(), { 'Metadata-Flavor': 'Google', ETag: gceEtag() });
  if (url.searchParams.get('wait_for_change') !== 'true') return answer();
  const last = url.searchParams.get('last_etag');
  if (last && last !== gceEtag()) return answer();
  const secs = Math.min(Number(url.searchParams.get('timeout_sec') || '3600'), 3600);
  const w = { wake: () => { clearTimeout(timer); S.gce.waiters.delete(w); answer(); } };
  const timer = setTimeout(() => w.wake(), secs * 1000);
  S.gce.waiters.add(w);
  res.on('close', () => { clearTimeout(timer); S.gce.waiters.delete(w); });
}

function aws(req, res, url, log) {
  if (url.pathname === '/latest/api/token') {
    if (req.method !== 'PUT') return send(res, log, 405, 'Method Not Allowed');
    if (req.headers['x-forwarded-for']) return send(res, log, 403, 'Forbidden');
    const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
    if (!(ttl >= 1 && ttl <= 21600)) return send(res, log, 400, 'Bad Request');
    const token = crypto.randomBytes(24).toString('base64');
    S.aws.tokens.set(token, Date.now() + ttl * 1000);
    return send(res, log, 200, token, { 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
  }
  if (req.method !== 'GET') return send(res, log, 405, 'Method Not Allowed');
  const token = req.headers['x-aws-ec2-metadata-token'];
  if (!token || !(S.aws.tokens.get(token) > Date.now())) return send(res, log, 401, 'Unauthorized');
  if (url.pathname !== '/latest/meta-data/spot/instance-action' || !S.aws.action) {
    return send(res, log, 404, '<?xml version="1.0" encoding="iso-8859-1"?>\n<html><head><title>404 - Not Found</title></head><body><h1>404 - Not Found</h1></body></html>');
  }
  return send(res, log, 200, S.aws.action);
}

function azure(req, res, url, log) {
  if (req.headers.metadata !== 'true') {
    return send(res, log, 400, { error: 'Bad request. Required metadata header not specified' });
  }
  if (!url.searchParams.get('api-version')) {
    return send(res, log, 400, { error: 'Bad request. api-version was not specified in the request' });
  }
  if (url.pathname === '/metadata/instance/compute/name' && url.searchParams.get('format') === 'text') {
    return send(res, log, 200, vmName);
  }
  if (url.pathname === '/metadata/scheduledevents') {
    return send(res, log, 200, { DocumentIncarnation: S.azure.incarnation, Events: S.azure.events });
  }
  return send(res, log, 404, { error: 'Not found' });
}

function readJSON(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => { try { resolve(data ? JSON.parse(data) : {}); } catch (e) { reject(e); } });
  });
}

async function control(req, res, url) {
  const reply = (code, obj) => { res.writeHead(code, { 'Content-Type': 'application/json' }); res.end(JSON.stringify(obj)); };
  if (req.method === 'GET' && url.pathname === '/_fake/state') {
    return reply(200, { requests: S.requests, gce: gceValue(), aws: S.aws.action, azure: S.azure.events });
  }
  let body;
  try { body = await readJSON(req); } catch (e) { return reply(400, { error: 'bad JSON' }); }
  switch (url.pathname) {
    case '/_fake/gce':
      S.gce.preempted = !!body.preempted;
      for (const w of [...S.gce.waiters]) w.wake();
      return reply(200, { preempted: gceValue() });
    case '/_fake/aws':
      S.aws.action = body.action ? { action: body.action, time: body.time || new Date(Date.now() + 120000).toISOString().replace(/\.\d+Z$/, 'Z') } : null;
      return reply(200, { action: S.aws.action });
    case '/_fake/azure':
      S.azure.events = Array.isArray(body.events) ? body.events : [];
      S.azure.incarnation += 1;
      return reply(200, { DocumentIncarnation: S.azure.incarnation });
    default:
      return reply(404, { error: 'not found' });
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://fake');
  if (url.pathname.startsWith('/_fake/')) return void control(req, res, url).catch(() => res.end());
  const headers = { ...req.headers };
  delete headers['x-aws-ec2-metadata-token'];
  const log = { method: req.method, path: url.pathname + url.search, status: null, headers, at: Date.now() };
  S.requests.push(log);
  if (S.requests.length > 2000) S.requests.shift();
  if (url.pathname.startsWith('/computeMetadata/')) return gce(req, res, url, log);
  if (url.pathname.startsWith('/latest/')) return aws(req, res, url, log);
  if (url.pathname.startsWith('/metadata/')) return azure(req, res, url, log);
  return send(res, log, 404, 'Not Found');
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`imds-fake listening on http://127.0.0.1:${server.address().port}\n`);
});
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
