#!/usr/bin/env node
// A loopback stand-in for the Kubernetes API server, as a pod sees it
// (shared/research/k8s-and-anchors.md §1.4, §1.8, §2.3), for wbsched's
// watchdog tests.  Node.js built-ins only.
//
//   node k8s_fake.js --cert CERT --key KEY [--host 127.0.0.1|::1] [--namespace NS]
//                    [--pod NAME] [--job NAME] [--job-uid UID] [--token T]...
//
// HTTPS with the given certificate, bearer tokens checked on every request.
// Serves, with the real shapes:
//   GET /api/v1/namespaces/NS/pods/NAME                        the Pod
//   GET /api/v1/namespaces/NS/pods?fieldSelector=metadata.name%3DNAME  a PodList (the list's
//       resourceVersion is the current one, from which a watch can start)
//   GET /api/v1/namespaces/NS/pods?watch=1&fieldSelector=metadata.name%3DNAME
//       &resourceVersion=RV[&timeoutSeconds=N]                  a watch: chunked JSON lines
//       {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}; a
//       resourceVersion older than the kept history gets an ERROR event (410 Expired)
//   GET /apis/batch/v1/namespaces/NS/jobs/NAME                  the Job
//   GET /apis/kueue.x-k8s.io/v1beta1|v1beta2/namespaces/NS/workloads?labelSelector=...
//                                                              a WorkloadList (404 unless --kueue)
// Errors are Status objects (401 Unauthorized, 404 NotFound, 403 Forbidden).
//
// The first stdout line is
//   k8s-fake listening on https://HOST:PORT control http://127.0.0.1:CPORT
// The control server (plain HTTP, loopback, no auth):
//   POST /_fake/pod       JSON merge patch (RFC 7386) of the Pod; watchers get MODIFIED
//   POST /_fake/pod/delete the Pod goes away; watchers get DELETED
//   POST /_fake/job       merge patch of the Job (null: delete it)
//   POST /_fake/workload  merge patch of the Workload (created on first use; null: delete)
//   POST /_fake/tokens    {"tokens": [...], "close_watches": bool}
//   POST /_fake/expire    forget the event history: watches from an old resourceVersion get 410
//   POST /_fake/fail      {"status": N, "times": K, "path": "substring"} next matching answers
//   GET  /_fake/state     {"watchers": N, "requests": [{method, path, auth, status}], "resourceVersion"}
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

function parseArgs(argv) {
  const o = { host: '127.0.0.1', namespace: 'ml', pod: 'train-0-abcde', job: 'train',
    jobUid: '3f1c6a2e-8b7d-4c55-9e10-2a6b9d4c7e01', tokens: [], kueue: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i]; };
    if (a === '--cert') o.cert = next();
    else if (a === '--key') o.key = next();
    else if (a === '--host') o.host = next();
    else if (a === '--namespace') o.namespace = next();
    else if (a === '--pod') o.pod = next();
    else if (a === '--job') o.job = next();
    else if (a === '--job-uid') o.jobUid = next();
    else if (a === '--token') o.tokens.push(next());
    else if (a === '--kueue') o.kueue = true;
    else usage(`unknown argument ${a}`);
  }
  if (!o.cert || !o.key) usage('--cert and --key are required');
  return o;
}

function usage(msg) {
  process.stderr.write(`k8s_fake: ${msg}\n`);
  process.exit(2);
}

const opt = parseArgs(process.argv.slice(2));
let rv = 100;
let tokens = opt.tokens.length ? opt.tokens : ['token-1'];
const requests = [];
const watchers = new Set();
let history = []; // [{rv, type, object}]
let faults = [];  // [{status, times, path}]

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const clone = (o) => JSON.parse(JSON.stringify(o));

function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out = (target && typeof target === 'object' && !Array.isArray(target)) ? target : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function status(code, reason, message) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

const labels = {
  'batch.kubernetes.io/controller-uid': opt.jobUid,
  'batch.kubernetes.io/job-name': opt.job,
  'controller-uid': opt.jobUid,
  'job-name': opt.job,
};

let pod = {
  kind: 'Pod',
  apiVersion: 'v1',
  metadata: {
    name: opt.pod,
    generateName: `${opt.job}-`,
    namespace: opt.namespace,
    uid: '9d0c3b4e-1f2a-4e5b-8c6d-7e8f9a0b1c2d',
    resourceVersion: String(rv),
    creationTimestamp: now(),
    labels,
    ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: opt.job, uid: opt.jobUid,
      controller: true, blockOwnerDeletion: true }],
  },
  spec: {
    restartPolicy: 'Never',
    serviceAccountName: 'wbsched',
    nodeName: 'node-1',
    terminationGracePeriodSeconds: 30,
    containers: [{ name: 'main', image: 'train:latest', command: ['wbsched', 'watchdog', '--', 'python', 'train.py'] }],
  },
  status: {
    phase: 'Running',
    conditions: [
      { type: 'PodReadyToStartContainers', status: 'True', lastProbeTime: null, lastTransitionTime: now() },
      { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: now() },
      { type: 'Ready', status: 'True', lastProbeTime: null, lastTransitionTime: now() },
      { type: 'ContainersReady', status: 'True', lastProbeTime: null, lastTransitionTime: now() },
      { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: now() },
    ],
    hostIP: '10.0.0.5',
    podIP: '10.244.1.7',
    startTime: now(),
    qosClass: 'Burstable',
    containerStatuses: [{ name: 'main', ready: true, restartCount: 0, started: true,
      image: 'train:latest', imageID: '', containerID: 'containerd://0123',
      state: { running: { startedAt: now() } }, lastState: {} }],
  },
};
let podGone = false;

let job = {
  kind: 'Job',
  apiVersion: 'batch/v1',
  metadata: { name: opt.job, namespace: opt.namespace, uid: opt.jobUid, resourceVersion: String(rv),
    creationTimestamp: now(), labels: { 'batch.kubernetes.io/controller-uid': opt.jobUid,
      'batch.kubernetes.io/job-name': opt.job } },
  spec: { parallelism: 1, completions: 1, backoffLimit: 6, suspend: false, completionMode: 'NonIndexed',
    podReplacementPolicy: 'Failed', template: { metadata: { labels }, spec: pod.spec } },
  status: { active: 1, startTime: now(), ready: 1, terminating: 0, uncountedTerminatedPods: {} },
};

let workload = null;

function bump(obj) {
  rv += 1;
  obj.metadata.resourceVersion = String(rv);
  return rv;
}

function publish(type, object) {
  const ev = { type, object: clone(object) };
  history.push({ rv: Number(object.metadata.resourceVersion), ev });
  if (history.length > 100) history.shift();
  for (const w of watchers) w.send(ev);
}

// ---- the API server --------------------------------------------------------

function authorized(req) {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
  return m && tokens.includes(m[1]) ? 'ok' : m ? 'bad' : 'none';
}

function send(res, code, obj, log) {
  log.status = code;
  const body = JSON.stringify(obj);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function serveWatch(req, res, url, log) {
  const sel = url.searchParams.get('fieldSelector') || '';
  if (sel !== `metadata.name=${opt.pod}`) {
    return send(res, 400, status(400, 'BadRequest', 'this fake watches one pod by metadata.name'), log);
  }
  const from = Number(url.searchParams.get('resourceVersion') || '0');
  const timeout = Math.min(Number(url.searchParams.get('timeoutSeconds') || '1800'), 1800);
  log.status = 200;
  res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
  const w = {
    send: (ev) => res.write(JSON.stringify(ev) + '\n'),
    close: () => { watchers.delete(w); res.end(); },
  };
  watchers.add(w);
  const timer = setTimeout(() => w.close(), timeout * 1000);
  res.on('close', () => { clearTimeout(timer); watchers.delete(w); });
  if (from > 0) {
    const oldest = history.length ? history[0].rv : rv;
    if (from < oldest - 1 && from < rv) {
      w.send({ type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${rv})`) });
      return w.close();
    }
    for (const h of history) if (h.rv > from) w.send(h.ev);
  } else if (!podGone) {
    w.send({ type: 'ADDED', object: clone(pod) });
  }
  if (podGone) w.close();
}

function api(req, res) {
  const url = new URL(req.url, 'https://fake');
  const log = { method: req.method, path: url.pathname + url.search, auth: authorized(req), status: null, at: Date.now() };
  requests.push(log);
  if (requests.length > 2000) requests.shift();
  if (log.auth !== 'ok') return send(res, 401, status(401, 'Unauthorized', 'Unauthorized'), log);
  for (const f of faults) {
    if (f.times !== 0 && (!f.path || log.path.includes(f.path))) {
      if (f.times > 0) f.times -= 1;
      return send(res, f.status, status(f.status, 'InternalError', 'injected fault'), log);
    }
  }
  if (req.method !== 'GET') return send(res, 405, status(405, 'MethodNotAllowed', 'the fake only reads'), log);
  const ns = opt.namespace;
  const p = url.pathname;
  if (p === `/api/v1/namespaces/${ns}/pods` && url.searchParams.get('watch') === '1') return serveWatch(req, res, url, log);
  if (p === `/api/v1/namespaces/${ns}/pods`) {
    const sel = url.searchParams.get('fieldSelector') || '';
    const items = podGone || (sel && sel !== `metadata.name=${opt.pod}`) ? [] : [clone(pod)];
    for (const it of items) { delete it.kind; delete it.apiVersion; }
    return send(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items }, log);
  }
  if (p === `/api/v1/namespaces/${ns}/pods/${opt.pod}`) {
    if (podGone) return send(res, 404, status(404, 'NotFound', `pods "${opt.pod}" not found`), log);
    return send(res, 200, pod, log);
  }
  if (p === `/apis/batch/v1/namespaces/${ns}/jobs/${opt.job}`) {
    if (!job) return send(res, 404, status(404, 'NotFound', `jobs.batch "${opt.job}" not found`), log);
    return send(res, 200, job, log);
  }
  const wl = /^\/apis\/kueue\.x-k8s\.io\/(v1beta1|v1beta2)\/namespaces\/([^/]+)\/workloads$/.exec(p);
  if (wl && opt.kueue && wl[2] === ns) {
    const selector = url.searchParams.get('labelSelector') || '';
    const items = workload && selector === `kueue.x-k8s.io/job-uid=${opt.jobUid}` ? [clone(workload)] : [];
    for (const it of items) it.apiVersion = `kueue.x-k8s.io/${wl[1]}`;
    return send(res, 200, { apiVersion: `kueue.x-k8s.io/${wl[1]}`, kind: 'WorkloadList',
      metadata: { resourceVersion: String(rv) }, items }, log);
  }
  return send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'), log);
}

// ---- control ---------------------------------------------------------------

function readJSON(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => {
      try { resolve(data ? JSON.parse(data) : {}); } catch (e) { reject(e); }
    });
  });
}

async function control(req, res) {
  const reply = (code, obj) => {
    const body = JSON.stringify(obj);
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(body);
  };
  let body;
  try {
    body = req.method === 'POST' ? await readJSON(req) : null;
  } catch (e) {
    return reply(400, { error: 'bad JSON' });
  }
  const p = new URL(req.url, 'http://fake').pathname;
  if (req.method === 'GET' && p === '/_fake/state') {
    return reply(200, { watchers: watchers.size, requests, resourceVersion: String(rv), pod, job, workload });
  }
  if (req.method !== 'POST') return reply(404, { error: 'not found' });
  switch (p) {
    case '/_fake/pod':
      if (podGone) return reply(409, { error: 'the pod is gone' });
      pod = mergePatch(pod, body);
      bump(pod);
      publish('MODIFIED', pod);
      return reply(200, pod);
    case '/_fake/pod/delete':
      if (!podGone) {
        bump(pod);
        podGone = true;
        publish('DELETED', pod);
        for (const w of [...watchers]) w.close();
      }
      return reply(200, {});
    case '/_fake/job':
      job = body === null || (body && body.delete) ? null : mergePatch(job, body);
      if (job) bump(job);
      return reply(200, job || {});
    case '/_fake/workload':
      if (body === null || (body && body.delete)) {
        workload = null;
      } else {
        workload = mergePatch(workload || {
          apiVersion: 'kueue.x-k8s.io/v1beta1', kind: 'Workload',
          metadata: { name: `job-${opt.job}-1a2b3`, namespace: opt.namespace, resourceVersion: String(rv),
            labels: { 'kueue.x-k8s.io/job-uid': opt.jobUid },
            ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: opt.job, uid: opt.jobUid, controller: true }] },
          spec: { queueName: 'user-queue', priority: 0, podSets: [{ name: 'main', count: 1 }] },
          status: { conditions: [] },
        }, body);
        bump(workload);
      }
      return reply(200, workload || {});
    case '/_fake/tokens':
      if (!body || !Array.isArray(body.tokens)) return reply(400, { error: 'tokens must be an array' });
      tokens = body.tokens.map(String);
      if (body.close_watches) for (const w of [...watchers]) w.close();
      return reply(200, { tokens: tokens.length });
    case '/_fake/expire':
      history = [];
      rv += 10;
      for (const w of [...watchers]) w.close();
      return reply(200, { resourceVersion: String(rv) });
    case '/_fake/fail':
      faults.push({ status: Number(body.status) || 500, times: body.times === undefined ? 1 : Number(body.times), path: body.path || '' });
      return reply(200, { faults: faults.length });
    default:
      return reply(404, { error: 'not found' });
  }
}

const server = https.createServer({ cert: fs.readFileSync(opt.cert), key: fs.readFileSync(opt.key) }, api);
const ctl = http.createServer((req, res) => { control(req, res).catch(() => res.end()); });
server.listen(0, opt.host, () => {
  ctl.listen(0, '127.0.0.1', () => {
    const host = opt.host.includes(':') ? `[${opt.host}]` : opt.host;
    process.stdout.write(`k8s-fake listening on https://${host}:${server.address().port} control http://127.0.0.1:${ctl.address().port}\n`);
  });
});
server.on('error', (e) => { process.stderr.write(`k8s_fake: ${e.message}\n`); process.exit(1); });
const stop = () => { for (const w of [...watchers]) w.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
