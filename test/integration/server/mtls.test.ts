import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { HpcsGrpcClient } from "../../../client/hpcs-grpc-client.js";
import { HpcsServerError } from "../../../client/hpcs-server-client.js";
import { SpiffeId } from "../../../lib/spiffe-id.js";
import { spiffeIdOfLeaf } from "../../../lib/spiffe/spiffe-tls.js";
import { WorkloadClient } from "../../../lib/spiffe/workload-client.js";
import { X509Source } from "../../../lib/spiffe/x509-source.js";
import type { X509Svid } from "../../../lib/spiffe/x509-svid.js";
import { SpireServerClient } from "../../../lib/spire/server-client.js";
import { clientPolicyName, grantPolicyName, secretPath } from "../../../lib/vault/policies.js";
import { VaultClient } from "../../../lib/vault/vault-client.js";
import { loadHpcsDefinition } from "../../../server/transport/grpc-server.js";
import { AgentWithToken } from "../../support/agent-with-token.js";
import { eventually } from "../../support/exec.js";
import { HpcsClientHome } from "../../support/hpcs-client.js";
import { freePort, HpcsServerProcess } from "../../support/hpcs-server.js";
import { httpsJson } from "../../support/https-json.js";
import { OpensslCerts, type TestCert } from "../../support/openssl-certs.js";
import { ClientTraces } from "../../support/job-side.js";
import { nonce, spireServer } from "../../support/spire.js";
import { loadStackEnv, sshUser, type StackEnv } from "../../support/stack-env.js";

type Unary = (
  req: object,
  md: grpc.Metadata,
  cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void,
) => void;
type HpcsStub = grpc.Client & Record<"Grant" | "ListGrants" | "Health", Unary>;

interface AuditLine {
  type?: string;
  action?: string;
  result?: string;
  caller?: string;
  callerVerified?: boolean;
  code?: string;
}

// The real `hpcs-server serve` process with `grpc-mtls-listen` (test/support/hpcs-server.ts: its own
// spire-agent and SPIFFE ID), a client registered over HTTP whose real spire-agent serves the client
// workload's X509-SVID, and every call over the network. Certificates SPIRE would never issue (self-
// signed, other CAs, other trust domains) come from openssl.
describe("hpcs-server gRPC over SPIFFE mTLS (real process, real agents)", function () {
  this.timeout(120_000);
  const n = nonce();
  const clientId = `mtls-${n}`;
  const secret = `data-${n}`;
  const node = `mtls-${n}-node`;

  let env: StackEnv;
  let srv: HpcsServerProcess | undefined;
  let spire: SpireServerClient;
  let root: VaultClient;
  let mtlsPort = 0;
  let agent: AgentWithToken | undefined;
  let workload: WorkloadClient | undefined;
  let source: X509Source | undefined;
  let client: HpcsGrpcClient | undefined;
  let certs: OpensslCerts;
  let workloadId = "";
  let toolId = "";
  let serverSerial = "";
  const extraEntries: string[] = [];

  const must = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} missing (an earlier test failed)`);
    return v;
  };
  const server = () => must(srv, "server");
  const svid = (): X509Svid => must(source, "X509 source").current();
  const bundlePem = () => Buffer.from(svid().bundlePem);
  const audit = (): AuditLine[] =>
    server()
      .log.split("\n")
      .filter((l) => l.startsWith('{"type":"audit"'))
      .map((l) => JSON.parse(l) as AuditLine);

  /** A raw stub on the mTLS port presenting `cert` (none when undefined); the server's ID is not checked. */
  const stubWith = (cert: { certPem: string; keyPem: string } | undefined): HpcsStub => {
    const pkg = loadHpcsDefinition() as unknown as { hpcs: { v1: { Hpcs: grpc.ServiceClientConstructor } } };
    const creds = grpc.credentials.createSsl(
      bundlePem(),
      cert ? Buffer.from(cert.keyPem) : null,
      cert ? Buffer.from(cert.certPem) : null,
      { checkServerIdentity: () => undefined },
    );
    return new pkg.hpcs.v1.Hpcs(`127.0.0.1:${mtlsPort}`, creds, {
      "grpc.ssl_target_name_override": env.trust_domain,
    }) as unknown as HpcsStub;
  };
  const rpc = (
    stub: HpcsStub,
    method: keyof HpcsStub & ("Grant" | "ListGrants" | "Health"),
    req: object,
    md = new grpc.Metadata(),
  ) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      stub[method](req, md, (err, res) => (err ? reject(err) : resolve(res)));
    }).finally(() => stub.close());

  /** The certificate the mTLS port presents to a client holding the workload's SVID. */
  const serverCertificate = (): Promise<PeerCertificate> =>
    new Promise((resolve, reject) => {
      const s = connect({
        host: "127.0.0.1",
        port: mtlsPort,
        ca: svid().bundlePem,
        cert: svid().chainPem,
        key: svid().keyPem,
        ALPNProtocols: ["h2"],
        checkServerIdentity: () => undefined,
      });
      s.once("secureConnect", () => {
        resolve(s.getPeerCertificate());
        s.destroy();
      });
      s.once("error", reject);
    });

  /** pino's request lines of the server (one per call, both transports). */
  const requests = () =>
    server()
      .log.split("\n")
      .filter((l) => l.includes('"msg":"request"'))
      .map(
        (l) =>
          JSON.parse(l) as { transport: string; method: string; caller?: string; callerVerified?: boolean },
      );

  /** A raw TLS connection presenting `cert`: the first event — server data, or the error's code. */
  const handshake = (cert: { certPem: string; keyPem: string } | undefined): Promise<string> =>
    new Promise((resolve) => {
      const s = connect({
        host: "127.0.0.1",
        port: mtlsPort,
        ca: bundlePem(),
        ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
        ALPNProtocols: ["h2"],
        checkServerIdentity: () => undefined,
      });
      const done = (what: string) => {
        resolve(what);
        s.destroy();
      };
      s.once("error", (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
      s.once("data", () => done("data"));
      s.once("close", () => done("closed"));
    });

  before(async () => {
    env = loadStackEnv();
    certs = OpensslCerts.create();
    spire = new SpireServerClient({ socketPath: env.spire.admin_socket });
    root = new VaultClient({
      url: env.vault.url,
      caPem: readFileSync(env.ca_cert),
      timeoutMs: 10_000,
      token: env.vault.root_token,
      kvMount: env.vault.kv_mount,
      jwtMount: env.vault.jwt_mount,
    });
    mtlsPort = await freePort();
    srv = await HpcsServerProcess.start(env, {
      extraServerKeys: [`grpc-mtls-listen = 127.0.0.1:${mtlsPort}`],
    });

    // A registered client with its real agent: the Workload API serves …/c/<id>/workload to uid 0.
    const e = await srv.enroll(clientId);
    const r = await httpsJson(`${srv.url}/v1/clients/register`, {
      ca: readFileSync(env.ca_cert),
      method: "POST",
      body: {
        clientName: clientId,
        enrollmentSecret: e.enrollmentSecret,
        selectors: [{ type: "unix", value: "uid:0" }],
      },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    workloadId = String(r.body.workloadSpiffeId);
    agent = await AgentWithToken.start(env, String(r.body.joinToken));
    // A second identity on the client's agent that is of the trust domain but no client workload.
    toolId = `spiffe://${env.trust_domain}/c/${clientId}/tool`;
    const created = (await spireServer(env, [
      "entry",
      "create",
      "-parentID",
      `spiffe://${env.trust_domain}/c/${clientId}`,
      "-spiffeID",
      toolId,
      "-selector",
      "unix:uid:0",
    ])) as { results: { entry: { id: string } }[] };
    extraEntries.push(...created.results.map((x) => x.entry.id));
    workload = new WorkloadClient(agent.socket);
    source = new X509Source(workload, { pick: (s) => s.find((x) => x.spiffeId.toString() === workloadId) });
    await source.waitReady(60_000);
  });

  after(async () => {
    client?.close();
    source?.close();
    workload?.close();
    await agent?.stop().catch(() => undefined);
    if (spire) {
      const td = env.trust_domain;
      const ids = [
        ...extraEntries.map((id) => ({ id })),
        ...[
          SpiffeId.of(td, "c", clientId),
          SpiffeId.of(td, "c", clientId, "workload"),
          SpiffeId.of(td, "c", clientId, "s", secret),
        ].map((sid) => ({ sid })),
      ];
      for (const x of ids) {
        if ("id" in x) {
          await spire.batchDeleteEntries([x.id]).catch(() => undefined);
        } else {
          const es = await spire.listEntries({ bySpiffeId: x.sid }).catch(() => []);
          if (es.length > 0) await spire.batchDeleteEntries(es.map((e) => e.id)).catch(() => undefined);
        }
      }
      for (const name of [clientPolicyName(clientId), grantPolicyName(clientId, secret)]) {
        await root.deleteJwtRole(name).catch(() => undefined);
        await root.deletePolicy(name).catch(() => undefined);
      }
      for (const p of [
        `hpcs-server/enrollments/${clientId}`,
        `hpcs-server/grants/${clientId}`,
        secretPath(clientId, secret),
      ]) {
        await root.kvDestroyAll(p).catch(() => undefined);
      }
      spire.close();
    }
    await srv?.stop();
    certs?.dispose();
  });

  it("presents the server's own X509-SVID on the mTLS port", async () => {
    const cert = await serverCertificate();
    assert.equal(spiffeIdOfLeaf(cert.raw).toString(), server().spiffeId);
    assert.equal(cert.ca, false);
    serverSerial = cert.serialNumber;
  });

  it("grants over mTLS as the client its X509-SVID names; the grant exists in SPIRE and Vault", async () => {
    client = await HpcsGrpcClient.open({
      host: "127.0.0.1",
      port: mtlsPort,
      serverId: server().spiffeId,
      workload: must(workload, "workload"),
      spiffeId: workloadId,
    });
    const g = await client.grant(undefined, { secret, nodes: [node], users: ["alice"], groups: [] });
    assert.equal(g.clientId, clientId);
    assert.equal(g.spiffeId, `spiffe://${env.trust_domain}/c/${clientId}/s/${secret}`);
    assert.equal(g.entriesCreated, 1);
    const entries = await spire.listEntries({ bySpiffeId: SpiffeId.parse(g.spiffeId) });
    assert.deepEqual(
      entries.map((e) => e.parentId.toString()),
      [`spiffe://${env.trust_domain}/h/${node}/u/alice`],
    );
    assert.ok(await root.readJwtRole(g.vaultRole), `vault role ${g.vaultRole}`);
    const listed = await client.listGrants();
    assert.deepEqual(
      listed.map((x) => x.secret),
      [secret],
    );
    const line = audit().find((a) => a.action === "grant.create" && a.result === "ok");
    assert.equal(line?.caller, workloadId, JSON.stringify(line));
    assert.equal(line?.callerVerified, true);
  });

  it("takes the caller from the certificate only: a bearer JWT on the mTLS port changes nothing", async () => {
    const md = new grpc.Metadata();
    md.set("authorization", "Bearer not-even-a-jwt");
    const leaf = svid();
    const r = await rpc(stubWith({ certPem: leaf.chainPem, keyPem: leaf.keyPem }), "ListGrants", {}, md);
    assert.deepEqual(
      (r.grants as { secret: string }[]).map((x) => x.secret),
      [secret],
    );
  });

  it("refuses an SVID of the trust domain that is no client workload (UNAUTHENTICATED, audited)", async () => {
    const toolSource = new X509Source(must(workload, "workload"), {
      pick: (s) => s.find((x) => x.spiffeId.toString() === toolId),
    });
    let tool: X509Svid;
    try {
      tool = await toolSource.waitReady(60_000);
    } finally {
      toolSource.close();
    }
    await assert.rejects(
      rpc(stubWith({ certPem: tool.chainPem, keyPem: tool.keyPem }), "ListGrants", {}),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAUTHENTICATED, e.message);
        assert.match(e.details, /X509-SVID .*tool.* is not a client workload/);
        return true;
      },
    );
    const line = audit().find((a) => a.action === "grant.list" && a.result === "refused");
    assert.equal(line?.caller, toolId, JSON.stringify(line));
    assert.equal(line?.code, "unauthenticated");
  });

  it("cannot be called without a valid SVID: no certificate, self-signed, another CA, another trust domain", async () => {
    const td = env.trust_domain;
    const otherCa = certs.make({ uris: [], ca: true });
    const forged: [string, TestCert | undefined][] = [
      ["no certificate", undefined],
      ["self-signed with the client's ID", certs.make({ uris: [workloadId] })],
      ["another CA, the client's ID", certs.make({ uris: [workloadId], issuer: otherCa })],
      [
        "another trust domain",
        certs.make({ uris: [`spiffe://other-${td}/c/${clientId}/workload`], issuer: otherCa }),
      ],
    ];
    const before = audit().length;
    for (const [what, cert] of forged) {
      await assert.rejects(rpc(stubWith(cert), "Health", {}), (e: grpc.ServiceError) => {
        // The TLS handshake is refused: the call never reaches the server (no request id comes back).
        assert.equal(e.code, grpc.status.UNAVAILABLE, `${what}: ${e.message}`);
        assert.match(e.details, /No connection established/, what);
        assert.equal(e.metadata.get("x-request-id").length, 0, what);
        return true;
      });
    }
    // Nothing of these reached the service.
    assert.equal(audit().length, before);

    // At the TLS level: the server aborts each handshake (TLS 1.3: the client learns it when it reads),
    // while the client's real SVID gets HTTP/2's first frame.
    const outcomes = await Promise.all(forged.map(([, cert]) => handshake(cert)));
    assert.equal(outcomes[0], "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED");
    for (const [i, o] of outcomes.entries()) {
      assert.notEqual(o, "data", `${forged[i]?.[0]}: ${o}`);
    }
    assert.equal(await handshake({ certPem: svid().chainPem, keyPem: svid().keyPem }), "data");
  });

  it("refuses a server that presents another SPIFFE ID than grpc-mtls-server-id", async () => {
    const wrong = await HpcsGrpcClient.open({
      host: "127.0.0.1",
      port: mtlsPort,
      serverId: `spiffe://${env.trust_domain}/hpcs-server`,
      workload: must(workload, "workload"),
      spiffeId: workloadId,
    });
    try {
      await assert.rejects(wrong.listGrants(), (e: HpcsServerError) => {
        assert.ok(e instanceof HpcsServerError);
        assert.equal(e.code, "unreachable", e.message);
        assert.match(e.message, /not the expected spiffe:\/\/[^ ]+\/hpcs-server\b/);
        return true;
      });
    } finally {
      wrong.close();
    }
  });

  it("rotation: after the agent issues the server a new X509-SVID, new connections get it", async () => {
    assert.ok(serverSerial, "serial from the first test");
    // Any change to the entry makes its agent sign a new SVID at its next sync (SPIRE re-mints SVIDs of
    // entries whose revision changed).
    const shown = (await spireServer(env, ["entry", "show", "-spiffeID", server().spiffeId])) as {
      entries: {
        id: string;
        parent_id: { trust_domain: string; path: string };
        selectors: { type: string; value: string }[];
      }[];
    };
    const entry = must(shown.entries[0], "server entry");
    await spireServer(env, [
      "entry",
      "update",
      "-entryID",
      entry.id,
      "-parentID",
      `spiffe://${entry.parent_id.trust_domain}${entry.parent_id.path}`,
      "-spiffeID",
      server().spiffeId,
      ...entry.selectors.flatMap((s) => ["-selector", `${s.type}:${s.value}`]),
      "-hint",
      `rotated-${n}`,
    ]);
    const rotated = await eventually("a new server SVID", 60_000, async () => {
      const cert = await serverCertificate();
      if (cert.serialNumber === serverSerial) throw new Error("same serial still");
      return cert;
    });
    assert.equal(spiffeIdOfLeaf(rotated.raw).toString(), server().spiffeId);
    // And calls keep working over a new connection with the new SVID.
    const leaf = svid();
    const r = await rpc(stubWith({ certPem: leaf.chainPem, keyPem: leaf.keyPem }), "ListGrants", {});
    assert.equal((r.grants as unknown[]).length, 1);
    assert.match(server().log, /X509-SVID in use for new connections/);
  });
  it("revokes over mTLS: entries, role and policy go", async () => {
    const c = must(client, "mTLS client");
    const r = await c.revoke(undefined, secret, { deleteSecret: true });
    assert.deepEqual(r, { entriesDeleted: 1, roleDeleted: true, policyDeleted: true, secretDeleted: false });
    const id = SpiffeId.of(env.trust_domain, "c", clientId, "s", secret);
    assert.equal((await spire.listEntries({ bySpiffeId: id })).length, 0);
    assert.equal(await root.readJwtRole(grantPolicyName(clientId, secret)), undefined);
    assert.deepEqual(await c.listGrants(), []);
  });

  it("the CLI grants over mTLS with [hpcs-server] grpc-mtls; with a wrong server ID it stops before creating anything", async () => {
    const name = `mtls-${n}-cli`;
    const traces = new ClientTraces(env, name);
    const home = await HpcsClientHome.create(env, server(), name);
    const work = await mkdtemp(join(tmpdir(), "mtls-cli-"));
    const scratch = sshUser(env, "alice").scratch;
    try {
      const plain = await readFile(home.configPath, "utf8");
      const withMtls = (serverId: string) =>
        writeFile(
          home.configPath,
          plain.replace(
            "[hpcs-server]\n",
            `[hpcs-server]\ngrpc-mtls = 127.0.0.1:${mtlsPort}\ngrpc-mtls-server-id = ${serverId}\n`,
          ),
        );
      const input = join(work, "input.bin");
      await writeFile(input, "mTLS test payload\n");
      const dataPrep = (artifact: string) =>
        home.hpcs([
          "data-prep",
          "-i",
          input,
          "--data-path",
          `/tmp/${artifact}`,
          "--data-path-at-rest",
          scratch,
          "-u",
          "alice",
          "-c",
          node,
          "--json",
        ]);

      // A server ID the server does not have: refused before the secret exists, so nothing is left.
      await withMtls(`spiffe://${env.trust_domain}/hpcs-server`);
      const bad = await dataPrep(`mtls-${n}-bad.gpg`);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /no mTLS connection .*not the expected spiffe:\/\/[^ ]+\/hpcs-server\b/);
      assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      assert.deepEqual(await traces.secrets(), []);

      await withMtls(server().spiffeId);
      const ok = await dataPrep(`mtls-${n}-ok.gpg`);
      assert.equal(ok.code, 0, `stderr: ${ok.stderr}\nserver: ${server().lastLines()}`);
      const caller = `spiffe://${env.trust_domain}/c/${name}/workload`;
      const grants = requests().filter((r) => r.method === "Grant" || r.method.includes("grants"));
      const mine = grants.filter((r) => r.caller === caller);
      assert.deepEqual(
        mine.map((r) => [r.transport, r.method, r.callerVerified]),
        [["grpc", "Grant", true]],
        JSON.stringify(grants),
      );
      assert.equal((await traces.grantEntries()).length, 1);
    } finally {
      for (const f of await readdir(scratch).catch(() => [] as string[])) {
        if (f.startsWith(`mtls-${n}`)) await rm(join(scratch, f), { force: true });
      }
      await traces.forget().catch(() => undefined);
      await home.remove();
      await rm(work, { recursive: true, force: true });
    }
  });
});
