// Connects the real socket.io-client 4.x to spectral's /socket.io/ and checks what it gets.
//
//   node socketio-client.test.mjs --url http://127.0.0.1:PORT [--restart]
//
// The admin key comes from SPECTRAL_API_KEY. Without --restart: default options (long-polling,
// then the upgrade), WebSocket only, long-polling only, connect_error, and the jobs events.
// With --restart: connect, print "ready", wait for a line on stdin (the server was restarted
// on the same port), then expect the client to reconnect by itself and get events again.
// Prints one JSON summary line and exits 1 if any check failed. Run by
// tests/test_socketio_client.py against a real `spectral serve`.

import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { io } from "socket.io-client";

const { values: args } = parseArgs({
  options: { url: { type: "string" }, restart: { type: "boolean", default: false } },
});
assert.ok(args.url, "pass --url http://127.0.0.1:PORT");
assert.ok(new URL(args.url).hostname === "127.0.0.1", "only loopback servers are tested");
const adminKey = process.env.SPECTRAL_API_KEY;
assert.ok(adminKey, "set SPECTRAL_API_KEY");
/** Every wait is bounded this generously: only a hang should reach it. */
const BOUND_MS = 30_000;

const passed = [];
const failed = [];
const sockets = [];
async function check(name, body) {
  try {
    await body();
    passed.push(name);
  } catch (error) {
    failed.push({ name, error: String(error?.stack ?? error) });
  }
}

async function rest(path, body, key) {
  const answer = await fetch(new URL(path, args.url), {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": key },
    body: JSON.stringify(body),
  });
  const text = await answer.text();
  assert.ok(answer.ok, `${path}: ${answer.status} ${text}`);
  return JSON.parse(text);
}

/** A service key of its own owner (a fresh owner per run). */
async function keyFor(owner) {
  return (await rest("/admin/keys", { owner, role: "service" }, adminKey)).key;
}

function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), BOUND_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Events of a socket, in arrival order, awaited one by one. */
class Inbox {
  constructor(socket) {
    this.items = [];
    this.waiters = [];
    socket.onAny((name, payload) => {
      this.items.push({ name, payload });
      this.waiters.splice(0).forEach((wake) => wake());
    });
  }
  /** The next event whose name passes ``keep`` (others are dropped). */
  async next(keep = () => true, what = "an event") {
    return bounded(
      (async () => {
        for (;;) {
          while (this.items.length) {
            const item = this.items.shift();
            if (keep(item.name)) return item;
          }
          await new Promise((wake) => this.waiters.push(wake));
        }
      })(),
      what,
    );
  }
}

function open(token, options = {}) {
  const socket = io(args.url, { auth: { token }, ...options });
  sockets.push(socket);
  const inbox = new Inbox(socket);
  const opened = { transport: null };
  socket.io.once("open", () => (opened.transport = socket.io.engine.transport.name));
  const connected = bounded(
    new Promise((resolve, reject) => {
      socket.once("connected", resolve);
      socket.once("connect_error", reject);
    }),
    "the connected event",
  );
  return { socket, inbox, connected, opened };
}

function upgraded(socket) {
  if (socket.io.engine.transport.name === "websocket") return Promise.resolve();
  return bounded(
    new Promise((resolve) => socket.io.engine.once("upgrade", () => resolve())),
    "the upgrade",
  );
}

const run = Date.now().toString(36);
const owner = `sio-${run}`;
const key = await keyFor(owner);
const job = (name) => `${name}-${run}`;
const isJob = (name) => name.startsWith("job:");

if (!args.restart) {
  let main;
  await check("default options: long-polling, then the upgrade to WebSocket", async () => {
    main = open(key);
    const greeting = await main.connected;
    assert.equal(greeting.userId, owner);
    assert.equal(typeof greeting.message, "string");
    assert.equal(typeof greeting.timestamp, "number");
    assert.equal(main.opened.transport, "polling");
    await upgraded(main.socket);
    assert.equal(main.socket.io.engine.transport.name, "websocket");
    assert.ok(main.socket.connected);
  });

  await check("transports: ['websocket']", async () => {
    const only = open(key, { transports: ["websocket"] });
    assert.equal((await only.connected).userId, owner);
    assert.equal(only.socket.io.engine.transport.name, "websocket");
    only.socket.disconnect();
  });

  await check("transports: ['polling'] carries events", async () => {
    const pollingKey = await keyFor(`${owner}-polling`); // the main socket sees none of it
    const polling = open(pollingKey, { transports: ["polling"] });
    await polling.connected;
    await rest("/tasks/create", { taskId: job("poll") }, pollingKey);
    await rest("/tasks/updateProgress", { taskId: job("poll"), progress: 7 }, pollingKey);
    const { name, payload } = await polling.inbox.next(isJob, "job:progress on polling");
    assert.equal(name, "job:progress");
    assert.equal(payload.jobId, job("poll"));
    assert.equal(payload.progress, 7);
    assert.equal(polling.socket.io.engine.transport.name, "polling");
    polling.socket.disconnect();
  });

  await check("a bad token: connect_error with the server's message", async () => {
    const bad = io(args.url, { auth: { token: "spk_not_a_key" }, reconnection: false });
    sockets.push(bad);
    const error = await bounded(new Promise((r) => bad.once("connect_error", r)), "connect_error");
    assert.match(error.message, /not valid/);
    const none = io(args.url, { reconnection: false });
    sockets.push(none);
    const missing = await bounded(new Promise((r) => none.once("connect_error", r)), "error");
    assert.ok(missing.message.length > 0);
    assert.equal(bad.connected, false);
  });

  await check("job:progress, then job:completed with the result", async () => {
    await rest("/tasks/create", { taskId: job("a") }, key);
    await rest("/tasks/updateProgress", { taskId: job("a"), progress: 30 }, key);
    const progress = await main.inbox.next(isJob, "job:progress");
    assert.equal(progress.name, "job:progress");
    const { timestamp, ...rest_ } = progress.payload;
    assert.deepEqual(rest_, { jobId: job("a"), state: "active", progress: 30 });
    assert.equal(typeof timestamp, "number");
    await rest("/tasks/complete", { taskId: job("a"), metadata: { result: { rows: 3 } } }, key);
    const done = await main.inbox.next(isJob, "job:completed");
    assert.equal(done.name, "job:completed");
    assert.equal(done.payload.state, "completed");
    assert.equal(done.payload.progress, 100);
    assert.deepEqual(done.payload.result, { rows: 3 });
  });

  await check("job:failed for a failure and for a cancel", async () => {
    await rest("/tasks/create", { taskId: job("f") }, key);
    await rest("/tasks/fail", { taskId: job("f"), error: "disk full" }, key);
    const failure = await main.inbox.next(isJob, "job:failed");
    assert.equal(failure.name, "job:failed");
    assert.equal(failure.payload.error, "disk full");
    assert.equal(failure.payload.state, "failed");
    await rest("/tasks/create", { taskId: job("c") }, key);
    await rest("/tasks/cancel", { taskId: job("c") }, key);
    const cancel = await main.inbox.next(isJob, "job:failed (canceled)");
    assert.equal(cancel.name, "job:failed");
    assert.equal(cancel.payload.jobId, job("c"));
    assert.equal(cancel.payload.error, "canceled");
  });

  await check("subscribe:job gives job:<jobId>:..., unsubscribe stops it", async () => {
    const id = job("s");
    await rest("/tasks/create", { taskId: id }, key);
    const ack = await main.socket.timeout(BOUND_MS).emitWithAck("subscribe:job", { jobId: id });
    assert.deepEqual(ack, { ok: true });
    await rest("/tasks/updateProgress", { taskId: id, progress: 10 }, key);
    const first = await main.inbox.next(isJob, "job:progress");
    const second = await main.inbox.next(isJob, `job:${id}:progress`);
    assert.deepEqual([first.name, second.name], ["job:progress", `job:${id}:progress`]);
    assert.deepEqual(first.payload, second.payload);
    const off = await main.socket.timeout(BOUND_MS).emitWithAck("unsubscribe:job", id);
    assert.deepEqual(off, { ok: true });
    await rest("/tasks/updateProgress", { taskId: id, progress: 20 }, key);
    await rest("/tasks/create", { taskId: job("marker") }, key);
    await rest("/tasks/updateProgress", { taskId: job("marker"), progress: 1 }, key);
    // Events arrive in order: everything about ``id`` comes before the marker's.
    const seen = [];
    for (;;) {
      const { name, payload } = await main.inbox.next(isJob, "the marker");
      seen.push(name);
      if (payload.jobId === job("marker")) break;
    }
    assert.deepEqual(seen, ["job:progress", "job:progress"]);
  });

  await check("another owner's job id never fires (ack ok, nothing revealed)", async () => {
    const other = open(await keyFor(`${owner}-other`));
    await other.connected;
    const ack = await other.socket.timeout(BOUND_MS).emitWithAck("subscribe:job", job("iso"));
    assert.deepEqual(ack, { ok: true });
    await rest("/tasks/create", { taskId: job("iso") }, key);
    await rest("/tasks/updateProgress", { taskId: job("iso"), progress: 50 }, key);
    const mine = await main.inbox.next(isJob, "the owner's event");
    assert.equal(mine.payload.jobId, job("iso"));
    // The other owner's first event is its own task's.
    const otherKey = other.socket.auth.token;
    await rest("/tasks/create", { taskId: job("own") }, otherKey);
    await rest("/tasks/updateProgress", { taskId: job("own"), progress: 5 }, otherKey);
    const theirs = await other.inbox.next(isJob, "the other owner's own event");
    assert.equal(theirs.name, "job:progress");
    assert.equal(theirs.payload.jobId, job("own"));
  });
} else {
  await check("reconnects by itself after a server restart and gets events again", async () => {
    const client = open(key);
    await client.connected;
    await upgraded(client.socket);
    let connects = 0;
    const reconnected = new Promise((resolve) =>
      client.socket.on("connect", () => {
        connects += 1;
        resolve();
      }),
    );
    const disconnected = new Promise((resolve) => client.socket.once("disconnect", resolve));
    process.stdout.write("ready\n");
    const lines = createInterface({ input: process.stdin });
    await bounded(new Promise((resolve) => lines.once("line", resolve)), "the restart");
    const reason = await bounded(disconnected, "the disconnect");
    assert.notEqual(reason, "io server disconnect"); // so the client reconnects by itself
    await bounded(reconnected, "the reconnection");
    assert.equal(connects, 1);
    await rest("/tasks/create", { taskId: job("after") }, key);
    await rest("/tasks/updateProgress", { taskId: job("after"), progress: 9 }, key);
    const event = await client.inbox.next((name) => name === "job:progress", "job:progress");
    assert.equal(event.payload.jobId, job("after"));
  });
}

for (const socket of sockets) socket.disconnect();
console.log(JSON.stringify({ passed, failed }));
process.exit(failed.length ? 1 : 0);
