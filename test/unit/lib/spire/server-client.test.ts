import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { SpiffeId } from "../../../../lib/spiffe-id.js";
import { SpireError } from "../../../../lib/spire/registration.js";
import { defaultProtoDir, SpireServerClient } from "../../../../lib/spire/server-client.js";

// A fake SPIRE server on a unix socket, built from the same protos, to pin down what the client
// sends (method paths, chunking, paging, deadlines); the real server is exercised in test/integration.

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- decoded proto messages and grpc-js handlers are untyped here
type Msg = any;
type Handler = (req: Msg) => Msg;

interface Fake {
  socket: string;
  calls: { method: string; req: Msg }[];
  stop: () => Promise<void>;
}

const FILES = [
  "spire/api/server/entry/v1/entry.proto",
  "spire/api/server/agent/v1/agent.proto",
  "spire/api/server/bundle/v1/bundle.proto",
];

async function startFake(handlers: Record<string, Handler>): Promise<Fake> {
  const dir = await mkdtemp(join(tmpdir(), "hpcs-fake-spire-"));
  const socket = join(dir, "api.sock");
  const def = protoLoader.loadSync(FILES, {
    includeDirs: [defaultProtoDir()],
    keepCase: true,
    longs: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as Msg;
  const calls: Fake["calls"] = [];
  const server = new grpc.Server();
  const impl = (names: string[]) =>
    Object.fromEntries(
      names.map((m) => [
        m,
        (call: Msg, cb: Msg) => {
          calls.push({ method: m, req: call.request });
          const h = handlers[m];
          if (!h) return cb({ code: grpc.status.UNIMPLEMENTED, details: m });
          Promise.resolve()
            .then(() => h(call.request))
            .then(
              (res) => cb(null, res),
              (err) => cb(err),
            );
        },
      ]),
    );
  const s = pkg.spire.api.server;
  server.addService(s.entry.v1.Entry.service, impl(["ListEntries", "BatchCreateEntry", "BatchDeleteEntry"]));
  server.addService(s.agent.v1.Agent.service, impl(["DeleteAgent", "CreateJoinToken"]));
  server.addService(s.bundle.v1.Bundle.service, impl(["GetBundle"]));
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  return {
    socket,
    calls,
    stop: async () => {
      server.forceShutdown();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const parent = SpiffeId.parse("spiffe://hpcs.test/h/n1/u/alice");
const wireId = (id: SpiffeId) => ({ trust_domain: id.trustDomain, path: id.path });

describe("spire/server-client (fake server)", () => {
  let fake: Fake | undefined;
  let client: SpireServerClient | undefined;
  afterEach(async () => {
    client?.close();
    await fake?.stop();
    fake = undefined;
    client = undefined;
  });

  it("finds proto/ from its compiled location", () => {
    assert.match(defaultProtoDir(), /\/proto\/$/);
  });

  it("creates N entries in one call below the chunk size, in order, mapping each status", async () => {
    fake = await startFake({
      BatchCreateEntry: (req: Msg) => ({
        results: req.entries.map((e: Msg, i: number) =>
          i === 1
            ? { status: { code: 6, message: "similar entry already exists" }, entry: { ...e, id: "old" } }
            : i === 2
              ? { status: { code: 3, message: "invalid" } }
              : { status: { code: 0, message: "OK" }, entry: { ...e, id: `new-${i}` } },
        ),
      }),
    });
    client = new SpireServerClient({ socketPath: fake.socket });
    const specs = [0, 1, 2, 3].map((i) => ({
      spiffeId: parent.child("s", `e${i}`),
      parentId: parent,
      selectors: [{ type: "unix", value: `uid:${i}` }],
      expiresAt: new Date(2_000_000_000_000),
    }));
    const res = await client.batchCreateEntries(specs);
    assert.equal(fake.calls.length, 1);
    const sent = fake.calls[0]?.req.entries;
    assert.equal(sent.length, 4);
    assert.deepEqual(sent[0].parent_id, wireId(parent));
    assert.equal(sent[0].expires_at, "2000000000");
    assert.deepEqual(
      res.map((r) => [r.status, "id" in r ? r.id : r.code]),
      [
        ["created", "new-0"],
        ["exists", "old"],
        ["error", 3],
        ["created", "new-3"],
      ],
    );
  });

  it("splits very large batches into chunks and keeps result order", async () => {
    fake = await startFake({
      BatchCreateEntry: (req: Msg) => ({
        results: req.entries.map((e: Msg) => ({
          status: { code: 0 },
          entry: { ...e, id: e.spiffe_id.path.split("/").pop() },
        })),
      }),
    });
    client = new SpireServerClient({ socketPath: fake.socket });
    const specs = Array.from({ length: 1201 }, (_, i) => ({
      spiffeId: parent.child("s", `e${i}`),
      parentId: parent,
      selectors: [{ type: "unix", value: "uid:1" }],
    }));
    const res = await client.batchCreateEntries(specs);
    // Chunks travel concurrently, so only their sizes are fixed, not their arrival order.
    assert.deepEqual(
      fake.calls.map((c) => c.req.entries.length).sort((a, b) => a - b),
      [201, 500, 500],
    );
    assert.deepEqual(
      res.map((r) => ("id" in r ? r.id : "")),
      specs.map((_, i) => `e${i}`),
    );
  });

  it("reports a failed chunk per entry and still returns the entries other chunks created", async () => {
    let n = 0;
    fake = await startFake({
      BatchCreateEntry: (req: Msg) => {
        if (n++ === 1) throw Object.assign(new Error("datastore busy"), { code: 14 });
        return {
          results: req.entries.map((e: Msg) => ({
            status: { code: 0 },
            entry: { ...e, id: e.spiffe_id.path.split("/").pop() },
          })),
        };
      },
    });
    client = new SpireServerClient({ socketPath: fake.socket });
    const specs = Array.from({ length: 1100 }, (_, i) => ({
      spiffeId: parent.child("s", `e${i}`),
      parentId: parent,
      selectors: [{ type: "unix", value: "uid:1" }],
    }));
    const res = await client.batchCreateEntries(specs);
    assert.equal(res.length, 1100);
    assert.equal(res.filter((r) => r.status === "created").length, 600);
    assert.equal(res.filter((r) => r.status === "error").length, 500);
  });

  it("throws when every chunk failed (nothing was created)", async () => {
    fake = await startFake({
      BatchCreateEntry: () => {
        throw Object.assign(new Error("datastore down"), { code: 14 });
      },
    });
    client = new SpireServerClient({ socketPath: fake.socket });
    const specs = Array.from({ length: 600 }, (_, i) => ({
      spiffeId: parent.child("s", `e${i}`),
      parentId: parent,
      selectors: [{ type: "unix", value: "uid:1" }],
    }));
    await assert.rejects(client.batchCreateEntries(specs), /datastore down/);
  });

  it("follows page tokens when listing", async () => {
    const entry = (id: string) => ({
      id,
      spiffe_id: wireId(parent.child(id)),
      parent_id: wireId(parent),
      selectors: [],
    });
    fake = await startFake({
      ListEntries: (req: Msg) =>
        req.page_token === ""
          ? { entries: [entry("a"), entry("b")], next_page_token: "p2" }
          : { entries: [entry("c")], next_page_token: "" },
    });
    client = new SpireServerClient({ socketPath: fake.socket });
    const list = await client.listEntries({ byParentId: parent });
    assert.deepEqual(
      list.map((e) => e.id),
      ["a", "b", "c"],
    );
    assert.deepEqual(fake.calls[0]?.req.filter.by_parent_id, wireId(parent));
    assert.equal(fake.calls[0]?.req.filter.by_spiffe_id, null);
    assert.equal(fake.calls[1]?.req.page_token, "p2");
  });

  it("puts a deadline on every call", async () => {
    fake = await startFake({ GetBundle: () => new Promise((r) => setTimeout(() => r({}), 2000)) });
    client = new SpireServerClient({ socketPath: fake.socket, timeoutMs: 200 });
    await assert.rejects(client.getBundle(), (e: unknown) => e instanceof SpireError && e.code === 4);
  });

  it("reports a failed RPC as SpireError with its code", async () => {
    fake = await startFake({
      DeleteAgent: () => {
        throw { code: grpc.status.NOT_FOUND, details: "agent not found" };
      },
    });
    client = new SpireServerClient({ socketPath: fake.socket });
    await assert.rejects(
      client.evictAgent(SpiffeId.parse("spiffe://hpcs.test/spire/agent/join_token/x")),
      (e: unknown) => e instanceof SpireError && e.code === 5 && /agent not found/.test(e.message),
    );
  });
});
