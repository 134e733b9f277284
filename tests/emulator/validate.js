#!/usr/bin/env node
'use strict';
// Validate GraphQL documents against the emulator's W&B schema
// (schema/schema.graphql + schema/schema-extensions.graphql).
//
//   node validate.js < docs.jsonl        one JSON object per line:
//                                        {"name": "...", "query": "...", "variables": {...}, "operationName": "..."}
//   node validate.js a.graphql b.jsonl   .graphql file = one document named by its file name, no variables;
//                                        any other file is read as JSON lines like stdin
//   node validate.js x.graphql -         files, then stdin
//
// Each document is parsed and validated; when "variables" is present it is
// also coerced against the operation's variable definitions, as a server does.
// Prints "ok NAME" or "FAIL NAME: <errors>" per document and a summary line.
// Exit status: 0 if all are valid, 1 if any is invalid or none was read,
// 2 on a usage or I/O error.

const fs = require('fs');
const path = require('path');
const { parse, validate, Kind } = require('graphql');
const { getVariableValues } = require('graphql/execution/values');
const { loadSchema } = require('./load-schema');

const schema = loadSchema();

// Returns a list of error messages (empty when the document is valid).
function check(doc) {
  if (typeof doc.query !== 'string') return ['"query" must be a string'];
  let document;
  try {
    document = parse(doc.query);
  } catch (e) {
    return [e.message];
  }
  const errors = validate(schema, document).map((e) => e.message);
  if (errors.length || doc.variables === undefined) return errors;

  if (doc.variables !== null && (typeof doc.variables !== 'object' || Array.isArray(doc.variables))) {
    return ['"variables" must be an object'];
  }
  const ops = document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
  let op;
  if (doc.operationName) {
    op = ops.find((o) => o.name && o.name.value === doc.operationName);
    if (!op) return [`no operation named "${doc.operationName}"`];
  } else if (ops.length === 1) {
    op = ops[0];
  } else {
    return ['several operations in the document: give "operationName"'];
  }
  const coerced = getVariableValues(schema, op.variableDefinitions || [], doc.variables || {});
  return coerced.errors ? coerced.errors.map((e) => e.message) : [];
}

let valid = 0;
let invalid = 0;

function report(name, errors) {
  if (errors.length) {
    invalid++;
    process.stdout.write(`FAIL ${name}: ${errors.join('; ').replace(/\s*\n\s*/g, ' ')}\n`);
  } else {
    valid++;
    process.stdout.write(`ok ${name}\n`);
  }
}

function checkJSONLines(text, source) {
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${source}:${i + 1}`;
    let doc;
    try {
      doc = JSON.parse(line);
    } catch (e) {
      report(where, [`not a JSON line: ${e.message}`]);
      return;
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      report(where, ['line must be a JSON object']);
      return;
    }
    report(typeof doc.name === 'string' && doc.name ? doc.name : where, check(doc));
  });
}

function main() {
  const args = process.argv.slice(2);
  if (args.includes('-h') || args.includes('--help')) {
    process.stdout.write('usage: node validate.js [FILE.graphql | FILE.jsonl | -]...   (no arguments: JSON lines on stdin)\n');
    return 0;
  }
  const inputs = args.length ? args : ['-'];
  for (const arg of inputs) {
    let text;
    try {
      text = fs.readFileSync(arg === '-' ? 0 : arg, 'utf8');
    } catch (e) {
      process.stderr.write(`validate.js: cannot read ${arg}: ${e.message}\n`);
      return 2;
    }
    if (arg !== '-' && /\.(graphql|gql)$/i.test(arg)) report(path.basename(arg), check({ query: text }));
    else checkJSONLines(text, arg === '-' ? 'stdin' : path.basename(arg));
  }
  process.stdout.write(`${valid} documents valid, ${invalid} invalid\n`);
  return invalid > 0 || valid === 0 ? 1 : 0;
}

process.exitCode = main();
