// The seeds' webhook receiver, pointed at spectral: it takes the jobs system's webhook
// body ({id, jobname, userId, progress | result | error, eventType}) from a webhook
// created with "format": "seed-jobs", after checking its Standard Webhooks signature.
//
//   WEBHOOK_SECRET=whsec_... node examples/seed_jobs/receiver.mjs [--port 3001] [--host 127.0.0.1]
//
// It prints "listening on http://HOST:PORT", then one JSON line per verified delivery
// ({"webhookId", "job"}); a delivery seen before (the same webhook-id: delivery is at
// least once) is answered 200 and not printed again. A bad or stale signature is 401.
// Node's standard library only: no dependency to install. See docs/api.md, "Webhooks".
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: { port: { type: "string", default: "3001" }, host: { type: "string", default: "127.0.0.1" } },
});
const SECRET = process.env.WEBHOOK_SECRET || "";
if (!SECRET.startsWith("whsec_")) {
  console.error("set WEBHOOK_SECRET to the webhook's secret (whsec_…), shown once when it was created");
  process.exit(2);
}
const KEY = Buffer.from(SECRET.slice("whsec_".length), "base64");
// Deliveries older (or newer) than this are refused: a replayed request fails.
const TOLERANCE_SECONDS = 5 * 60;
const seenIds = new Set();

/** Whether the body was signed by spectral with this webhook's secret, recently. */
function verified(headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_SECONDS) return false;
  const expected = createHmac("sha256", KEY).update(`${id}.${timestamp}.${body}`).digest();
  return signatures.split(" ").some((entry) => {
    const [version, signature] = entry.split(",");
    const given = Buffer.from(signature || "", "base64");
    return version === "v1" && given.length === expected.length && timingSafeEqual(given, expected);
  });
}

/** What the seed's receiver did with each event: here, say it. */
function handle(job) {
  switch (job.eventType) {
    case "progress":
      return `${job.jobname} (${job.id}) of ${job.userId}: ${job.progress}%`;
    case "completed":
      return `${job.jobname} (${job.id}) of ${job.userId} completed: ${JSON.stringify(job.result)}`;
    case "failed":
      return `${job.jobname} (${job.id}) of ${job.userId} failed: ${job.error}`;
    default:
      return `unknown event ${job.eventType}`;
  }
}

const server = createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    if (request.method !== "POST" || !verified(request.headers, body)) {
      response.writeHead(401).end("bad signature");
      return;
    }
    const id = request.headers["webhook-id"];
    if (!seenIds.has(id)) {
      seenIds.add(id);
      const job = JSON.parse(body);
      console.error(handle(job));
      console.log(JSON.stringify({ webhookId: id, job }));
    }
    response.writeHead(200, { "content-type": "application/json" }).end('{"received":true}');
  });
});

server.listen(Number(args.port), args.host, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
