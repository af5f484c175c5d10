#!/usr/bin/env node
// Writes src/models.ts, the SDK's types, from lap's OpenAPI document: one exported type per
// schema of `components.schemas`, in the document's order, with its descriptions as doc comments.
//
//   node scripts/gen-models.mjs http://127.0.0.1:3000   # a running `lap serve` (no key needed)
//   node scripts/gen-models.mjs openapi.json            # a saved document
//   node scripts/gen-models.mjs --check SOURCE          # exit 1 when src/models.ts differs
//
// `generate(doc)` is the whole translation, exported for tests/openapi.test.ts, which runs it on
// the live server's document and fails when the committed file differs. It covers the JSON Schema
// lap's document uses (OpenAPI 3.1, as utoipa writes it): `$ref`, `type` (one or a list, `null`
// included), `enum`, `const`, `oneOf`/`anyOf` (a union), `allOf` (an intersection), `items`,
// `properties` with `required`, `additionalProperties`. A schema it does not know is an error,
// not an `unknown` that would quietly type nothing.

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HEADER = `// The shapes of lap's REST API, generated from its OpenAPI document (\`GET /api/v1/openapi.json\`)
// by scripts/gen-models.mjs. Do not edit: \`npm run gen -- URL\` rewrites this file, and
// tests/openapi.test.ts fails when it differs from what a live server's document gives.
//
// Field names are the API's own (snake_case, and \`sessionID\` where opencode's shape has it);
// an optional field may be left out by the server.`;

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** The TypeScript text of src/models.ts for `doc`. */
export function generate(doc) {
  const schemas = doc?.components?.schemas;
  if (!schemas || typeof schemas !== "object") throw new Error("the document has no `components.schemas`");
  const out = [HEADER];
  for (const [name, schema] of Object.entries(schemas)) {
    if (!IDENT.test(name)) throw new Error(`schema name \`${name}\` is not a TypeScript name`);
    out.push("");
    out.push(...docComment(schema, ""));
    if (isPlainObject(schema)) {
      out.push(`export interface ${name} ${objectType(schema, "", name)}`);
    } else {
      out.push(`export type ${name} = ${tsType(schema, "", name)};`);
    }
  }
  return out.join("\n") + "\n";
}

/** An object with named properties and nothing else that would need a type alias. */
function isPlainObject(schema) {
  return (
    typeof schema === "object" &&
    schema.properties !== undefined &&
    !schema.oneOf &&
    !schema.anyOf &&
    !schema.allOf &&
    (schema.type === "object" || schema.type === undefined)
  );
}

function docComment(schema, indent) {
  const lines = [];
  if (typeof schema === "object" && typeof schema.description === "string" && schema.description.trim()) {
    lines.push(...schema.description.trim().split("\n"));
  }
  if (typeof schema === "object" && schema.deprecated) lines.push("@deprecated");
  if (!lines.length) return [];
  const safe = lines.map((l) => l.replace(/\*\//g, "*\\/").trimEnd());
  if (safe.length === 1) return [`${indent}/** ${safe[0]} */`];
  return [`${indent}/**`, ...safe.map((l) => (l ? `${indent} * ${l}` : `${indent} *`)), `${indent} */`];
}

function literal(value) {
  if (value === null) return "null";
  if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") return JSON.stringify(value);
  throw new Error(`unsupported literal ${JSON.stringify(value)}`);
}

function union(parts) {
  const unique = [...new Set(parts)];
  // `null` last, as people write it.
  unique.sort((a, b) => (a === "null") - (b === "null"));
  return unique.join(" | ");
}

/** The TypeScript type of `schema`; `indent` is the indentation of the line it starts on. */
function tsType(schema, indent, where) {
  if (schema === true || (typeof schema === "object" && schema !== null && Object.keys(schema).length === 0)) return "unknown";
  if (schema === false) return "never";
  if (typeof schema !== "object" || schema === null) throw new Error(`${where}: not a schema: ${JSON.stringify(schema)}`);
  if (schema.$ref) {
    const prefix = "#/components/schemas/";
    if (!schema.$ref.startsWith(prefix)) throw new Error(`${where}: unsupported $ref ${schema.$ref}`);
    return schema.$ref.slice(prefix.length);
  }
  if (schema.const !== undefined) return literal(schema.const);
  if (schema.enum) return union(schema.enum.map(literal));
  const variants = schema.oneOf ?? schema.anyOf;
  if (variants) {
    const base = withoutKeys(schema, ["oneOf", "anyOf", "description", "title", "discriminator"]);
    const each = variants.map((v, i) => wrapIfNeeded(tsType(v, indent, `${where}.oneOf[${i}]`)));
    const own = Object.keys(base).length ? ` & ${wrapIfNeeded(tsType(base, indent, where))}` : "";
    return own ? `(${union(each)})${own}` : union(each);
  }
  if (schema.allOf) {
    const base = withoutKeys(schema, ["allOf", "description", "title"]);
    const parts = schema.allOf.map((v, i) => wrapIfNeeded(tsType(v, indent, `${where}.allOf[${i}]`)));
    if (Object.keys(base).length) parts.push(wrapIfNeeded(tsType(base, indent, where)));
    return parts.join(" & ");
  }
  const types = Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type];
  if (!types.length) {
    if (schema.properties || schema.additionalProperties !== undefined) return objectType(schema, indent, where);
    const rest = withoutKeys(schema, ["description", "title", "default", "example", "examples", "format", "deprecated", "readOnly", "writeOnly"]);
    if (!Object.keys(rest).length) return "unknown";
    throw new Error(`${where}: a schema with no type: ${JSON.stringify(schema)}`);
  }
  return union(types.map((type) => scalar(type, schema, indent, where)));
}

function scalar(type, schema, indent, where) {
  switch (type) {
    case "null":
      return "null";
    case "string":
      return "string";
    case "integer":
    case "number":
      return "number";
    case "boolean":
      return "boolean";
    case "array":
      if (schema.prefixItems) {
        return `[${schema.prefixItems.map((s, i) => tsType(s, indent, `${where}[${i}]`)).join(", ")}]`;
      }
      return `${wrapIfNeeded(tsType(schema.items ?? {}, indent, `${where}[]`))}[]`;
    case "object":
      return objectType(schema, indent, where);
    default:
      throw new Error(`${where}: unsupported type \`${type}\``);
  }
}

/** `{ … }` with one line per property, or a record for `additionalProperties`. */
function objectType(schema, indent, where) {
  const properties = schema.properties ?? {};
  const names = Object.keys(properties);
  const extra = schema.additionalProperties;
  const mapValue = extra === undefined || extra === true ? "unknown" : extra === false ? null : tsType(extra, indent, `${where}{}`);
  if (!names.length) return mapValue === null ? "Record<string, never>" : `{ [key: string]: ${mapValue} }`;
  const required = new Set(schema.required ?? []);
  const inner = indent + "  ";
  const lines = ["{"];
  for (const name of names) {
    const property = properties[name];
    lines.push(...docComment(property, inner));
    const key = IDENT.test(name) ? name : JSON.stringify(name);
    const optional = required.has(name) ? "" : "?";
    lines.push(`${inner}${key}${optional}: ${tsType(property, inner, `${where}.${name}`)};`);
  }
  if (extra !== undefined && extra !== false) lines.push(`${inner}[key: string]: unknown;`);
  lines.push(`${indent}}`);
  return lines.join("\n");
}

function wrapIfNeeded(text) {
  return /^[A-Za-z0-9_$."[\]]+$/.test(text) || text.startsWith("{") || text.startsWith("Record<") ? text : `(${text})`;
}

function withoutKeys(schema, keys) {
  const out = { ...schema };
  for (const key of keys) delete out[key];
  return out;
}

async function load(source) {
  if (/^https?:\/\//.test(source)) {
    const url = source.includes("/api/v1/openapi.json") ? source : `${source.replace(/\/+$/, "")}/api/v1/openapi.json`;
    const answer = await fetch(url);
    if (!answer.ok) throw new Error(`GET ${url} answered ${answer.status}`);
    return answer.json();
  }
  return JSON.parse(readFileSync(source, "utf8"));
}

async function main(args) {
  const check = args[0] === "--check";
  const source = check ? args[1] : args[0];
  if (!source) {
    process.stderr.write("usage: gen-models.mjs [--check] URL|FILE\n");
    return 2;
  }
  const target = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "models.ts");
  const text = generate(await load(source));
  if (check) {
    const current = readFileSync(target, "utf8");
    if (current === text) return 0;
    process.stderr.write(`error: src/models.ts is not what ${source} gives\nhint: run \`npm run gen -- ${source}\`\n`);
    return 1;
  }
  writeFileSync(target, text);
  process.stderr.write(`wrote ${target}\n`);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`error: ${err.message}\n`);
      process.exit(1);
    },
  );
}
