// Calls spectral's /rpc with the real @orpc/client (RPCLink over fetch) and checks every answer.
//
//   node orpc-client.test.mjs --client orpc-client-194 --url http://127.0.0.1:PORT/rpc
//
// --client is the npm alias of the @orpc/client version to use (see package.json); the
// API key comes from SPECTRAL_API_KEY. Prints one JSON summary line and exits 1 if any
// check failed. Run by tests/test_rpc_orpc_client.py against a real `spectral serve`.

import assert from "node:assert/strict";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    client: { type: "string", default: "orpc-client-latest" },
    url: { type: "string", default: process.env.SPECTRAL_RPC_URL },
    prefix: { type: "string", default: "js" },
  },
});
assert.ok(args.url, "pass --url http://127.0.0.1:PORT/rpc (or SPECTRAL_RPC_URL)");
const apiKey = process.env.SPECTRAL_API_KEY;
assert.ok(apiKey, "set SPECTRAL_API_KEY");
assert.ok(new URL(args.url).hostname === "127.0.0.1", "only loopback servers are tested");

const { createORPCClient, ORPCError, ORPC_CLIENT_PACKAGE_VERSION } = await import(args.client);
const { RPCLink } = await import(`${args.client}/fetch`);

/** Every request the links send, for the framing checks. */
const sent = [];
async function recordingFetch(request, init) {
  const copy = request.clone();
  sent.push({
    method: copy.method,
    url: new URL(copy.url),
    contentType: copy.headers.get("content-type"),
    apiKey: copy.headers.get("x-api-key"),
    body: copy.method === "GET" ? null : await copy.text(),
  });
  return fetch(request, init);
}

const READS = new Set(["getById", "getHistory", "listAll"]);
const headers = { "X-API-Key": apiKey };
const client = createORPCClient(new RPCLink({ url: args.url, headers, fetch: recordingFetch }));
// A second link that sends the procedures that change nothing as GET ?data=...
const getClient = createORPCClient(
  new RPCLink({
    url: args.url,
    headers,
    fetch: recordingFetch,
    method: ({ context }, path) => (READS.has(path.at(-1)) ? "GET" : "POST"),
  }),
);

const passed = [];
const failed = [];
async function check(name, body) {
  try {
    await body();
    passed.push(name);
  } catch (error) {
    failed.push({ name, error: String(error?.stack ?? error) });
  }
}

/** Await ``promise``, expect it to reject with an ORPCError; return the error. */
async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ORPCError, `expected an ORPCError, got ${error}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

function assertDate(value, what) {
  assert.ok(value instanceof Date, `${what} should be a Date, got ${typeof value} ${value}`);
  assert.ok(!Number.isNaN(value.getTime()), `${what} is an invalid Date`);
}

const TASK_DATES = ["createdAt", "updatedAt", "startedAt", "completedAt", "failedAt", "canceledAt"];
/** Every timestamp of a task is a Date or null, never a string. */
function assertTaskDates(task, what) {
  for (const name of TASK_DATES) {
    if (task[name] !== null) assertDate(task[name], `${what}.${name}`);
  }
  assertDate(task.createdAt, `${what}.createdAt`);
  assertDate(task.updatedAt, `${what}.updatedAt`);
}

const id = (name) => `${args.prefix}-${name}`;
const requestedAt = new Date("2026-01-02T03:04:05.678Z");

await check("create answers {success, taskId}", async () => {
  const created = await client.tasks.create({
    taskId: id("main"),
    metadata: { kind: "export", requestedAt },
  });
  assert.deepEqual(created, { success: true, taskId: id("main") });
});

await check("getById answers the task with Date timestamps", async () => {
  const task = await client.tasks.getById({ taskId: id("main") });
  assert.equal(task.taskId, id("main"));
  assert.equal(task.status, "pending");
  assert.equal(task.seq, 1);
  assertTaskDates(task, "task");
  assert.equal(task.startedAt, null);
  assert.ok(Math.abs(task.createdAt.getTime() - Date.now()) < 60_000, "createdAt is now");
  // A Date sent in the input (meta type 1) is stored as its ISO string.
  assert.deepEqual(task.metadata, { kind: "export", requestedAt: requestedAt.toISOString() });
});

await check("updateProgress answers {task, latestHistory}, newest first", async () => {
  const answer = await client.tasks.updateProgress({
    taskId: id("main"),
    progress: 40,
    message: "forty",
  });
  assert.deepEqual(Object.keys(answer), ["task", "latestHistory"]);
  assert.equal(answer.task.status, "in-progress");
  assert.equal(answer.task.progress, 40);
  assertTaskDates(answer.task, "task");
  assertDate(answer.task.startedAt, "task.startedAt");
  assert.deepEqual(
    answer.latestHistory.map((e) => [e.seq, e.eventType]),
    [
      [2, "progress"],
      [1, "created"],
    ],
  );
  answer.latestHistory.forEach((e, i) => assertDate(e.timestamp, `latestHistory[${i}].timestamp`));
  assert.equal(answer.latestHistory[0].timestamp.getTime(), answer.task.updatedAt.getTime());
});

await check("a bigint input (meta type 0) arrives as a number", async () => {
  const answer = await client.tasks.updateProgress({ taskId: id("main"), progress: 45n });
  assert.equal(answer.task.progress, 45);
});

await check("addEvent appends a log event", async () => {
  const answer = await client.tasks.addEvent({
    taskId: id("main"),
    event: { eventType: "log", message: "step 2", metadata: { n: 2 } },
  });
  assert.equal(answer.latestHistory[0].eventType, "log");
  assert.equal(answer.latestHistory[0].message, "step 2");
  assert.equal(answer.task.metadata.n, 2);
  assertDate(answer.latestHistory[0].timestamp, "event.timestamp");
});

await check("getHistory answers the latest events, newest first, as Dates", async () => {
  const events = await client.tasks.getHistory({ taskId: id("main"), limit: 2 });
  assert.ok(Array.isArray(events));
  assert.deepEqual(
    events.map((e) => e.seq),
    [4, 3],
  );
  events.forEach((e, i) => assertDate(e.timestamp, `events[${i}].timestamp`));
  const all = await client.tasks.getHistory({ taskId: id("main") });
  assert.deepEqual(
    all.map((e) => e.eventType),
    ["log", "progress", "progress", "created"],
  );
});

await check("batchUpdateProgress answers one result per item", async () => {
  await client.tasks.create({ taskId: id("batch"), status: "in-progress" });
  const { results } = await client.tasks.batchUpdateProgress({
    updates: [
      { taskId: id("batch"), progress: 10 },
      { taskId: id("missing"), progress: 20 },
    ],
  });
  assert.equal(results.length, 2);
  assert.equal(results[0].ok, true);
  assert.equal(results[0].task.progress, 10);
  assertTaskDates(results[0].task, "results[0].task");
  assert.equal(results[1].ok, false);
  assert.equal(results[1].error.code, "TASK_NOT_FOUND");
});

await check("complete, fail and cancel set their Date", async () => {
  const done = await client.tasks.complete({ taskId: id("main") });
  assert.equal(done.task.status, "success");
  assert.equal(done.task.progress, 100);
  assertDate(done.task.completedAt, "completedAt");
  const failed_ = await client.tasks.fail({ taskId: id("batch"), error: "disk full" });
  assert.equal(failed_.task.status, "failed");
  assert.equal(failed_.task.error, "disk full");
  assertDate(failed_.task.failedAt, "failedAt");
  await client.tasks.create({ taskId: id("cancel") });
  const canceled = await client.tasks.cancel({ taskId: id("cancel"), metadata: { by: "js" } });
  assert.equal(canceled.task.status, "canceled");
  assertDate(canceled.task.canceledAt, "canceledAt");
});

await check("listAll answers {tasks, count} with Date createdAt", async () => {
  const listing = await client.tasks.listAll({ q: args.prefix });
  assert.deepEqual(Object.keys(listing), ["tasks", "count"]);
  assert.equal(listing.count, 3);
  assert.deepEqual(
    listing.tasks.map((t) => [t.taskId, t.status]),
    [
      [id("cancel"), "canceled"],
      [id("batch"), "failed"],
      [id("main"), "success"],
    ],
  );
  for (const item of listing.tasks) {
    assert.deepEqual(Object.keys(item), ["taskId", "createdAt", "createdBy", "status", "progress"]);
    assertDate(item.createdAt, `${item.taskId}.createdAt`);
    assert.equal(item.createdBy, "admin");
  }
  const everything = await client.tasks.listAll();
  assert.ok(everything.count >= 3);
});

await check("a terminal task refuses with ORPCError CONFLICT 409 (data.code TASK_TERMINAL)", async () => {
  const error = await rejection(client.tasks.updateProgress({ taskId: id("main"), progress: 1 }));
  assert.equal(error.code, "CONFLICT");
  assert.equal(error.status, 409);
  assert.equal(error.defined, false);
  assert.equal(error.data.code, "TASK_TERMINAL");
});

await check("delete answers {success, taskId}; then getById is ORPCError NOT_FOUND 404", async () => {
  const deleted = await client.tasks.delete({ taskId: id("cancel") });
  assert.deepEqual(deleted, { success: true, taskId: id("cancel") });
  const error = await rejection(client.tasks.getById({ taskId: id("cancel") }));
  assert.equal(error.code, "NOT_FOUND");
  assert.equal(error.status, 404);
  assert.equal(error.defined, false);
  assert.match(error.message, /not found/);
  assert.equal(error.data.code, "TASK_NOT_FOUND");
});

await check("an unknown procedure is ORPCError NOT_FOUND 404", async () => {
  const error = await rejection(client.tasks.nope({ taskId: id("main") }));
  assert.equal(error.code, "NOT_FOUND");
  assert.equal(error.status, 404);
  assert.equal(error.defined, false);
  const nested = await rejection(client.other.thing());
  assert.equal(nested.status, 404);
  assert.equal(nested.code, "NOT_FOUND");
});

await check("bad input is ORPCError BAD_REQUEST 400 naming the field", async () => {
  // Thunks: each call starts only when the previous one has been checked.
  const cases = [
    [() => client.tasks.updateProgress({ taskId: id("main"), progress: "lots" }), "progress"],
    [() => client.tasks.updateProgress({ taskId: id("main"), progress: Number.NaN }), "progress"],
    [() => client.tasks.create({ taskId: "a/b" }), "taskId"],
    [() => client.tasks.getHistory({ taskId: id("main"), limit: 101 }), "limit"],
    [() => client.tasks.getById({}), "taskId"],
    [() => client.tasks.getById(), "taskId"],
  ];
  for (const [call, field] of cases) {
    const error = await rejection(call());
    assert.equal(error.code, "BAD_REQUEST");
    assert.equal(error.status, 400);
    assert.ok(error.message.includes(field), `${error.message} should name ${field}`);
    assert.equal(error.data.code, "VALIDATION_ERROR");
  }
});

await check("reads may be sent as GET ?data=, mutations may not", async () => {
  const before = sent.length;
  const task = await getClient.tasks.getById({ taskId: id("main") });
  assertTaskDates(task, "task");
  const events = await getClient.tasks.getHistory({ taskId: id("main"), limit: 1 });
  assert.equal(events.length, 1);
  const listing = await getClient.tasks.listAll({ q: args.prefix });
  assert.equal(listing.count, 2);
  const reads = sent.slice(before);
  assert.deepEqual(
    reads.map((r) => [r.method, r.url.pathname]),
    [
      ["GET", "/rpc/tasks/getById"],
      ["GET", "/rpc/tasks/getHistory"],
      ["GET", "/rpc/tasks/listAll"],
    ],
  );
  assert.deepEqual(JSON.parse(reads[0].url.searchParams.get("data")), {
    json: { taskId: id("main") },
  });
  // A mutation sent as GET is refused as oRPC's StrictGetMethodPlugin does.
  const viaGet = createORPCClient(
    new RPCLink({ url: args.url, headers, fetch: recordingFetch, method: "GET" }),
  );
  const error = await rejection(viaGet.tasks.complete({ taskId: id("main") }));
  assert.equal(error.code, "METHOD_NOT_SUPPORTED");
  assert.equal(error.status, 405);
});

await check("an Idempotency-Key replays: __idempotency.cached, cachedAt a Date, no new event", async () => {
  const key = `${args.prefix}-idem-0001`;
  const keyed = createORPCClient(
    new RPCLink({
      url: args.url,
      headers: { ...headers, "Idempotency-Key": key },
      fetch: recordingFetch,
    }),
  );
  await client.tasks.create({ taskId: id("idem") });
  const first = await keyed.tasks.updateProgress({ taskId: id("idem"), progress: 33 });
  const again = await keyed.tasks.updateProgress({ taskId: id("idem"), progress: 33 });
  assert.deepEqual(first.__idempotency, { cached: false, key: key.slice(0, 8) });
  assert.equal(again.__idempotency.cached, true);
  assert.equal(again.__idempotency.key, key.slice(0, 8));
  assertDate(again.__idempotency.cachedAt, "__idempotency.cachedAt");
  assert.deepEqual(again.task, first.task);
  const history = await client.tasks.getHistory({ taskId: id("idem") });
  assert.equal(history.length, 2, "the replay appended no event");
  const reused = await rejection(keyed.tasks.updateProgress({ taskId: id("idem"), progress: 34 }));
  assert.equal(reused.status, 422);
});

await check("the link sent POST {json, meta} with the API key", async () => {
  const create = sent.find((r) => r.url.pathname === "/rpc/tasks/create");
  assert.equal(create.method, "POST");
  assert.match(create.contentType, /^application\/json/);
  assert.equal(create.apiKey, apiKey);
  const body = JSON.parse(create.body);
  assert.deepEqual(body.meta, [[1, "metadata", "requestedAt"]]);
  assert.equal(body.json.metadata.requestedAt, requestedAt.toISOString());
  assert.ok(sent.every((r) => r.apiKey === apiKey && r.url.hostname === "127.0.0.1"));
});

const summary = {
  client: args.client,
  version: ORPC_CLIENT_PACKAGE_VERSION,
  node: process.version,
  requests: sent.length,
  passed,
  failed,
};
console.log(JSON.stringify(summary));
process.exitCode = failed.length === 0 && passed.length > 0 ? 0 : 1;
