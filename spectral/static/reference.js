// The API reference page: fetches ./openapi.json and renders it. No dependencies, no
// network access beyond this server. renderDocument() is pure (document in, HTML out)
// so that tests run it under Node; every value from the document is HTML-escaped.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function escapeHtml(value) {
  return String(value)
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

// Markdown's `code` only: everything else stays text.
function prose(text) {
  if (!text) return "";
  return escapeHtml(text).replace(/`([^`]+)`/g, "<code>$1</code>");
}

function anchor(kind, name) {
  return kind + "-" + String(name).replace(/[^A-Za-z0-9_.-]/g, "_");
}

function refName(ref) {
  return ref.split("/").pop();
}

// Follow a local $ref (#/components/...) once.
function resolve(doc, value) {
  if (!value || typeof value.$ref !== "string" || !value.$ref.startsWith("#/")) return value;
  let target = doc;
  for (const part of value.$ref.slice(2).split("/")) target = target ? target[part] : undefined;
  return target || value;
}

function schemaLink(ref) {
  const name = refName(ref);
  return '<a class="ref" href="#' + anchor("schema", name) + '">' + escapeHtml(name) + "</a>";
}

// A one-line summary of a schema: its type, with links to the components it names.
function typeOf(schema) {
  if (!schema || typeof schema !== "object") return "any";
  if (schema.$ref) return schemaLink(schema.$ref);
  if ("const" in schema) return "<code>" + escapeHtml(JSON.stringify(schema.const)) + "</code>";
  if (schema.enum) {
    return schema.enum.map((v) => "<code>" + escapeHtml(JSON.stringify(v)) + "</code>").join(" | ");
  }
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    if (schema[key] && schema[key].some((s) => Object.keys(s).some((k) => k !== "required"))) {
      const joiner = key === "allOf" ? " &amp; " : " | ";
      const own = schema.type ? typeOf({ ...schema, [key]: undefined }) + " " : "";
      return own + schema[key].map(typeOf).join(joiner);
    }
  }
  if (schema.type === "array") {
    if (schema.prefixItems) {
      const head = schema.prefixItems.map(typeOf).join(", ");
      return "[" + head + (schema.items ? ", ..." + typeOf(schema.items) : "") + "]";
    }
    return "array of " + typeOf(schema.items);
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type || "any"];
  let text = types.map(escapeHtml).join(" | ");
  if (schema.format) text += " (" + escapeHtml(schema.format) + ")";
  return text;
}

const RULES = [
  ["minimum", "≥ "], ["exclusiveMinimum", "> "], ["maximum", "≤ "], ["exclusiveMaximum", "< "],
  ["minLength", "min length "], ["maxLength", "max length "],
  ["minItems", "min items "], ["maxItems", "max items "], ["pattern", "pattern "],
];

function constraints(schema) {
  if (!schema || typeof schema !== "object") return "";
  const parts = [];
  for (const [key, label] of RULES) {
    if (key in schema) parts.push(escapeHtml(label) + "<code>" + escapeHtml(schema[key]) + "</code>");
  }
  if ("default" in schema) {
    parts.push("default <code>" + escapeHtml(JSON.stringify(schema.default)) + "</code>");
  }
  for (const key of ["anyOf", "oneOf"]) {
    for (const option of schema[key] || []) {
      const inner = constraints({ ...option, default: undefined });
      if (inner && !option.$ref) parts.push(inner);
    }
  }
  return parts.filter(Boolean).join(", ");
}

function propertyTable(schema) {
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties || {}).map(([name, prop]) => {
    const mark = required.has(name) ? ' <span class="req">required</span>' : "";
    return (
      "<tr><td><code>" + escapeHtml(name) + "</code>" + mark + "</td><td>" + typeOf(prop) +
      "</td><td>" + constraints(prop) + "</td><td>" + prose(prop.description) + "</td></tr>"
    );
  });
  if (!rows.length) return "";
  return (
    '<table class="props"><thead><tr><th>field</th><th>type</th><th>rules</th>' +
    "<th>meaning</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
  );
}

function schemaBlock(schema) {
  if (!schema) return "";
  let html = '<div class="schema"><div class="type">' + typeOf(schema) + "</div>";
  const rules = constraints(schema);
  if (rules) html += '<div class="rules">' + rules + "</div>";
  if (schema.description && !schema.$ref) html += "<p>" + prose(schema.description) + "</p>";
  if (schema.properties) html += propertyTable(schema);
  const alternatives = (schema.anyOf || []).filter((s) => s.required && !s.properties);
  if (alternatives.length) {
    html += "<p>requires one of: " +
      alternatives.map((s) => "<code>" + escapeHtml(s.required.join(", ")) + "</code>").join(", ") +
      "</p>";
  }
  return html + "</div>";
}

function content(doc, body) {
  return Object.entries(body.content || {})
    .map(([type, media]) => '<div class="media"><code>' + escapeHtml(type) + "</code>" +
      schemaBlock(resolve(doc, media.schema)) + "</div>")
    .join("");
}

function parameterTable(doc, parameters) {
  const rows = parameters.map((raw) => {
    const p = resolve(doc, raw);
    const mark = p.required ? ' <span class="req">required</span>' : "";
    return (
      "<tr><td><code>" + escapeHtml(p.name) + "</code>" + mark + "</td><td>" + escapeHtml(p.in) +
      "</td><td>" + typeOf(p.schema) + "</td><td>" + constraints(p.schema) + "</td><td>" +
      prose(p.description) + "</td></tr>"
    );
  });
  return (
    '<table class="params"><thead><tr><th>name</th><th>in</th><th>type</th><th>rules</th>' +
    "<th>meaning</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
  );
}

function securityText(doc, operation) {
  const requirements = operation.security || doc.security || [];
  if (!requirements.length) return "no key needed";
  const schemes = (doc.components && doc.components.securitySchemes) || {};
  return requirements.flatMap(Object.keys).map((name) => {
    const s = schemes[name] || {};
    if (s.type === "apiKey") return "<code>" + escapeHtml(s.name) + "</code> (" + escapeHtml(s.in) + ")";
    if (s.type === "http") return "<code>Authorization: " + escapeHtml(s.scheme) + "</code>";
    return escapeHtml(name);
  }).join(" or ");
}

function responses(doc, operation) {
  return Object.entries(operation.responses || {}).map(([status, raw]) => {
    const response = resolve(doc, raw);
    const headers = Object.entries(response.headers || {}).map(([name, h]) =>
      "<div>header <code>" + escapeHtml(name) + "</code>: " + prose(resolve(doc, h).description) +
      "</div>").join("");
    const kind = status.startsWith("2") ? "ok" : "err";
    return (
      '<div class="response"><span class="status ' + kind + '">' + escapeHtml(status) +
      "</span> " + prose(response.description) + headers + content(doc, response) + "</div>"
    );
  }).join("");
}

function operationHtml(doc, path, method, operation) {
  const id = anchor("op", operation.operationId || method + path);
  let html = '<section class="op" id="' + id + '" data-search="' +
    escapeHtml((method + " " + path + " " + (operation.summary || "")).toLowerCase()) + '">' +
    '<h3><span class="method ' + method + '">' + method.toUpperCase() + "</span> <code>" +
    escapeHtml(path) + "</code></h3>" +
    '<p class="summary">' + prose(operation.summary) + "</p>";
  if (operation.description) html += "<p>" + prose(operation.description) + "</p>";
  html += '<p class="auth">auth: ' + securityText(doc, operation) + "</p>";
  if (operation.parameters && operation.parameters.length) {
    html += "<h4>Parameters</h4>" + parameterTable(doc, operation.parameters);
  }
  if (operation.requestBody) {
    const body = resolve(doc, operation.requestBody);
    html += "<h4>Request body" + (body.required ? "" : " (optional)") + "</h4>" + content(doc, body);
  }
  return html + "<h4>Responses</h4>" + responses(doc, operation) + "</section>";
}

// Operations grouped by their first tag, in the document's tag order.
function groups(doc) {
  const byTag = new Map((doc.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const operation = item[method];
      if (!operation) continue;
      const name = (operation.tags && operation.tags[0]) || "other";
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, ops: [] });
      byTag.get(name).ops.push([path, method, operation]);
    }
  }
  return [...byTag.values()].filter((g) => g.ops.length);
}

function renderDocument(doc) {
  const info = doc.info || {};
  const all = groups(doc);
  const schemas = Object.entries((doc.components && doc.components.schemas) || {});
  const nav = all.map((g) => '<li><a href="#' + anchor("tag", g.tag.name) + '">' +
    escapeHtml(g.tag.name) + "</a><ul>" + g.ops.map(([path, method, op]) =>
      '<li><a href="#' + anchor("op", op.operationId || method + path) + '"><span class="method ' +
      method + '">' + method.toUpperCase() + "</span> " + escapeHtml(path) + "</a></li>").join("") +
    "</ul></li>").join("") +
    '<li><a href="#schemas">schemas</a></li>';
  const body = all.map((g) => '<section class="tag" id="' + anchor("tag", g.tag.name) + '"><h2>' +
    escapeHtml(g.tag.name) + "</h2><p>" + prose(g.tag.description) + "</p>" +
    g.ops.map(([path, method, op]) => operationHtml(doc, path, method, op)).join("") + "</section>")
    .join("");
  const components = schemas.map(([name, schema]) => '<section class="component" id="' +
    anchor("schema", name) + '"><h3>' + escapeHtml(name) + "</h3>" + schemaBlock(schema) +
    "</section>").join("");
  return (
    '<header><h1>' + escapeHtml(info.title || "API") + ' <span class="version">' +
    escapeHtml(info.version || "") + "</span></h1><p>" + prose(info.description) + "</p>" +
    '<p><a href="openapi.json">openapi.json</a> (OpenAPI ' + escapeHtml(doc.openapi || "") +
    ')</p><input id="filter" type="search" placeholder="filter operations"></header>' +
    '<div class="layout"><nav><ul>' + nav + "</ul></nav><main>" + body +
    '<section id="schemas"><h2>schemas</h2>' + components + "</section></main></div>"
  );
}

function filterOperations(root, text) {
  const needle = text.trim().toLowerCase();
  for (const section of root.querySelectorAll("section.op")) {
    section.hidden = needle !== "" && !section.dataset.search.includes(needle);
  }
}

async function boot() {
  const root = document.getElementById("reference");
  try {
    const answer = await fetch("openapi.json", { headers: { Accept: "application/json" } });
    if (!answer.ok) throw new Error("openapi.json answered " + answer.status);
    root.innerHTML = renderDocument(await answer.json());
    const input = document.getElementById("filter");
    input.addEventListener("input", () => filterOperations(root, input.value));
  } catch (error) {
    root.textContent = "Could not load openapi.json: " + error.message;
  }
}

if (typeof module !== "undefined") {
  module.exports = { renderDocument, escapeHtml, typeOf };
} else if (typeof document !== "undefined") {
  boot();
}
