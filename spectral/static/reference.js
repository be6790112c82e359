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
  if (typeof text !== "string" || !text) return "";
  return escapeHtml(text).replace(/`([^`]+)`/g, "<code>$1</code>");
}

// A JSON value as code: `null`, `"pending"`, `{"a":1}`.
function literal(value) {
  return "<code>" + escapeHtml(JSON.stringify(value)) + "</code>";
}

function anchor(kind, name) {
  return kind + "-" + String(name).replace(/[^A-Za-z0-9_.-]/g, "_");
}

function refName(ref) {
  return ref.split("/").pop();
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// A copy of `object` without `key` (the key is gone, not set to undefined).
function without(object, key) {
  const copy = { ...object };
  delete copy[key];
  return copy;
}

// Follow a local $ref (#/components/...) once.
function resolve(doc, value) {
  if (!isObject(value) || typeof value.$ref !== "string" || !value.$ref.startsWith("#/")) {
    return value;
  }
  let target = doc;
  for (const part of value.$ref.slice(2).split("/")) target = isObject(target) ? target[part] : undefined;
  return isObject(target) ? target : value;
}

function schemaLink(ref) {
  const name = refName(ref);
  return '<a class="ref" href="#' + anchor("schema", name) + '">' + escapeHtml(name) + "</a>";
}

function isNullSchema(schema) {
  return isObject(schema) && (schema.type === "null" || schema.const === null);
}

// The options of an anyOf/oneOf/allOf that describe a value: `{"required": [...]}` alone
// only says which fields must be present (see requiredAlternatives).
function valueOptions(schema, key) {
  const options = Array.isArray(schema[key]) ? schema[key] : [];
  return options.filter((s) => !isObject(s) || Object.keys(s).some((k) => k !== "required"));
}

// `anyOf: [X, {"type": "null"}]` (a nullable X): X, else null.
function nullableOf(schema) {
  for (const key of ["anyOf", "oneOf"]) {
    const options = valueOptions(schema, key);
    const values = options.filter((s) => !isNullSchema(s));
    if (options.length === 2 && values.length === 1) return values[0];
  }
  return null;
}

// A one-line summary of a schema: its type, with links to the components it names.
function typeOf(schema) {
  if (schema === false) return "nothing";
  if (!isObject(schema)) return "any";
  if (typeof schema.$ref === "string") return schemaLink(schema.$ref);
  if ("const" in schema) return literal(schema.const);
  if (Array.isArray(schema.enum)) return schema.enum.map(literal).join(" | ");
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    const options = valueOptions(schema, key);
    if (options.length) {
      const joiner = key === "allOf" ? " &amp; " : " | ";
      const own = schema.type ? typeOf(without(schema, key)) + " " : "";
      return own + options.map(typeOf).join(joiner);
    }
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type || "any"];
  let text = types.map((type) => {
    if (type === "array") return arrayType(schema);
    if (type === "object") return objectType(schema);
    return escapeHtml(type) + (schema.format ? " (" + escapeHtml(schema.format) + ")" : "");
  }).join(" | ");
  if (schema.nullable === true && !types.includes("null")) text += " | null";
  return text;
}

function arrayType(schema) {
  if (Array.isArray(schema.prefixItems)) {
    const head = schema.prefixItems.map(typeOf).join(", ");
    const rest = schema.items === undefined || schema.items === false ? "" : ", …" + typeOf(schema.items);
    return "[" + head + rest + "]";
  }
  return schema.items === undefined ? "array" : "array of " + typeOf(schema.items);
}

// `{"type": "object", "additionalProperties": X}` without properties is a map of X.
function objectType(schema) {
  const extra = schema.additionalProperties;
  if (schema.properties || extra === undefined || extra === true || extra === false) return "object";
  if (isObject(extra) && !Object.keys(extra).length) return "object";
  return "object of " + typeOf(extra);
}

const RULES = [
  ["minimum", "≥ "], ["exclusiveMinimum", "> "], ["maximum", "≤ "], ["exclusiveMaximum", "< "],
  ["multipleOf", "multiple of "], ["minLength", "min length "], ["maxLength", "max length "],
  ["minItems", "min items "], ["maxItems", "max items "], ["minProperties", "min fields "],
  ["maxProperties", "max fields "], ["pattern", "pattern "],
];

// The rules of a schema (bounds, pattern, ...) and its default, as HTML.
function constraints(schema) {
  if (!isObject(schema)) return "";
  const parts = ownRules(schema);
  if ("default" in schema) parts.push("default " + literal(schema.default));
  return parts.join(", ");
}

function ownRules(schema) {
  const parts = [];
  for (const [key, label] of RULES) {
    const value = schema[key];
    if (typeof value === "number" || typeof value === "string") {
      parts.push(escapeHtml(label) + "<code>" + escapeHtml(value) + "</code>");
    }
  }
  if (schema.uniqueItems === true) parts.push("unique items");
  if (schema.additionalProperties === false && schema.properties) parts.push("no other fields");
  // The bounds of a nullable number sit in its non-null option.
  for (const key of ["anyOf", "oneOf"]) {
    for (const option of valueOptions(schema, key)) {
      if (isObject(option) && typeof option.$ref !== "string") parts.push(...ownRules(option));
    }
  }
  return parts;
}

// What a schema means: its own description, else its non-null option's.
function description(schema) {
  if (!isObject(schema)) return "";
  if (typeof schema.description === "string") return schema.description;
  const inner = nullableOf(schema);
  if (isObject(inner) && typeof inner.$ref !== "string") return description(inner);
  return "";
}

function cell(label, html) {
  return '<td data-label="' + label + '">' + html + "</td>";
}

function table(kind, labels, rows) {
  return (
    '<div class="table"><table class="' + kind + '"><thead><tr>' +
    labels.map((label) => "<th>" + label + "</th>").join("") + "</tr></thead><tbody>" +
    rows.join("") + "</tbody></table></div>"
  );
}

function propertyTable(schema) {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const rows = Object.entries(schema.properties || {}).map(([name, prop]) => {
    const mark = required.has(name) ? ' <span class="req">required</span>' : "";
    return (
      "<tr>" + cell("field", "<code>" + escapeHtml(name) + "</code>" + mark) +
      cell("type", typeOf(prop)) + cell("rules", constraints(prop)) +
      cell("meaning", prose(description(prop))) + "</tr>"
    );
  });
  if (!rows.length) return "";
  return table("props", ["field", "type", "rules", "meaning"], rows);
}

// `anyOf: [{"required": ["taskId"]}, {"required": ["id"]}]`: one of these must be sent.
function requiredAlternatives(schema) {
  const options = [...(schema.anyOf || []), ...(schema.oneOf || [])];
  return options.filter((s) => isObject(s) && Array.isArray(s.required) &&
    Object.keys(s).every((k) => k === "required"));
}

// A schema in full. `ref` names the component it was resolved from, if any.
function schemaBlock(schema, ref) {
  if (schema === undefined || schema === null) return "";
  const name = ref ? schemaLink(ref) + ": " : "";
  let html = '<div class="schema"><div class="type">' + name + typeOf(schema) + "</div>";
  if (!isObject(schema)) return html + "</div>";
  const rules = constraints(schema);
  if (rules) html += '<div class="rules">' + rules + "</div>";
  if (typeof schema.$ref !== "string" && description(schema)) {
    html += "<p>" + prose(description(schema)) + "</p>";
  }
  if (isObject(schema.properties)) html += propertyTable(schema);
  const alternatives = requiredAlternatives(schema);
  if (alternatives.length) {
    html += '<p class="rules">send one of: ' +
      alternatives.map((s) => s.required.map((name) => "<code>" + escapeHtml(name) + "</code>")
        .join(" and ")).join(" or ") + "</p>";
  }
  return html + "</div>";
}

// The media types of a body and their schemas: a component's fields shown in place
// when `inline`, else only its name (the error envelope, under every error status).
function content(doc, body, inline) {
  return Object.entries(body.content || {}).map(([type, media]) => {
    const schema = (media || {}).schema;
    const ref = isObject(schema) && typeof schema.$ref === "string" ? schema.$ref : "";
    const shown = ref && inline ? schemaBlock(resolve(doc, schema), ref) : schemaBlock(schema);
    return '<div class="media"><code>' + escapeHtml(type) + "</code>" + shown + "</div>";
  }).join("");
}

function parameterTable(doc, parameters) {
  const rows = parameters.map((raw) => {
    const p = resolve(doc, raw) || {};
    const mark = p.required ? ' <span class="req">required</span>' : "";
    return (
      "<tr>" + cell("name", "<code>" + escapeHtml(p.name || "") + "</code>" + mark) +
      cell("in", escapeHtml(p.in || "")) + cell("type", typeOf(p.schema)) +
      cell("rules", constraints(p.schema)) +
      cell("meaning", prose(p.description || description(p.schema))) + "</tr>"
    );
  });
  return table("params", ["name", "in", "type", "rules", "meaning"], rows);
}

function securityText(doc, operation) {
  const requirements = operation.security || doc.security || [];
  if (!requirements.length) return "no key needed";
  const schemes = (doc.components && doc.components.securitySchemes) || {};
  return requirements.flatMap(Object.keys).map((name) => {
    const s = schemes[name] || {};
    if (s.type === "apiKey" && s.name) {
      return "<code>" + escapeHtml(s.name) + "</code> (" + escapeHtml(s.in || "header") + ")";
    }
    if (s.type === "http" && s.scheme) {
      const scheme = s.scheme.charAt(0).toUpperCase() + s.scheme.slice(1);
      return "<code>Authorization: " + escapeHtml(scheme) + "</code>";
    }
    return escapeHtml(name);
  }).join(" or ");
}

// Where to go next with a response (OpenAPI links): anchors to the operations named.
function linksHtml(doc, links) {
  const byId = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      if (item[method] && item[method].operationId) byId.set(item[method].operationId, [method, path]);
    }
  }
  const items = Object.entries(links).map(([name, raw]) => {
    const link = resolve(doc, raw) || {};
    const target = byId.get(link.operationId);
    if (!target) return "<code>" + escapeHtml(name) + "</code>";
    return '<a href="#' + anchor("op", link.operationId) + '">' + escapeHtml(name) + "</a>";
  });
  return items.length ? '<div class="links">next: ' + items.join(", ") + "</div>" : "";
}

function statusKind(status) {
  if (status.startsWith("2")) return "ok";
  if (status.startsWith("1") || status.startsWith("3")) return "info";
  return "err";
}

function responses(doc, operation) {
  return Object.entries(operation.responses || {}).map(([status, raw]) => {
    const response = resolve(doc, raw) || {};
    const headers = Object.entries(response.headers || {}).map(([name, h]) =>
      "<div>header <code>" + escapeHtml(name) + "</code>: " +
      prose((resolve(doc, h) || {}).description) + "</div>").join("");
    return (
      '<div class="response"><span class="status ' + statusKind(status) + '">' +
      escapeHtml(status) + "</span> " + prose(response.description) + headers +
      (isObject(response.links) ? linksHtml(doc, response.links) : "") +
      content(doc, response, statusKind(status) === "ok") + "</div>"
    );
  }).join("");
}

function operationAnchor(path, method, operation) {
  return anchor("op", operation.operationId || method + path);
}

function methodBadge(method) {
  return '<span class="method ' + method + '">' + method.toUpperCase() + "</span>";
}

function operationHtml(doc, path, method, operation) {
  const id = operationAnchor(path, method, operation);
  let html = '<section class="op" id="' + id + '" data-search="' +
    escapeHtml((method + " " + path + " " + (operation.summary || "")).toLowerCase()) + '">' +
    "<h3>" + methodBadge(method) + " <code>" + escapeHtml(path) + "</code>" +
    (operation.deprecated ? ' <span class="req">deprecated</span>' : "") + "</h3>";
  if (operation.summary) html += '<p class="summary">' + prose(operation.summary) + "</p>";
  if (operation.description) html += "<p>" + prose(operation.description) + "</p>";
  html += '<p class="auth">auth: ' + securityText(doc, operation) + "</p>";
  if (Array.isArray(operation.parameters) && operation.parameters.length) {
    html += "<h4>Parameters</h4>" + parameterTable(doc, operation.parameters);
  }
  if (operation.requestBody) {
    const body = resolve(doc, operation.requestBody) || {};
    html += "<h4>Request body" + (body.required ? "" : " (optional)") + "</h4>" +
      '<div class="request">' + content(doc, body, true) + "</div>";
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

function navHtml(all) {
  return all.map((g) => '<li><a href="#' + anchor("tag", g.tag.name) + '">' +
    escapeHtml(g.tag.name) + "</a><ul>" + g.ops.map(([path, method, op]) =>
      '<li data-op="' + operationAnchor(path, method, op) + '"><a href="#' +
      operationAnchor(path, method, op) + '">' + methodBadge(method) + " " + escapeHtml(path) +
      "</a></li>").join("") + "</ul></li>").join("") +
    '<li><a href="#schemas">schemas</a></li>';
}

function renderDocument(doc) {
  const info = doc.info || {};
  const all = groups(doc);
  const schemas = Object.entries((doc.components && doc.components.schemas) || {});
  const body = all.map((g) => '<section class="tag" id="' + anchor("tag", g.tag.name) + '"><h2>' +
    escapeHtml(g.tag.name) + "</h2>" +
    (g.tag.description ? "<p>" + prose(g.tag.description) + "</p>" : "") +
    g.ops.map(([path, method, op]) => operationHtml(doc, path, method, op)).join("") + "</section>")
    .join("");
  const components = schemas.map(([name, schema]) => '<section class="component" id="' +
    anchor("schema", name) + '"><h3>' + escapeHtml(name) + "</h3>" + schemaBlock(schema) +
    "</section>").join("");
  return (
    '<a class="skip" href="#content">skip to the operations</a>' +
    "<header><h1>" + escapeHtml(info.title || "API") +
    (info.version ? ' <span class="version">' + escapeHtml(info.version) + "</span>" : "") +
    "</h1>" + (info.summary ? '<p class="lead">' + prose(info.summary) + "</p>" : "") +
    (info.description ? "<p>" + prose(info.description) + "</p>" : "") +
    '<p><a href="openapi.json">openapi.json</a>' +
    (doc.openapi ? " (OpenAPI " + escapeHtml(doc.openapi) + ")" : "") + "</p>" +
    '<input id="filter" type="search" placeholder="filter operations" ' +
    'aria-label="filter operations" autocomplete="off"></header>' +
    '<div class="layout"><nav aria-label="contents"><details id="contents" open>' +
    "<summary>contents</summary><ul>" + navHtml(all) + "</ul></details></nav>" +
    '<main id="content" tabindex="-1">' + body +
    '<p id="no-match" hidden>No operation matches the filter.</p>' +
    '<section id="schemas"><h2>schemas</h2>' + components + "</section></main></div>"
  );
}

// Hide the operations (and their contents entries) whose method, path and summary
// do not contain the text; a tag with none left is hidden too.
function filterOperations(root, text) {
  const needle = text.trim().toLowerCase();
  let shown = 0;
  for (const section of root.querySelectorAll("section.op")) {
    section.hidden = needle !== "" && !section.dataset.search.includes(needle);
    if (!section.hidden) shown += 1;
    const entry = root.querySelector('li[data-op="' + section.id + '"]');
    if (entry) entry.hidden = section.hidden;
  }
  for (const tag of root.querySelectorAll("section.tag")) {
    tag.hidden = !tag.querySelector("section.op:not([hidden])");
  }
  root.querySelector("#no-match").hidden = shown > 0;
}

async function boot() {
  const root = document.getElementById("reference");
  try {
    const answer = await fetch("openapi.json", { headers: { Accept: "application/json" } });
    if (!answer.ok) throw new Error("openapi.json answered " + answer.status);
    root.innerHTML = renderDocument(await answer.json());
  } catch (error) {
    root.textContent = "Could not load openapi.json: " + error.message;
    return;
  }
  const input = document.getElementById("filter");
  input.addEventListener("input", () => filterOperations(root, input.value));
  // On a narrow screen the contents start folded, so the operations come first.
  if (window.matchMedia("(max-width: 800px)").matches) {
    document.getElementById("contents").open = false;
  }
  // The page was empty when the browser looked for the #fragment: look again.
  const target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (target) target.scrollIntoView();
}

if (typeof module !== "undefined") {
  module.exports = { renderDocument, escapeHtml, typeOf, constraints };
} else if (typeof document !== "undefined") {
  boot();
}
