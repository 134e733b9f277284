#!/usr/bin/env node
'use strict';
// wbsched-emulator: an in-memory stand-in for the Weights & Biases server,
// just large enough for wbsched's integration tests.
//
//   POST /graphql                                  GraphQL (graphql-js on the reconstructed W&B schema)
//   POST /files/{entity}/{project}/{run}/file_stream   heartbeats, pre-emption, completion
//   /_emu/...                                      test control API (no auth), see README.md
//
// Behaviour follows shared/research/wandb-api.md sections 1-3 and 5.
// Everything lives in memory; nothing is written to disk.

const http = require('http');
const zlib = require('zlib');
const crypto = require('crypto');
const {
  parse, validate, execute, GraphQLError,
  isNonNullType, isListType, isScalarType, isEnumType, isObjectType, Kind,
} = require('graphql');
const { loadSchema } = require('./load-schema');

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------
const USAGE = 'usage: node server.js [--port N] [--api-key KEY]... [--entity NAME] [--crash-after-ms N] [--verbose]';

function parseArgs(argv) {
  const opts = { port: 0, apiKeys: [], entity: 'emu-user', crashAfterMs: 300000, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const need = () => {
      if (value === undefined) value = argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      return value;
    };
    const needInt = () => {
      const v = need();
      if (!/^\d+$/.test(v)) throw new Error(`${arg} needs a non-negative integer, got '${v}'`);
      return Number(v);
    };
    switch (arg) {
      case '--port': opts.port = needInt(); break;
      case '--api-key': opts.apiKeys.push(need()); break;
      case '--entity': opts.entity = need(); break;
      case '--crash-after-ms': opts.crashAfterMs = needInt(); break;
      case '--verbose': opts.verbose = true; break;
      case '-h': case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break;
      default: throw new Error(`unknown argument '${arg}'`);
    }
  }
  if (process.env.WBS_EMU_API_KEY) opts.apiKeys.push(process.env.WBS_EMU_API_KEY);
  return opts;
}

let OPTS;
try {
  OPTS = parseArgs(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`wbsched-emulator: ${e.message}\n${USAGE}\n`);
  process.exit(2);
}

const SCHEMA = loadSchema();
const RUN_STATES = ['pending', 'running', 'finished', 'failed', 'crashed', 'killed', 'preempted', 'preempting'];
const MAX_BODY_BYTES = 32 * 1024 * 1024;   // the SDK caps file_stream requests near 10 MB
const FILE_STREAM_RE = /^\/files\/([^/]+)\/([^/]+)\/([^/]+)\/file_stream\/?$/;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');
// W&B answers DateTime as naive UTC with second precision ("2024-01-10T15:22:45").
const wbTime = (ms) => (ms == null ? null : new Date(ms).toISOString().slice(0, 19));
// The control API uses full ISO 8601 with milliseconds, for precise assertions.
const isoTime = (ms) => (ms == null ? null : new Date(ms).toISOString());
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const parseJSONOr = (s, dflt) => { try { return JSON.parse(s); } catch (_) { return dflt; } };

function generateRunId() {   // like wandb/sdk/lib/runid.py: 8 chars of [a-z0-9]
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let id = '';
  for (let i = 0; i < 8; i++) id += alphabet[crypto.randomInt(alphabet.length)];
  return id;
}

function log(...args) { if (OPTS.verbose) process.stderr.write(`[emu] ${args.join(' ')}\n`); }

// ---------------------------------------------------------------------------
// State (all in memory). reset() puts everything back to the start-up values.
// ---------------------------------------------------------------------------
const S = {};

function reset() {
  S.runs = new Map();        // "entity/project/name" -> run record, in creation order
  S.runsById = new Map();    // storage id -> run record
  S.projects = new Map();    // "entity/project" -> project record
  S.projectSeq = 0;
  S.runSeq = 0;
  S.requests = [];           // request log (oldest dropped beyond config.maxRequests)
  S.requestSeq = 0;
  S.faults = [];             // FIFO fault queue
  S.config = {
    crashAfterMs: OPTS.crashAfterMs,
    delayMs: 0,
    features: { UPDATE_RUN_STATE: true },
    apiKeys: OPTS.apiKeys.slice(),
    entity: OPTS.entity,
    maxRequests: 20000,
  };
}
reset();

function ensureProject(entity, name, now) {
  const key = `${entity}/${name}`;
  let p = S.projects.get(key);
  if (!p) {
    p = {
      entity, name, num: ++S.projectSeq, createdAt: now,
      id: b64(`Project:v1:${name}:${entity}`), internalId: crypto.randomUUID(),
    };
    S.projects.set(key, p);
  }
  return p;
}

function createRun(entity, project, name, initialState, now) {
  const p = ensureProject(entity, project, now);
  const run = {
    seq: ++S.runSeq, entity, project, name, projectNum: p.num,
    id: b64(`Run:v1:${name}:${project}:${entity}`),
    displayName: name, state: initialState, group: null, jobType: null, tags: [],
    notes: null, description: null, host: null, commit: null, sweepName: null,
    config: '{}', summaryMetrics: '{}', exitcode: null, stopped: false,
    createdAt: now, updatedAt: now, heartbeatAt: now,
    lastActivity: now, stateSince: now,            // for stale-run detection
    states: [{ state: initialState, at: now }],
    files: {},                                     // file_stream file name -> {lines, tail}
  };
  S.runs.set(`${entity}/${project}/${name}`, run);
  S.runsById.set(run.id, run);
  return run;
}

// Every state change goes through here so that `states` is a full history.
function setRunState(run, state, now) {
  if (run.state === state) return false;
  log(`run ${run.entity}/${run.project}/${run.name}: ${run.state} -> ${state}`);
  run.state = state;
  run.stateSince = now;
  run.updatedAt = now;
  run.states.push({ state, at: now });
  return true;
}

// Staleness: a `running` run without file_stream traffic for crashAfterMs
// becomes `crashed`, a `preempting` one becomes `preempted` (wandb-api.md 3.2).
// The clock starts at the later of the last file_stream request and the
// moment the run entered its current state. crash_after_ms 0 disables this.
const staleTimer = setInterval(() => {
  const limit = S.config.crashAfterMs;
  if (!(limit > 0)) return;
  const now = Date.now();
  for (const run of S.runs.values()) {
    if (run.state !== 'running' && run.state !== 'preempting') continue;
    if (now - Math.max(run.lastActivity, run.stateSince) >= limit) {
      setRunState(run, run.state === 'running' ? 'crashed' : 'preempted', now);
    }
  }
}, 50);

// ---------------------------------------------------------------------------
// Run filters for Project.runs/runCount: a small subset of W&B's Mongo-style
// JSON filters ({"state":"running"}, {"$and":[...]}, {"tags":{"$in":[...]}},
// {"config.lr.value":{"$gt":0.1}}, ...). Unknown operators are an error.
// ---------------------------------------------------------------------------
function runFieldValue(run, key) {
  const direct = {
    name: run.name, state: run.state, displayName: run.displayName, display_name: run.displayName,
    group: run.group, jobType: run.jobType, job_type: run.jobType, tags: run.tags, host: run.host,
    createdAt: run.createdAt, created_at: run.createdAt, heartbeatAt: run.heartbeatAt, heartbeat_at: run.heartbeatAt,
    sweep: run.sweepName, notes: run.notes,
  };
  if (Object.prototype.hasOwnProperty.call(direct, key)) return direct[key];
  const m = /^(config|summary_metrics|summaryMetrics)\.(.+)$/.exec(key);
  if (!m) return undefined;
  let v = parseJSONOr(m[1] === 'config' ? run.config : run.summaryMetrics, {});
  for (const part of m[2].split('.')) v = isObj(v) ? v[part] : undefined;
  return v;
}

function matchCondition(value, cond) {
  const eq = (a, b) => (Array.isArray(a) ? a.includes(b) : a === b || (a == null && b == null));
  if (!isObj(cond) || !Object.keys(cond).every((k) => k.startsWith('$'))) return eq(value, cond);
  for (const [op, arg] of Object.entries(cond)) {
    let ok;
    switch (op) {
      case '$eq': ok = eq(value, arg); break;
      case '$ne': ok = !eq(value, arg); break;
      case '$in': ok = Array.isArray(arg) && arg.some((a) => eq(value, a)); break;
      case '$nin': ok = !(Array.isArray(arg) && arg.some((a) => eq(value, a))); break;
      case '$gt': ok = value != null && value > arg; break;
      case '$gte': ok = value != null && value >= arg; break;
      case '$lt': ok = value != null && value < arg; break;
      case '$lte': ok = value != null && value <= arg; break;
      case '$exists': ok = (value !== undefined && value !== null) === Boolean(arg); break;
      case '$regex': ok = typeof value === 'string' && new RegExp(String(arg)).test(value); break;
      default: throw new GraphQLError(`unsupported filter operator '${op}'`);
    }
    if (!ok) return false;
  }
  return true;
}

function matchFilter(run, filter) {
  if (!isObj(filter)) return true;
  for (const [key, cond] of Object.entries(filter)) {
    if (key === '$and' || key === '$or' || key === '$nor') {
      if (!Array.isArray(cond)) throw new GraphQLError(`${key} needs an array`);
      const hits = cond.map((f) => matchFilter(run, f));
      const ok = key === '$and' ? hits.every(Boolean) : key === '$or' ? hits.some(Boolean) : !hits.some(Boolean);
      if (!ok) return false;
    } else if (key.startsWith('$')) {
      throw new GraphQLError(`unsupported filter operator '${key}'`);
    } else if (!matchCondition(runFieldValue(run, key), cond)) {
      return false;
    }
  }
  return true;
}

function projectRuns(p, filters, names) {
  const filter = filters ? parseJSONOr(filters, null) : null;
  return [...S.runs.values()].filter((r) => r.entity === p.entity && r.project === p.name &&
    (!names || names.includes(r.name)) && matchFilter(r, filter));
}

// ---------------------------------------------------------------------------
// GraphQL object builders. Each builder returns a plain object whose own
// properties are field values or functions (args, ctx) -> value; see
// fieldResolver below. Fields not provided fall back to type defaults.
// ---------------------------------------------------------------------------
function entityNode(name) {
  return { id: b64(`Entity:${name}`), name, isTeam: false };
}

function userNode() {
  const name = S.config.entity;
  return {
    id: b64(`User:${name}`), name, username: name, entity: name,
    email: `${name}@example.invalid`, flags: '{}', admin: false,
    defaultEntity: entityNode(name),
    teams: { edges: [{ cursor: b64(`team:${name}`), node: entityNode(name) }] },
  };
}

function pickKeys(json, keys) {   // config(keys:), summaryMetrics(keys:), wandbConfig(keys:)
  if (!keys) return json;
  const obj = parseJSONOr(json, {});
  const out = {};
  for (const k of keys) if (isObj(obj) && k in obj) out[k] = obj[k];
  return JSON.stringify(out);
}

function runNode(run) {
  const fileInfo = (name) => run.files[name] || { lines: 0, tail: [] };
  return {
    id: run.id, name: run.name, displayName: run.displayName, state: run.state,
    group: run.group, jobType: run.jobType, tags: run.tags.slice(), notes: run.notes,
    description: run.description, host: run.host, commit: run.commit, sweepName: run.sweepName,
    exitcode: run.exitcode, stopped: run.stopped, shouldStop: run.stopped,
    running: run.state === 'running', failed: run.state === 'failed', readOnly: false,
    createdAt: wbTime(run.createdAt), updatedAt: wbTime(run.updatedAt), heartbeatAt: wbTime(run.heartbeatAt),
    projectId: String(run.projectNum),
    config: ({ keys }) => pickKeys(run.config, keys),
    summaryMetrics: ({ keys }) => pickKeys(run.summaryMetrics, keys),
    systemMetrics: '{}',
    // The SDK keeps its own bookkeeping (including "t") under config._wandb;
    // wandbConfig exposes it, which is what the resume check looks at.
    wandbConfig: ({ keys }) => {
      const w = parseJSONOr(run.config, {})._wandb;
      const value = isObj(w) && 'value' in w ? w.value : w;
      return pickKeys(JSON.stringify(isObj(value) ? value : {}), keys);
    },
    historyLineCount: fileInfo('wandb-history.jsonl').lines,
    eventsLineCount: fileInfo('wandb-events.jsonl').lines,
    logLineCount: fileInfo('output.log').lines,
    historyTail: JSON.stringify(fileInfo('wandb-history.jsonl').tail),
    eventsTail: JSON.stringify(fileInfo('wandb-events.jsonl').tail),
    tagColors: run.tags.map((name) => ({ name, colorIndex: 0 })),
    project: () => projectNodeFor(run.entity, run.project),
    model: () => projectNodeFor(run.entity, run.project),
    user: () => userNode(),
  };
}

function runConnection(runs, { first, after, order }) {
  // order: "[+-]field" with field created_at (default), heartbeat_at, name, state, display_name
  const o = typeof order === 'string' && order ? order : '+created_at';
  const desc = o.startsWith('-');
  const key = o.replace(/^[+-]/, '');
  const sorted = runs.slice().sort((a, b) => {
    const va = runFieldValue(a, key), vb = runFieldValue(b, key);
    const c = va === vb ? a.seq - b.seq : (va == null ? -1 : vb == null ? 1 : va < vb ? -1 : 1);
    return desc ? -c : c;
  });
  let start = 0;
  if (after) {
    const m = /^emu-cursor:(\d+)$/.exec(Buffer.from(after, 'base64').toString('utf8'));
    if (!m) throw new GraphQLError(`invalid cursor '${after}'`);
    start = Number(m[1]) + 1;
  }
  const count = first == null ? 50 : Math.max(0, first);
  const page = sorted.slice(start, start + count);
  const edges = page.map((r, i) => ({ cursor: b64(`emu-cursor:${start + i}`), node: runNode(r) }));
  return {
    edges, totalCount: sorted.length,
    pageInfo: {
      startCursor: edges.length ? edges[0].cursor : null,
      endCursor: edges.length ? edges[edges.length - 1].cursor : null,
      hasNextPage: start + page.length < sorted.length, hasPreviousPage: start > 0,
    },
  };
}

function projectNode(p) {
  const findRun = (name) => {
    const r = S.runs.get(`${p.entity}/${p.name}/${name}`);
    return r ? runNode(r) : null;
  };
  const connection = (args) => runConnection(projectRuns(p, args.filters, args.names), args);
  const count = ({ filters }) => projectRuns(p, filters, null).length;
  return {
    id: p.id, internalId: p.internalId, name: p.name, entityName: p.entity,
    entity: entityNode(p.entity), createdAt: wbTime(p.createdAt), readOnly: false,
    run: ({ name }) => findRun(name),
    bucket: ({ name }) => findRun(name),
    runs: connection, buckets: connection,
    runCount: count, bucketCount: count, totalRuns: count,
  };
}

function projectNodeFor(entity, name) {
  const p = S.projects.get(`${entity || S.config.entity}/${name}`);
  return p ? projectNode(p) : null;
}

// Default value for a field that no builder provides: null when the type is
// nullable, otherwise the "empty" value of the type (0, false, "", [], {}).
function defaultFor(type) {
  if (!isNonNullType(type)) return null;
  const t = type.ofType;
  if (isListType(t)) return [];
  if (isEnumType(t)) return t.getValues()[0].value;
  if (isObjectType(t)) return {};
  if (isScalarType(t)) {
    switch (t.name) {
      case 'Boolean': return false;
      case 'Int': case 'Float': case 'Int64': case 'Duration': return 0;
      case 'DateTime': return wbTime(Date.now());
      case 'JSON': return {};
      case 'JSONString': return '{}';
      default: return '';
    }
  }
  return null;   // non-null interface/union: nothing sensible to invent
}

function fieldResolver(source, args, ctx, info) {
  if (isObj(source) && Object.prototype.hasOwnProperty.call(source, info.fieldName)) {
    const v = source[info.fieldName];
    return typeof v === 'function' ? v(args, ctx, info) : v;
  }
  return defaultFor(info.returnType);
}

// ---------------------------------------------------------------------------
// Root Query and Mutation resolvers
// ---------------------------------------------------------------------------
function runByStorageId(id) {
  const run = S.runsById.get(id);
  if (!run) throw new GraphQLError('run not found');
  return run;
}

function checkName(kind, v) {
  if (v.includes('/')) throw new GraphQLError(`invalid ${kind} name '${v}'`);
  return v;
}

// Allowed targets of updateRunState and where they may come from (wandb-api.md 1.6).
const UPDATE_RUN_STATE_FROM = {
  pending: ['running', 'failed', 'crashed', 'preempted'],
  failed: ['pending', 'running'],
};

const ROOT = {
  // --- Query ---
  project: ({ name, entityName }) => (name ? projectNodeFor(entityName, name) : null),
  model: ({ name, entityName }) => (name ? projectNodeFor(entityName, name) : null),
  viewer: () => userNode(),
  serverInfo: () => ({
    features: Object.entries(S.config.features).map(([name, isEnabled]) => ({ name, isEnabled })),
    cliVersionInfo: {},              // JSON! in the schema, so {} rather than null
    latestLocalVersionInfo: null,
  }),

  // --- Mutation ---
  upsertBucket: ({ input }, ctx) => {
    const now = ctx.now;
    if (input.state != null && !RUN_STATES.includes(input.state)) {
      throw new GraphQLError(`invalid run state '${input.state}'`);
    }
    let run;
    let inserted = false;
    if (input.id != null) {
      run = runByStorageId(input.id);
    } else {
      const entity = checkName('entity', input.entityName || S.config.entity);
      const project = checkName('project', input.modelName || 'uncategorized');
      const name = checkName('run', input.name || generateRunId());
      run = S.runs.get(`${entity}/${project}/${name}`);
      if (!run) {
        run = createRun(entity, project, name, input.state || 'running', now);
        inserted = true;
      }
    }
    // Apply every non-null input field.
    const fields = {
      displayName: 'displayName', groupName: 'group', jobType: 'jobType', notes: 'notes',
      description: 'description', config: 'config', summaryMetrics: 'summaryMetrics',
      host: 'host', commit: 'commit', sweep: 'sweepName',
    };
    for (const [from, to] of Object.entries(fields)) if (input[from] != null) run[to] = input[from];
    if (input.tags != null) run.tags = input.tags.filter((t) => t != null);
    if (input.state != null) setRunState(run, input.state, now);
    run.updatedAt = now;
    return { bucket: runNode(run), inserted, updateAvailable: false, clientMutationId: input.clientMutationId ?? null };
  },

  updateRunState: ({ input }, ctx) => {
    if (!S.config.features.UPDATE_RUN_STATE) {
      throw new GraphQLError('updateRunState is not supported by this server');
    }
    const run = runByStorageId(input.id);
    const allowedFrom = UPDATE_RUN_STATE_FROM[input.state] || [];
    if (!allowedFrom.includes(run.state)) {
      throw new GraphQLError(`invalid state transition from ${run.state} to ${input.state}`);
    }
    if (run.sweepName) throw new GraphQLError('invalid state transition: sweep runs cannot have their state updated');
    setRunState(run, input.state, ctx.now);
    return { success: true, clientMutationId: input.clientMutationId ?? null };
  },

  stopRun: ({ input }, ctx) => {
    const run = runByStorageId(input.id);
    run.stopped = true;
    run.updatedAt = ctx.now;
    return { success: true, clientMutationId: input.clientMutationId ?? null };
  },

  deleteRun: ({ input }) => {
    const run = runByStorageId(input.id);
    S.runs.delete(`${run.entity}/${run.project}/${run.name}`);
    S.runsById.delete(run.id);
    return { clientMutationId: input.clientMutationId ?? null };
  },
};

// ---------------------------------------------------------------------------
// Request handlers for the W&B endpoints. Each returns {status, body, headers?}
// and never writes to the socket itself, so faults can reshape the answer.
// ---------------------------------------------------------------------------
const UNAUTHORIZED = { status: 401, body: { errors: [{ message: 'user is not logged in' }] } };

function checkAuth(header) {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header || '');
  if (!m) return false;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0 || decoded.slice(0, colon) !== 'api') return false;
  const key = decoded.slice(colon + 1);
  const keys = S.config.apiKeys;
  return keys.length ? keys.includes(key) : key.length >= 40;
}

function gqlErrors(errors) {
  return { errors: errors.map((e) => (typeof e.toJSON === 'function' ? e.toJSON() : { message: String(e.message || e) })) };
}

async function handleGraphql(req, ctx) {
  if (!ctx.authOk) return UNAUTHORIZED;
  if (req.method !== 'POST') return { status: 405, body: { errors: [{ message: 'use POST' }] } };
  const body = ctx.json;
  if (!isObj(body)) return { status: 400, body: { errors: [{ message: 'request body must be a JSON object' }] } };
  const { query, variables, operationName } = body;
  if (typeof query !== 'string') return { status: 400, body: { errors: [{ message: 'query must be a string' }] } };
  if (variables != null && !isObj(variables)) return { status: 400, body: { errors: [{ message: 'variables must be an object' }] } };
  if (operationName != null && typeof operationName !== 'string') {
    return { status: 400, body: { errors: [{ message: 'operationName must be a string' }] } };
  }
  let document;
  try {
    document = parse(query, { maxTokens: 100000 });
  } catch (e) {
    return { status: 400, body: gqlErrors([e]) };
  }
  const validationErrors = validate(SCHEMA, document);
  if (validationErrors.length) return { status: 400, body: gqlErrors(validationErrors) };
  const result = await execute({
    schema: SCHEMA, document, rootValue: ROOT, contextValue: { now: Date.now() },
    variableValues: variables || {}, operationName: operationName || undefined, fieldResolver,
  });
  // No `data` at all means the request itself was refused (bad variables,
  // unknown operationName): answer 400. Field errors come back as 200.
  const out = {};
  if (result.data !== undefined) out.data = result.data;
  if (result.errors) Object.assign(out, gqlErrors(result.errors));
  return { status: result.data === undefined ? 400 : 200, body: out };
}

// file_stream: wandb-api.md section 3.
function handleFileStream(req, ctx, match) {
  if (!ctx.authOk) return UNAUTHORIZED;
  if (req.method !== 'POST') return { status: 405, body: { error: 'use POST' } };
  const body = ctx.json;
  if (!isObj(body)) return { status: 400, body: { error: 'body must be a JSON object' } };
  let entity, project, name;
  try {
    [entity, project, name] = match.slice(1, 4).map(decodeURIComponent);
  } catch (_) {
    return { status: 400, body: { error: 'bad path encoding' } };
  }
  const run = S.runs.get(`${entity}/${project}/${name}`);
  if (!run) return { status: 404, body: { error: 'run not found' } };

  // Check field types before changing anything.
  const bad = (msg) => ({ status: 400, body: { error: msg } });
  for (const f of ['preempting', 'complete']) {
    if (body[f] != null && typeof body[f] !== 'boolean') return bad(`${f} must be a boolean`);
  }
  if (body.exitcode != null && !Number.isInteger(body.exitcode)) return bad('exitcode must be an integer');
  if (body.files != null) {
    if (!isObj(body.files)) return bad('files must be an object');
    for (const [fname, chunk] of Object.entries(body.files)) {
      if (!isObj(chunk) || !Number.isInteger(chunk.offset) || chunk.offset < 0 ||
          !Array.isArray(chunk.content) || !chunk.content.every((l) => typeof l === 'string')) {
        return bad(`files['${fname}'] must be {"offset": int, "content": [string, ...]}`);
      }
    }
  }

  const now = Date.now();
  // 1. Any accepted request is a sign of life.
  run.heartbeatAt = now;
  run.lastActivity = now;
  if (run.state === 'pending' || run.state === 'crashed') setRunState(run, 'running', now);
  // 2. Pre-emption notice.
  if (body.preempting === true && (run.state === 'running' || run.state === 'pending')) {
    setRunState(run, 'preempting', now);
  }
  // 3. Data: count lines per file, keep short tails, take the summary's last line.
  for (const [fname, chunk] of Object.entries(body.files || {})) {
    const info = run.files[fname] || (run.files[fname] = { lines: 0, tail: [] });
    info.lines = Math.max(info.lines, chunk.offset + chunk.content.length);
    info.tail = info.tail.concat(chunk.content).slice(-10);
    const last = chunk.content[chunk.content.length - 1];
    if (fname === 'wandb-summary.json' && last !== undefined && isObj(parseJSONOr(last, null))) {
      run.summaryMetrics = last;
    }
  }
  // 4. Completion: 0 -> finished; otherwise preempted (if pre-empting) or failed.
  //    Ignored once the run has ended.
  if (body.complete === true && (run.state === 'running' || run.state === 'preempting')) {
    const code = body.exitcode == null ? null : body.exitcode;
    run.exitcode = code;
    const final = !code ? 'finished' : run.state === 'preempting' ? 'preempted' : 'failed';
    setRunState(run, final, now);
  }
  run.updatedAt = now;
  return { status: 200, body: { stopped: run.stopped, limits: {} } };
}

// ---------------------------------------------------------------------------
// Faults: a FIFO queue; the first matching fault is applied to a request.
// ---------------------------------------------------------------------------
const FAULT_KINDS = ['status', 'drop', 'blackhole', 'malformed', 'graphql_error', 'truncate', 'oversize_bytes', 'drip_ms'];
const FAULT_KEYS = new Set([...FAULT_KINDS, 'target', 'operation', 'times', 'retry_after', 'body', 'headers', 'delay_ms', 'process']);

function checkFault(f) {
  if (!isObj(f)) throw new Error('each fault must be an object');
  for (const k of Object.keys(f)) if (!FAULT_KEYS.has(k)) throw new Error(`unknown fault field '${k}'`);
  const kinds = FAULT_KINDS.filter((k) => f[k] !== undefined && f[k] !== false);
  if (kinds.length > 1) throw new Error(`a fault can have only one of ${FAULT_KINDS.join(', ')} (got ${kinds.join(', ')})`);
  if (!kinds.length && f.delay_ms === undefined) throw new Error('a fault needs a kind or delay_ms');
  if (f.target !== undefined && !['graphql', 'file_stream', 'any'].includes(f.target)) throw new Error(`bad target '${f.target}'`);
  if (f.times !== undefined && !(Number.isInteger(f.times) && (f.times > 0 || f.times === -1))) throw new Error('times must be a positive integer or -1 (forever)');
  if (f.status !== undefined && !(Number.isInteger(f.status) && f.status >= 100 && f.status <= 599)) throw new Error('status must be an HTTP status code');
  for (const k of ['delay_ms', 'oversize_bytes', 'drip_ms']) {
    if (f[k] !== undefined && !(Number.isInteger(f[k]) && f[k] >= 0)) throw new Error(`${k} must be a non-negative integer`);
  }
  if (f.headers !== undefined && !isObj(f.headers)) throw new Error('headers must be an object');
  const fault = { ...f, target: f.target || 'any', times: f.times === undefined ? 1 : f.times };
  for (const k of FAULT_KINDS) if (fault[k] === false) delete fault[k];   // "drop": false means no drop
  if (fault.retry_after !== undefined) fault.retry_after = String(fault.retry_after);
  if (fault.body !== undefined && typeof fault.body !== 'string') fault.body = JSON.stringify(fault.body);
  return fault;
}

function takeFault(target, operationName) {
  const i = S.faults.findIndex((f) => (f.target === 'any' || f.target === target) &&
    (f.operation === undefined || f.operation === operationName));
  if (i < 0) return null;
  const f = S.faults[i];
  if (f.times > 0 && --f.times === 0) S.faults.splice(i, 1);
  const { times, ...applied } = f;   // eslint-disable-line no-unused-vars
  return applied;
}

// ---------------------------------------------------------------------------
// Writing answers: whole, dripped, truncated or oversized.
// ---------------------------------------------------------------------------
function headersFor(extra, length) {
  return { 'Content-Type': 'application/json', 'Content-Length': String(length), ...(extra || {}) };
}

function sendWhole(res, status, text, extra) {
  const buf = Buffer.from(text, 'utf8');
  res.writeHead(status, headersFor(extra, buf.length));
  res.end(buf);
}

function waitDrainOrClose(res) {
  return new Promise((resolve) => {
    const done = () => { res.off('drain', done); res.off('close', done); resolve(); };
    res.on('drain', done);
    res.on('close', done);
  });
}

async function sendDripped(res, status, text, extra, dripMs) {
  const buf = Buffer.from(text, 'utf8');
  res.writeHead(status, headersFor(extra, buf.length));
  for (let i = 0; i < buf.length; i++) {
    if (res.destroyed || res.socket == null || res.socket.destroyed) return;
    res.write(buf.subarray(i, i + 1));
    if (i + 1 < buf.length) await sleep(dripMs);
  }
  res.end();
}

function sendTruncated(req, res, status, text, extra) {
  const buf = Buffer.from(text, 'utf8');
  const sent = buf.subarray(0, Math.floor(buf.length / 2));
  res.writeHead(status, headersFor(extra, buf.length + 1024));   // promise more than we send
  res.write(sent, () => {
    req.socket.end();
    setTimeout(() => req.socket.destroy(), 1000).unref();
  });
}

async function sendOversize(res, n, extra) {
  res.writeHead(200, headersFor(extra, n));
  const head = Buffer.from('{"data":{"padding":"');
  const tail = Buffer.from('"}}');
  const pad = Buffer.alloc(64 * 1024, 'x');
  let left = n;
  if (n >= head.length + tail.length) { res.write(head); left -= head.length + tail.length; }
  while (left > 0 && !res.destroyed && !(res.socket && res.socket.destroyed)) {
    const k = Math.min(pad.length, left);
    left -= k;
    if (!res.write(k === pad.length ? pad : pad.subarray(0, k))) await waitDrainOrClose(res);
  }
  if (!res.destroyed) res.end(n >= head.length + tail.length ? tail : undefined);
}

// ---------------------------------------------------------------------------
// Main request path for everything that is not /_emu
// ---------------------------------------------------------------------------
function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) tooLarge = true; else chunks.push(c);
    });
    // A promise settles once: 'end' wins; 'error'/'close' first means the client left.
    req.on('end', () => resolve({ buf: Buffer.concat(chunks), tooLarge }));
    req.on('error', () => resolve({ buf: Buffer.concat(chunks), tooLarge, aborted: true }));
    req.on('close', () => resolve({ buf: Buffer.concat(chunks), tooLarge, aborted: true }));
  });
}

// The operation name used for logging and fault matching: the explicit
// operationName, else the name of the document's only operation.
function operationNameOf(json) {
  if (!isObj(json)) return null;
  if (typeof json.operationName === 'string' && json.operationName) return json.operationName;
  if (typeof json.query !== 'string') return null;
  try {
    const ops = parse(json.query, { maxTokens: 100000 }).definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
    return ops.length === 1 && ops[0].name ? ops[0].name.value : null;
  } catch (_) {
    return null;
  }
}

function logRequest(entry) {
  S.requests.push(entry);
  const over = S.requests.length - S.config.maxRequests;
  if (over > 0) S.requests.splice(0, over);
}

async function handleApi(req, res, url) {
  const { buf, tooLarge, aborted } = await readBody(req);
  let text = null;
  let json;
  let bodyError = null;
  try {
    let raw = buf;
    if (/gzip/i.test(req.headers['content-encoding'] || '')) raw = zlib.gunzipSync(buf, { maxOutputLength: MAX_BODY_BYTES });
    text = raw.toString('utf8');
    json = text.length ? JSON.parse(text) : undefined;
  } catch (e) {
    if (text === null) bodyError = 'cannot decompress body';
    json = undefined;
  }
  const fsMatch = FILE_STREAM_RE.exec(url.pathname);
  const target = url.pathname === '/graphql' ? 'graphql' : fsMatch ? 'file_stream' : 'other';
  const operationName = target === 'graphql' ? operationNameOf(json) : null;
  const headers = { ...req.headers };
  delete headers.authorization;
  delete headers['proxy-authorization'];
  delete headers.cookie;
  const ctx = { authOk: checkAuth(req.headers.authorization), json };
  const entry = {
    seq: ++S.requestSeq, at: isoTime(Date.now()), method: req.method, path: url.pathname + url.search,
    operationName,
    query: isObj(json) && typeof json.query === 'string' ? json.query : null,
    variables: isObj(json) && json.variables !== undefined ? json.variables : null,
    body: json !== undefined ? json : text,
    authorization_ok: ctx.authOk, status: null, fault: null,
    user_agent: req.headers['user-agent'] || null, headers,
  };
  logRequest(entry);
  log(`#${entry.seq} ${req.method} ${entry.path} ${operationName || ''}`);
  if (aborted) return;   // the client left before sending the whole body

  const fault = takeFault(target, operationName);
  entry.fault = fault;
  if (S.config.delayMs > 0) await sleep(S.config.delayMs);
  if (fault && fault.delay_ms) await sleep(fault.delay_ms);

  // Faults that replace the answer without touching the socket's framing.
  const extra = fault && fault.headers ? { ...fault.headers } : {};
  if (fault && fault.retry_after !== undefined) extra['Retry-After'] = fault.retry_after;
  if (fault && fault.drop !== undefined) { entry.status = null; req.socket.destroy(); return; }
  if (fault && fault.blackhole !== undefined) { entry.status = null; return; }   // socket stays open until the client leaves

  // Whether the request is processed (state changes happen) before the fault's
  // answer: by default only for delay_ms, drip_ms and truncate; `process`
  // overrides that.
  const processByDefault = !fault || ['drip_ms', 'truncate'].some((k) => fault[k] !== undefined) ||
    FAULT_KINDS.every((k) => fault[k] === undefined);
  const processIt = fault && fault.process !== undefined ? Boolean(fault.process) : processByDefault;
  let answer = null;
  if (processIt) {
    if (tooLarge) answer = { status: 413, body: { errors: [{ message: 'request body too large' }] } };
    else if (bodyError) answer = { status: 400, body: { errors: [{ message: bodyError }] } };
    else if (target === 'graphql') answer = await handleGraphql(req, ctx);
    else if (target === 'file_stream') answer = handleFileStream(req, ctx, fsMatch);
    else answer = { status: 404, body: { error: 'not found' } };
  }
  const answerText = answer ? JSON.stringify(answer.body) : '{"data":{"emulator":"fault"}}';

  if (fault && fault.status !== undefined) {
    entry.status = fault.status;
    return sendWhole(res, fault.status, fault.body !== undefined ? fault.body : '{"errors":[{"message":"injected fault"}]}', extra);
  }
  if (fault && fault.malformed !== undefined) {
    entry.status = 200;
    return sendWhole(res, 200, '{"data": {"upsertBucket": <html>this is not JSON', extra);
  }
  if (fault && fault.graphql_error !== undefined) {
    entry.status = 200;
    const message = typeof fault.graphql_error === 'string' ? fault.graphql_error : 'injected graphql error';
    return sendWhole(res, 200, JSON.stringify({ data: null, errors: [{ message }] }), extra);
  }
  if (fault && fault.oversize_bytes !== undefined) {
    entry.status = 200;
    return sendOversize(res, fault.oversize_bytes, extra);
  }
  const status = answer ? answer.status : 200;
  entry.status = status;
  const headersOut = { ...(answer && answer.headers), ...extra };
  if (fault && fault.truncate !== undefined) return sendTruncated(req, res, 200, answerText, headersOut);
  if (fault && fault.drip_ms !== undefined) return sendDripped(res, status, answerText, headersOut, fault.drip_ms);
  return sendWhole(res, status, answerText, headersOut);
}

// ---------------------------------------------------------------------------
// Test control API under /_emu (no auth, not logged, never faulted/delayed)
// ---------------------------------------------------------------------------
function runJSON(run) {
  return {
    entity: run.entity, project: run.project, name: run.name, id: run.id, state: run.state,
    states: run.states.map((s) => ({ state: s.state, at: isoTime(s.at) })),
    displayName: run.displayName, group: run.group, jobType: run.jobType, tags: run.tags,
    notes: run.notes, description: run.description, host: run.host, sweep: run.sweepName,
    config: parseJSONOr(run.config, run.config), summary: parseJSONOr(run.summaryMetrics, run.summaryMetrics),
    exitcode: run.exitcode, stopped: run.stopped,
    heartbeatAt: isoTime(run.heartbeatAt), createdAt: isoTime(run.createdAt), updatedAt: isoTime(run.updatedAt),
  };
}

function configJSON() {
  const c = S.config;
  return {
    crash_after_ms: c.crashAfterMs, delay_ms: c.delayMs, features: c.features,
    api_keys_configured: c.apiKeys.length, entity: c.entity, max_requests: c.maxRequests,
  };
}

function applyConfig(body) {
  const c = { ...S.config, features: { ...S.config.features } };
  const nonNegInt = (k) => {
    if (!(Number.isInteger(body[k]) && body[k] >= 0)) throw new Error(`${k} must be a non-negative integer`);
    return body[k];
  };
  for (const k of Object.keys(body)) {
    switch (k) {
      case 'crash_after_ms': c.crashAfterMs = nonNegInt(k); break;
      case 'delay_ms': c.delayMs = nonNegInt(k); break;
      case 'max_requests': c.maxRequests = Math.max(1, nonNegInt(k)); break;
      case 'features':
        if (!isObj(body.features)) throw new Error('features must be an object');
        for (const [name, on] of Object.entries(body.features)) {
          if (typeof on !== 'boolean') throw new Error(`feature ${name} must be true or false`);
          c.features[name] = on;
        }
        break;
      case 'api_keys':
        if (!Array.isArray(body.api_keys) || !body.api_keys.every((x) => typeof x === 'string')) throw new Error('api_keys must be an array of strings');
        c.apiKeys = body.api_keys.slice();
        break;
      case 'entity':
        if (typeof body.entity !== 'string' || !body.entity || body.entity.includes('/')) throw new Error('entity must be a non-empty name');
        c.entity = body.entity;
        break;
      default: throw new Error(`unknown config key '${k}'`);
    }
  }
  S.config = c;
}

function forceState(body) {
  if (typeof body.path !== 'string') return { status: 400, body: { error: 'path must be "ENTITY/PROJECT/NAME"' } };
  const run = S.runs.get(body.path);
  if (!run) return { status: 404, body: { error: 'run not found' } };
  if (body.state !== undefined && !RUN_STATES.includes(body.state)) return { status: 400, body: { error: `invalid run state '${body.state}'` } };
  if (body.exitcode !== undefined && body.exitcode !== null && typeof body.exitcode !== 'number') return { status: 400, body: { error: 'exitcode must be a number or null' } };
  if (body.stopped !== undefined && typeof body.stopped !== 'boolean') return { status: 400, body: { error: 'stopped must be a boolean' } };
  const now = Date.now();
  if (body.exitcode !== undefined) run.exitcode = body.exitcode;
  if (body.stopped !== undefined) run.stopped = body.stopped;
  if (body.state !== undefined) setRunState(run, body.state, now);
  run.updatedAt = now;
  return { status: 200, body: { run: runJSON(run) } };
}

async function handleControl(req, res, url) {
  const { buf } = await readBody(req);
  let body = {};
  if (buf.length) {
    try { body = JSON.parse(buf.toString('utf8')); } catch (_) { return sendWhole(res, 400, '{"error":"body is not JSON"}'); }
    if (!isObj(body)) return sendWhole(res, 400, '{"error":"body must be a JSON object"}');
  }
  const route = `${req.method} ${url.pathname.replace(/\/+$/, '')}`;
  let out;
  try {
    switch (route) {
      case 'GET /_emu/runs': out = { status: 200, body: { runs: [...S.runs.values()].map(runJSON) } }; break;
      case 'GET /_emu/run': {
        const run = S.runs.get(url.searchParams.get('path') || '');
        out = run ? { status: 200, body: runJSON(run) } : { status: 404, body: { error: 'run not found' } };
        break;
      }
      case 'GET /_emu/requests': {
        const since = Number(url.searchParams.get('since') || 0);
        out = { status: 200, body: { requests: S.requests.filter((r) => r.seq > since) } };
        break;
      }
      case 'POST /_emu/reset': reset(); out = { status: 200, body: { ok: true } }; break;
      case 'GET /_emu/config': out = { status: 200, body: configJSON() }; break;
      case 'POST /_emu/config': applyConfig(body); out = { status: 200, body: configJSON() }; break;
      case 'POST /_emu/set': out = forceState(body); break;
      case 'GET /_emu/faults': out = { status: 200, body: { faults: S.faults } }; break;
      case 'POST /_emu/faults': {
        if (!Array.isArray(body.faults)) throw new Error('faults must be an array');
        const checked = body.faults.map(checkFault);   // all-or-nothing
        S.faults.push(...checked);
        out = { status: 200, body: { faults: S.faults } };
        break;
      }
      case 'DELETE /_emu/faults': S.faults = []; out = { status: 200, body: { faults: [] } }; break;
      default: out = { status: 404, body: { error: `no control endpoint ${route}` } };
    }
  } catch (e) {
    out = { status: 400, body: { error: e.message } };
  }
  sendWhole(res, out.status, JSON.stringify(out.body));
}

// ---------------------------------------------------------------------------
// HTTP server, start-up and shutdown
// ---------------------------------------------------------------------------
const sockets = new Set();

const server = http.createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url, 'http://127.0.0.1');
  } catch (_) {
    return sendWhole(res, 400, '{"error":"bad request target"}');
  }
  const isControl = url.pathname === '/_emu' || url.pathname.startsWith('/_emu/');
  (isControl ? handleControl(req, res, url) : handleApi(req, res, url)).catch((e) => {
    process.stderr.write(`[emu] internal error: ${e && e.stack ? e.stack : e}\n`);
    if (!res.headersSent && !res.destroyed) {
      sendWhole(res, 500, JSON.stringify({ errors: [{ message: `internal emulator error: ${e && e.message}` }] }));
    } else {
      res.destroy();
    }
  });
});
server.on('connection', (sock) => { sockets.add(sock); sock.on('close', () => sockets.delete(sock)); });
server.on('clientError', (err, sock) => {
  if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"error":"bad request"}');
  else sock.destroy();
});

// Never die on a stray error: log it and carry on.
process.on('uncaughtException', (e) => process.stderr.write(`[emu] uncaught: ${e && e.stack ? e.stack : e}\n`));
process.on('unhandledRejection', (e) => process.stderr.write(`[emu] unhandled rejection: ${e && e.stack ? e.stack : e}\n`));

function shutdown(sig) {
  log(`${sig}: shutting down`);
  clearInterval(staleTimer);
  server.close();
  for (const s of sockets) s.destroy();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.on('error', (e) => {
  process.stderr.write(`wbsched-emulator: cannot listen: ${e.message}\n`);
  process.exit(1);
});
server.listen(OPTS.port, '127.0.0.1', () => {
  // The harness reads the port from this first line; on Linux writes to a
  // pipe or file from process.stdout are synchronous, so it is flushed now.
  process.stdout.write(`wbsched-emulator listening on http://127.0.0.1:${server.address().port}\n`);
});
