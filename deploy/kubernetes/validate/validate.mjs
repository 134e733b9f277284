// Validates Kubernetes objects offline against the API's JSON schemas
// (npm kubernetes-models), plus wbsched's own rules for the Jobs it ships.
//
//   node validate.mjs FILE... | -        (- reads a multi-document stream on stdin)
//
// Prints "ok FILE KIND NAME" or "FAIL FILE KIND NAME: reason" per object and
// exits 1 when any object fails or none was read.
import fs from 'node:fs';
import { loadAll } from 'js-yaml';

// The model class of apiVersion/kind: kubernetes-models/<group>/<version>/<Kind>
// (core types: kubernetes-models/v1/<Kind>).
async function modelFor(apiVersion, kind) {
  if (!/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z]+$/.test(kind)) return null;
  try {
    const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
    return mod[kind] || null;
  } catch (e) {
    return null;
  }
}

// Rules the schemas cannot express, for every Job and pod template here.
function policy(doc) {
  const problems = [];
  if (doc.kind !== 'Job') return problems;
  const spec = doc.spec || {};
  const pod = (spec.template || {}).spec || {};
  if (pod.restartPolicy !== 'Never') problems.push('restartPolicy must be Never (podFailurePolicy needs it)');
  if (spec.podReplacementPolicy !== 'Failed') problems.push('podReplacementPolicy must be Failed');
  const rules = ((spec.podFailurePolicy || {}).rules || []);
  const ignores = rules.some((r) => r.action === 'Ignore' && (r.onPodConditions || [])
    .some((c) => c.type === 'DisruptionTarget' && c.status === 'True'));
  if (!ignores) problems.push('podFailurePolicy must Ignore DisruptionTarget');
  if (pod.serviceAccountName !== 'wbsched') problems.push('serviceAccountName must be wbsched');
  for (const c of [...(pod.initContainers || []), ...(pod.containers || [])]) {
    const cmd = [...(c.command || []), ...(c.args || [])];
    if (cmd[0] !== 'wbsched' || cmd[1] !== 'watchdog') continue;
    const env = new Map((c.env || []).map((e) => [e.name, e]));
    for (const name of ['POD_NAME', 'POD_NAMESPACE']) {
      if (!env.has(name)) problems.push(`container ${c.name}: the watchdog needs ${name} (Downward API)`);
    }
    if (!env.has('JOB_UID') && !env.has('WANDB_RUN_ID')) {
      problems.push(`container ${c.name}: the watchdog needs JOB_UID or WANDB_RUN_ID`);
    }
    if (!cmd.includes('--')) problems.push(`container ${c.name}: watchdog arguments need "--" before CMD`);
  }
  return problems;
}

async function check(name, text) {
  let bad = 0;
  let n = 0;
  let docs;
  try {
    docs = loadAll(text);
  } catch (e) {
    console.log(`FAIL ${name}: not YAML: ${e.message}`);
    return { bad: 1, n: 0 };
  }
  for (const doc of docs) {
    if (doc === null || doc === undefined) continue;
    n += 1;
    const what = `${name} ${doc.kind} ${(doc.metadata || {}).name}`;
    if (doc.kind === 'Kustomization') {
      console.log(`skip ${what} (kustomize's own file)`);
      continue;
    }
    const Model = await modelFor(String(doc.apiVersion), String(doc.kind));
    if (!Model) {
      console.log(`FAIL ${what}: no schema for ${doc.apiVersion} ${doc.kind}`);
      bad += 1;
      continue;
    }
    try {
      new Model(doc).validate();
    } catch (e) {
      console.log(`FAIL ${what}: ${e.message}`);
      bad += 1;
      continue;
    }
    const problems = policy(doc);
    if (problems.length) {
      console.log(`FAIL ${what}: ${problems.join('; ')}`);
      bad += 1;
      continue;
    }
    console.log(`ok ${what}`);
  }
  return { bad, n };
}

let bad = 0;
let n = 0;
const args = process.argv.slice(2);
if (!args.length) {
  console.error('usage: node validate.mjs FILE... | -');
  process.exit(2);
}
for (const f of args) {
  const text = f === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(f, 'utf8');
  const r = await check(f === '-' ? 'stdin' : f, text);
  bad += r.bad;
  n += r.n;
}
console.log(`${n} objects, ${bad} invalid`);
process.exit(bad || !n ? 1 : 0);
