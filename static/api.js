// /schema in a browser: the service's OpenAPI document as a page, with no code from
// elsewhere (it works offline). Every value goes in as text (dom.js).

import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);
const METHODS = ["get", "post", "put", "patch", "delete"];

function refName(ref) {
  return ref.split("/").pop();
}

/** A schema in one line: "SessionsPage", "list of AuditRow", "integer 1..200", "string | null". */
function typeText(schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  for (const key of ["oneOf", "anyOf"]) if (schema[key]) return schema[key].map(typeText).join(" | ");
  if (schema.type === "array") return `list of ${typeText(schema.items)}`;
  const parts = [Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any"];
  if (schema.enum) parts.push(`one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`);
  if (schema.format) parts.push(`(${schema.format})`);
  const lo = schema.minimum ?? schema.minLength;
  const hi = schema.maximum ?? schema.maxLength;
  if (lo !== undefined || hi !== undefined) parts.push(`${lo ?? ""}..${hi ?? ""}`);
  return parts.join(" ");
}

function typeNode(schema) {
  if (schema?.$ref) return el("a", { href: `#type-${refName(schema.$ref)}` }, refName(schema.$ref));
  if (schema?.type === "array" && schema.items?.$ref) return el("span", {}, "list of ", typeNode(schema.items));
  return el("span", {}, typeText(schema));
}

function table(head, rows) {
  return el(
    "div",
    { class: "table-wrap" },
    el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, ...rows)),
  );
}

function operation(path, method, op) {
  const id = `op-${method}-${path.replace(/[^A-Za-z0-9]+/g, "-")}`;
  const params = (op.parameters || []).map((p) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", {}, p.name)),
      el("td", {}, p.in),
      el("td", {}, typeNode(p.schema)),
      el("td", {}, p.required ? "yes" : "no"),
      el("td", { class: "wrap" }, p.description || ""),
    ),
  );
  const body = op.requestBody?.content;
  const responses = Object.entries(op.responses || {}).map(([status, r]) =>
    el(
      "tr",
      {},
      el("td", {}, status),
      el("td", { class: "wrap" }, r.description || ""),
      el("td", { class: "wrap" }, ...Object.entries(r.content || {}).flatMap(([type, c], i) => [i ? "; " : "", el("code", {}, type), " ", typeNode(c.schema)])),
    ),
  );
  return el(
    "section",
    { class: "card api-op", id },
    el("h2", {}, el("span", { class: `badge method-${method}` }, method.toUpperCase()), " ", el("code", {}, path)),
    op.summary ? el("p", {}, op.summary) : null,
    op.description ? el("p", { class: "muted wrap" }, op.description) : null,
    op.security && op.security.length === 0 ? el("p", { class: "muted" }, "No token needed.") : null,
    params.length ? table(["Parameter", "In", "Type", "Required", "What"], params) : null,
    body
      ? el("p", {}, "Body: ", ...Object.entries(body).flatMap(([type, c], i) => [i ? "; " : "", el("code", {}, type), " ", typeNode(c.schema)]))
      : null,
    table(["Status", "Meaning", "Body"], responses),
  );
}

function schemaSection(name, schema) {
  const required = new Set(schema.required || []);
  const fields = Object.entries(schema.properties || {}).map(([field, s]) =>
    el("tr", {}, el("td", {}, el("code", {}, field)), el("td", {}, typeNode(s)), el("td", {}, required.has(field) ? "yes" : "no"), el("td", { class: "wrap" }, s.description || "")),
  );
  return el(
    "section",
    { class: "card api-op", id: `type-${name}` },
    el("h3", {}, name),
    schema.description ? el("p", { class: "muted wrap" }, schema.description) : null,
    fields.length ? table(["Field", "Type", "Required", "What"], fields) : el("p", {}, typeText(schema)),
  );
}

async function start() {
  try {
    const response = await fetch("/schema/openapi.json", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`/schema/openapi.json answered ${response.status}`);
    const doc = await response.json();
    $("api-title").textContent = `${doc.info.title} ${doc.info.version}: HTTP API`;
    const index = [];
    const ops = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const section = operation(path, method, item[method]);
        ops.push(section);
        index.push(el("li", {}, el("a", { href: `#${section.id}` }, `${method.toUpperCase()} ${path}`)));
      }
    }
    $("api-index").replaceChildren(...index);
    $("api-operations").replaceChildren(...ops);
    const schemas = Object.entries(doc.components?.schemas || {}).sort(([a], [b]) => a.localeCompare(b));
    $("api-schemas").replaceChildren(...schemas.map(([name, s]) => schemaSection(name, s)));
    if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
  } catch (error) {
    $("api-error").hidden = false;
    $("api-error").textContent = `The API document could not be read: ${error.message}`;
  }
}

start();
