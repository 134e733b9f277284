'use strict';
// Loads the reconstructed W&B GraphQL schema (schema/schema.graphql) together
// with schema/schema-extensions.graphql (which uses `extend type`), and gives
// the custom scalars the input rules the real server applies.
// Shared by server.js and validate.js so both accept exactly the same things.

const fs = require('fs');
const path = require('path');
const { buildSchema, GraphQLError, Kind } = require('graphql');

const SCHEMA_DIR = path.join(__dirname, 'schema');

// Input rule for JSONString: the server json-decodes it, so the value must be a
// string that holds valid JSON. This catches a client that sends an object
// where W&B expects a JSON-encoded string (e.g. `config`).
function parseJSONString(value) {
  if (typeof value !== 'string') {
    throw new GraphQLError(`JSONString must be a string holding JSON, got ${typeof value}`);
  }
  try {
    JSON.parse(value);
  } catch (e) {
    throw new GraphQLError(`JSONString is not valid JSON: ${e.message}`);
  }
  return value;
}

function loadSchema() {
  const text = fs.readFileSync(path.join(SCHEMA_DIR, 'schema.graphql'), 'utf8') + '\n' +
    fs.readFileSync(path.join(SCHEMA_DIR, 'schema-extensions.graphql'), 'utf8');
  const schema = buildSchema(text);

  const jsonString = schema.getType('JSONString');
  jsonString.parseValue = parseJSONString;
  jsonString.parseLiteral = (ast) => {
    if (ast.kind !== Kind.STRING) throw new GraphQLError('JSONString literal must be a string');
    return parseJSONString(ast.value);
  };
  // Output side: resolvers already return strings; objects are encoded.
  jsonString.serialize = (v) => (typeof v === 'string' ? v : JSON.stringify(v));

  return schema;
}

module.exports = { loadSchema, SCHEMA_DIR };
