/**
 * `npm run bench -- grant`: one secret granted to 1000 nodes × 2 users (2000 SPIRE entries) through the
 * hpcs server — one HTTPS POST /v1/grants, which the server turns into batched BatchCreateEntry calls on
 * the admin socket — and, in the same run, the same 2000 entries created the original's way: one
 * `spire-server entry create` process per entry, one after another. Prints both times and the ratio.
 *
 * Runs on the real bench (`npm run stack -- up`, addresses from /var/lib/hpcs-stack/env.json): a real
 * server (createServerApp + startServer with TLS on ephemeral ports), a real client enrolled and
 * registered over HTTPS, its real spire-agent, and a JWT-SVID from it as the grant's bearer. Everything
 * it creates (grant, baseline entries, agent, client role/policy/enrollment, temp dirs) is removed on
 * every way out, including Ctrl-C.
 */

import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { parseServerConfig } from "../lib/config/server-config.js";
import { createLogger } from "../lib/log.js";
import { SpiffeId } from "../lib/spiffe-id.js";
import { SpireServerClient } from "../lib/spire/server-client.js";
import { TokenKeeper } from "../lib/vault/token-keeper.js";
import { VaultClient } from "../lib/vault/vault-client.js";
import { clientPolicyName, grantPolicyName, secretPath } from "../lib/vault/policies.js";
import { createServerApp } from "../server/app.js";
import { startServer } from "../server/transport/start-server.js";
import { AgentWithToken } from "../test/support/agent-with-token.js";
import { DEFAULT_STACK_ENV, loadStackEnv, type StackEnv } from "../test/support/stack-env.js";

export const GRANT_USAGE =
  "grant [--baseline-sample N] [--json]   1000 nodes × 2 users: server grant vs one spire-server process per entry";

const NODES = 1000;
const USERS = ["alice", "bob"];
const AUDIENCE = "hpcs-server";
/** Issue acceptance: the server at least this many times faster than the original's way. */
const TARGET_RATIO = 20;

interface Options {
  baselineSample: number;
  json: boolean;
}

interface Result {
  bench: "grant";
  nodes: number;
  users: string[];
  entries: number;
  server: { method: string; entries: number; seconds: number; entriesPerSec: number };
  baseline: {
    method: string;
    entries: number;
    /** Entries actually created; less than `entries` when sampled. */
    measuredEntries: number;
    measuredSeconds: number;
    /** measuredSeconds scaled to `entries` when sampled, else measuredSeconds. */
    seconds: number;
    extrapolated: boolean;
    entriesPerSec: number;
  };
  /** baseline seconds / server seconds. */
  ratio: number;
  target: number;
  machine: { nproc: number; cpu: string; platform: string; node: string; spire: string };
}

class Interrupted extends Error {
  constructor(signal: string) {
    super(`interrupted by ${signal}`);
    this.name = "Interrupted";
  }
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      "baseline-sample": { type: "string" },
      json: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const total = NODES * USERS.length;
  const raw = values["baseline-sample"] ?? String(total);
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > total) {
    throw new Error(`--baseline-sample ${JSON.stringify(raw)}: a whole number from 1 to ${total}`);
  }
  return { baselineSample: n, json: values.json === true };
}

/** Best-effort undo steps, run newest first; one failing step does not stop the others. */
class Cleanup {
  private readonly steps: { what: string; fn: () => Promise<unknown> }[] = [];

  add(what: string, fn: () => Promise<unknown>): void {
    this.steps.push({ what, fn });
  }

  async run(): Promise<string[]> {
    const failures: string[] = [];
    for (const s of this.steps.reverse()) {
      try {
        await s.fn();
      } catch (err) {
        failures.push(`${s.what}: ${(err as Error).message}`);
      }
    }
    this.steps.length = 0;
    return failures;
  }
}

interface HttpsResult {
  status: number;
  body: unknown;
}

/** One HTTPS request with a JSON body, trusting only the bench's CA. */
function httpsJson(
  url: string,
  opts: {
    ca: Buffer;
    method: string;
    body?: unknown;
    bearer?: string;
    timeoutMs?: number;
    signal?: AbortSignal;
  },
): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string> = {};
    if (payload !== undefined) headers["content-type"] = "application/json";
    if (opts.bearer !== undefined) headers.authorization = `Bearer ${opts.bearer}`;
    const req = request(
      url,
      {
        method: opts.method,
        ca: opts.ca,
        headers,
        timeout: opts.timeoutMs ?? 60_000,
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.on("timeout", () =>
      req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 60_000} ms: ${url}`)),
    );
    req.end(payload);
  });
}

function expectOk(what: string, r: HttpsResult): Record<string, unknown> {
  if (r.status !== 200 || typeof r.body !== "object" || r.body === null) {
    throw new Error(`${what}: HTTP ${r.status}: ${JSON.stringify(r.body)}`);
  }
  return r.body as Record<string, unknown>;
}

/** Runs argv (no shell) to completion; rejects with the program's stderr on a non-zero exit. */
function runArgv(
  file: string,
  args: string[],
  signal?: AbortSignal,
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: 60_000, maxBuffer: 1 << 20, ...(signal ? { signal } : {}) },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${file} ${args.slice(0, 2).join(" ")}: ${stderr.trim() || err.message}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

/** One attempt (no waiting for the entry to sync) at a JWT-SVID from the client's agent. */
async function fetchJwtOnce(env: StackEnv, socket: string, spiffeId: string): Promise<string> {
  const { stdout } = await runArgv(env.spire.agent_bin, [
    "api",
    "fetch",
    "jwt",
    "-audience",
    AUDIENCE,
    "-spiffeID",
    spiffeId,
    "-socketPath",
    socket,
    "-output",
    "json",
  ]);
  const out = JSON.parse(stdout) as { svids?: { svid: string }[] }[];
  const svid = out.flatMap((o) => o.svids ?? [])[0]?.svid;
  if (!svid) throw new Error("the client's agent issued no JWT-SVID");
  return svid;
}

async function spireVersion(env: StackEnv): Promise<string> {
  try {
    const { stdout, stderr } = await runArgv(env.spire.server_bin, ["--version"]);
    return (stdout.trim() || stderr.trim()).split("\n")[0] ?? "unknown";
  } catch {
    return "unknown";
  }
}

function fmt(n: number, digits: number): string {
  return n.toFixed(digits);
}

function table(r: Result, sample: number): string {
  const rows: [string, string, string, string][] = [
    ["method", "entries", "seconds", "entries/s"],
    [r.server.method, String(r.server.entries), fmt(r.server.seconds, 3), fmt(r.server.entriesPerSec, 1)],
    [
      r.baseline.method + (r.baseline.extrapolated ? " *" : ""),
      String(r.baseline.entries),
      fmt(r.baseline.seconds, 3),
      fmt(r.baseline.entriesPerSec, 1),
    ],
  ];
  const w = [0, 1, 2, 3].map((i) => Math.max(...rows.map((row) => row[i]?.length ?? 0)));
  const line = (row: string[]) =>
    row.map((c, i) => (i === 0 ? c.padEnd(w[i] ?? 0) : c.padStart(w[i] ?? 0))).join("   ");
  const out = [
    `grant: ${r.nodes} nodes × ${r.users.length} users (${r.users.join(", ")}) = ${r.entries} SPIRE entries`,
    `machine: nproc ${r.machine.nproc} (${r.machine.cpu}), ${r.machine.platform}, node ${r.machine.node}, SPIRE ${r.machine.spire}`,
    "",
    line(rows[0] ?? []),
    ...rows.slice(1).map(line),
    "",
  ];
  if (r.baseline.extrapolated) {
    out.push(
      `* EXTRAPOLATED: measured ${r.baseline.measuredEntries} of ${r.baseline.entries} entries in ` +
        `${fmt(r.baseline.measuredSeconds, 3)} s (--baseline-sample ${sample}), scaled linearly to ${r.baseline.entries}`,
    );
  }
  const verdict = r.ratio >= r.target ? "meets" : "DOES NOT meet";
  out.push(
    `ratio: ${fmt(r.ratio, 1)}× (${r.ratio >= 1 ? "server faster" : "server slower"}; ${verdict} the ${r.target}× target)`,
  );
  return out.join("\n") + "\n";
}

/** Progress goes to stderr so stdout carries only the result (the table or the JSON object). */
function progress(msg: string): void {
  process.stderr.write(`bench grant: ${msg}\n`);
}

export async function grantBench(argv: string[]): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`bench grant: ${(err as Error).message}\nusage: npm run bench -- ${GRANT_USAGE}\n`);
    return 2;
  }
  const envPath = process.env.HPCS_STACK_ENV ?? DEFAULT_STACK_ENV;
  if (!existsSync(envPath)) {
    process.stderr.write(
      `bench grant: the bench is not up (${envPath} is missing): run npm run stack -- up\n`,
    );
    return 1;
  }
  const env = loadStackEnv(envPath);

  const ac = new AbortController();
  let firstSignalAt = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (ac.signal.aborted) {
      // One Ctrl-C can arrive twice (sent to the process and to its group, e.g. by timeout(1)): only a
      // repeat after a pause means "abandon the cleanup".
      if (Date.now() - firstSignalAt < 2000) return;
      process.stderr.write(`bench grant: ${sig} again: exiting without finishing cleanup\n`);
      process.exit(130);
    }
    firstSignalAt = Date.now();
    process.stderr.write(`bench grant: ${sig}: stopping and cleaning up (${sig} again to abandon)\n`);
    ac.abort(new Interrupted(sig));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const cleanup = new Cleanup();
  try {
    const result = await measure(env, opts, cleanup, ac.signal);
    process.stdout.write(opts.json ? JSON.stringify(result) + "\n" : table(result, opts.baselineSample));
    return 0;
  } catch (err) {
    const e = ac.signal.aborted ? (ac.signal.reason as Error) : (err as Error);
    process.stderr.write(`bench grant: ${e.message}\n`);
    return ac.signal.aborted ? 130 : 1;
  } finally {
    progress("cleaning up");
    const failures = await cleanup.run();
    for (const f of failures) process.stderr.write(`bench grant: cleanup: ${f}\n`);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

async function measure(env: StackEnv, opts: Options, cleanup: Cleanup, signal: AbortSignal): Promise<Result> {
  const td = env.trust_domain;
  const n = randomBytes(4).toString("hex");
  const clientId = `bench-${n}`;
  const secretA = `bench-grant-${n}`;
  const secretB = `bench-baseline-${n}`;
  const nodes = Array.from({ length: NODES }, (_, i) => `bn-${n}-${String(i + 1).padStart(4, "0")}`);
  const total = nodes.length * USERS.length;
  const ca = readFileSync(env.ca_cert);
  const say = progress;

  const dir = await mkdtemp(join(tmpdir(), "hpcs-bench-grant-"));
  cleanup.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));

  // Operator tools of the bench: SPIRE's admin socket and Vault's root token, for verification and for
  // removing whatever the run (or an interrupted one) left behind.
  const spire = new SpireServerClient({ socketPath: env.spire.admin_socket, timeoutMs: 120_000 });
  cleanup.add("close SPIRE admin client", async () => spire.close());
  const root = new VaultClient({
    url: env.vault.url,
    caPem: ca,
    timeoutMs: 30_000,
    token: env.vault.root_token,
    kvMount: env.vault.kv_mount,
    jwtMount: env.vault.jwt_mount,
  });

  const configPath = join(dir, "hpcs-server.ini");
  const configText = `[spire-server]
address = ${env.spire.server_address}
port = ${env.spire.server_port}
trust-domain = ${td}
socket-path = ${env.spire.admin_socket}
[vault]
url = ${env.vault.url}
ca-file = ${env.ca_cert}
kv-mount = ${env.vault.kv_mount}
jwt-mount = ${env.vault.jwt_mount}
[hpcs-server]
listen = 127.0.0.1:10080
tls-cert = ${env.tls.cert}
tls-key = ${env.tls.key}
agent-model = per-job
node-attestation = operator
`;
  await writeFile(configPath, configText, { mode: 0o600 });
  const config = parseServerConfig(configText, configPath);
  const logger = createLogger({ level: "warn", name: "bench-grant", destination: process.stderr });

  // The benchmark is an operator tool on the bench, so the server it builds uses Vault's root token
  // instead of logging in with its own JWT-SVID (svidVaultLogin): what is measured is SPIRE
  // registration through the server, not the server's Vault login. A root token has no TTL, so the
  // keeper never renews or re-logs-in.
  const app = await createServerApp(config, logger, {
    vaultLogin: () =>
      TokenKeeper.start({
        login: async () => ({
          token: env.vault.root_token,
          accessor: "",
          policies: ["root"],
          leaseDurationSec: 0,
          renewable: false,
        }),
      }),
  });
  cleanup.add("close server app", () => app.close());
  signal.throwIfAborted();

  // Ephemeral ports on loopback; the config's listen is only a placeholder.
  const server = await startServer(config, app.service, logger, {
    http: { host: "127.0.0.1", port: 0 },
    grpc: { host: "127.0.0.1", port: 0 },
  });
  cleanup.add("stop server", () => server.close());
  const base = `https://127.0.0.1:${server.httpPort}`;
  say(`server on ${base} (TLS), client ${clientId}`);

  // Whatever registration leaves for the client: its workload entry, Vault role and policy, the
  // enrollment record and the grant index. Registered before enrolling so a half-done setup is undone too.
  cleanup.add(`remove client ${clientId}`, async () => {
    // The workload entry, and the agent alias in case the agent never got to remove it itself.
    for (const id of [SpiffeId.of(td, "c", clientId, "workload"), SpiffeId.of(td, "c", clientId)]) {
      const es = await spire.listEntries({ bySpiffeId: id });
      if (es.length > 0) await spire.batchDeleteEntries(es.map((e) => e.id));
    }
    const name = clientPolicyName(clientId);
    if ((await root.readJwtRole(name)) !== undefined) await root.deleteJwtRole(name);
    if ((await root.readPolicy(name)) !== undefined) await root.deletePolicy(name);
    for (const p of [`hpcs-server/enrollments/${clientId}`, `hpcs-server/grants/${clientId}`]) {
      if ((await root.kvReadMetadata(p)) !== undefined) await root.kvDestroyAll(p);
    }
  });
  const enrollment = await app.enrollments.enroll(clientId, 600);
  const reg = expectOk(
    "POST /v1/clients/register",
    await httpsJson(`${base}/v1/clients/register`, {
      ca,
      method: "POST",
      body: {
        clientName: clientId,
        enrollmentSecret: enrollment.secret,
        selectors: [{ type: "unix", value: `uid:${process.getuid?.() ?? 0}` }],
      },
      signal,
    }),
  );
  const joinToken = String(reg.joinToken);
  const workloadId = String(reg.workloadSpiffeId);
  signal.throwIfAborted();

  say("starting the client's spire-agent");
  const agent = await AgentWithToken.start(env, joinToken);
  cleanup.add("stop client agent", () => agent.stop());
  signal.throwIfAborted();
  const jwt = await agent.fetchJwt(AUDIENCE, workloadId);
  signal.throwIfAborted();

  // Revoke through the server, then make sure with the operator's tools that nothing of the grant is
  // left. The first JWT-SVID may have expired during a long baseline, and after Ctrl-C the agent (same
  // process group) is gone, so: the first JWT, else one quick attempt at a fresh one, else only the
  // direct removal below.
  const spiffeA = SpiffeId.of(td, "c", clientId, "s", secretA);
  const revoke = (bearer: string) =>
    httpsJson(`${base}/v1/grants/${encodeURIComponent(secretA)}`, {
      ca,
      method: "DELETE",
      bearer,
      timeoutMs: 120_000,
    });
  cleanup.add(`revoke grant ${secretA}`, async () => {
    let revokeError: Error | undefined;
    try {
      let r = await revoke(jwt);
      if (r.status === 401) r = await revoke(await fetchJwtOnce(env, agent.socket, workloadId));
      if (r.status !== 200 && r.status !== 404) {
        revokeError = new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
      }
    } catch (err) {
      revokeError = err as Error;
    }
    const left = await spire.listEntries({ bySpiffeId: spiffeA });
    if (left.length > 0) await spire.batchDeleteEntries(left.map((e) => e.id));
    const name = grantPolicyName(clientId, secretA);
    if ((await root.readJwtRole(name)) !== undefined) await root.deleteJwtRole(name);
    if ((await root.readPolicy(name)) !== undefined) await root.deletePolicy(name);
    if ((await root.kvReadMetadata(secretPath(clientId, secretA))) !== undefined) {
      await root.kvDestroyAll(secretPath(clientId, secretA));
    }
    if (revokeError)
      throw new Error(`DELETE /v1/grants (leftovers removed directly): ${revokeError.message}`);
  });

  // ---- A: the server, one request ----
  say(`A: POST /v1/grants, ${NODES} nodes × ${USERS.length} users`);
  const t0 = performance.now();
  const granted = await httpsJson(`${base}/v1/grants`, {
    ca,
    method: "POST",
    bearer: jwt,
    body: { secret: secretA, nodes, users: USERS },
    timeoutMs: 300_000,
    signal,
  });
  const secondsA = (performance.now() - t0) / 1000;
  const g = expectOk("POST /v1/grants", granted);
  const listedA = (await spire.listEntries({ bySpiffeId: spiffeA })).length;
  if (g.entriesCreated !== total || listedA !== total) {
    throw new Error(
      `grant created ${String(g.entriesCreated)} entries and SPIRE lists ${listedA}; expected ${total}`,
    );
  }
  signal.throwIfAborted();

  // ---- B: the original's way, one spire-server process per entry, sequentially ----
  const spiffeB = SpiffeId.of(td, "c", clientId, "s", secretB);
  cleanup.add(`delete baseline entries of ${secretB}`, async () => {
    const left = await spire.listEntries({ bySpiffeId: spiffeB });
    if (left.length === 0) return;
    const bad = (await spire.batchDeleteEntries(left.map((e) => e.id))).filter((r) => r.status === "error");
    if (bad.length > 0) throw new Error(`${bad.length} of ${left.length} entries not deleted`);
  });
  const argvs: string[][] = [];
  for (const node of nodes) {
    for (const u of USERS) {
      argvs.push([
        "entry",
        "create",
        "-socketPath",
        env.spire.admin_socket,
        "-parentID",
        SpiffeId.of(td, "h", node, "u", u).toString(),
        "-spiffeID",
        spiffeB.toString(),
        "-selector",
        `unix:user:${u}`,
      ]);
    }
  }
  const sample = argvs.slice(0, opts.baselineSample);
  say(
    `B: ${sample.length} × spire-server entry create` +
      (sample.length < total ? ` (sample of ${total}, will extrapolate)` : ""),
  );
  const t1 = performance.now();
  let done = 0;
  for (const args of sample) {
    signal.throwIfAborted();
    await runArgv(env.spire.server_bin, args, signal);
    done++;
    if (done % 500 === 0 && done < sample.length) say(`B: ${done}/${sample.length}`);
  }
  const measuredB = (performance.now() - t1) / 1000;
  const listedB = (await spire.listEntries({ bySpiffeId: spiffeB })).length;
  if (listedB !== sample.length) {
    throw new Error(`baseline: SPIRE lists ${listedB} entries; expected ${sample.length}`);
  }
  const extrapolated = sample.length < total;
  const secondsB = extrapolated ? (measuredB * total) / sample.length : measuredB;

  return {
    bench: "grant",
    nodes: NODES,
    users: USERS,
    entries: total,
    server: {
      method: "server: 1 × HTTPS POST /v1/grants",
      entries: total,
      seconds: secondsA,
      entriesPerSec: total / secondsA,
    },
    baseline: {
      method: `original: ${total} × spire-server entry create`,
      entries: total,
      measuredEntries: sample.length,
      measuredSeconds: measuredB,
      seconds: secondsB,
      extrapolated,
      entriesPerSec: total / secondsB,
    },
    ratio: secondsB / secondsA,
    target: TARGET_RATIO,
    machine: {
      nproc: availableParallelism(),
      cpu: cpus()[0]?.model.trim() ?? "unknown",
      platform: `${process.platform} ${process.arch}`,
      node: process.version,
      spire: await spireVersion(env),
    },
  };
}
