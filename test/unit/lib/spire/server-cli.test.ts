import assert from "node:assert/strict";
import { SpiffeId } from "../../../../lib/spiffe-id.js";
import { InvalidRegistrationError, SpireError } from "../../../../lib/spire/registration.js";
import {
  buildCliArgv,
  type CliRunner,
  type CliRunResult,
  grpcCodeFromStderr,
  SpireServerCli,
  spawnRunner,
} from "../../../../lib/spire/server-cli.js";

interface Call {
  file: string;
  args: readonly string[];
  input: string;
}

/** A runner that records each call and answers from a queue of canned results. */
function fakeRunner(...answers: Partial<CliRunResult>[]): { runner: CliRunner; calls: Call[] } {
  const calls: Call[] = [];
  const runner: CliRunner = async (file, args, opts) => {
    calls.push({ file, args, input: opts.input });
    const a = answers.shift() ?? {};
    return { code: 0, signal: null, stdout: "{}", stderr: "", ...a };
  };
  return { runner, calls };
}

const HOSTILE = "a;rm -rf /";
const KUBECTL = ["kubectl", "exec", "-i", "-n", "spire", "spire-server-0", "--"];
const td = "hpcs.test";
const parent = SpiffeId.of(td, "h", "node1", "u", "alice");

function wireEntry(id: string, spiffe: SpiffeId, selectors: { type: string; value: string }[]) {
  return {
    id,
    spiffe_id: { trust_domain: spiffe.trustDomain, path: spiffe.path },
    parent_id: { trust_domain: parent.trustDomain, path: parent.path },
    selectors,
    x509_svid_ttl: 0,
    jwt_svid_ttl: 0,
    expires_at: "0",
    hint: "",
    created_at: "1700000000",
    revision_number: "0",
  };
}

describe("spire/server-cli: argv", () => {
  it("puts the pre-command first, then the binary, the command, flags, socket and -output json", () => {
    assert.deepEqual(
      buildCliArgv(
        { preCommand: KUBECTL, serverBin: "spire-server", socketPath: "/run/spire/api.sock" },
        ["entry", "show"],
        ["-parentID", parent.toString()],
      ),
      [
        ...KUBECTL,
        "spire-server",
        "entry",
        "show",
        "-parentID",
        "spiffe://hpcs.test/h/node1/u/alice",
        "-socketPath",
        "/run/spire/api.sock",
        "-output",
        "json",
      ],
    );
  });

  it("keeps a hostile value as exactly one argv element (no joining, no splitting)", () => {
    const argv = buildCliArgv(
      { preCommand: [], serverBin: "spire-server" },
      ["entry", "show"],
      ["-spiffeID", HOSTILE],
    );
    assert.equal(argv.filter((a) => a === HOSTILE).length, 1);
    assert.equal(argv.indexOf(HOSTILE), argv.indexOf("-spiffeID") + 1);
    assert.ok(!argv.includes("rm"));
  });

  it("the default runner passes argv to the program verbatim, with no shell in between", async () => {
    const script = "process.stdout.write(JSON.stringify(process.argv.slice(1)))";
    const args = ["-e", script, HOSTILE, "$(id)", "`id`", "x > /tmp/y", "*"];
    const r = await spawnRunner(process.execPath, args, { input: "", timeoutMs: 10_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [HOSTILE, "$(id)", "`id`", "x > /tmp/y", "*"]);
  });

  it("the default runner feeds stdin and enforces its deadline", async () => {
    const echo = await spawnRunner(process.execPath, ["-e", "process.stdin.pipe(process.stdout)"], {
      input: '{"a":1}',
      timeoutMs: 10_000,
    });
    assert.equal(echo.stdout, '{"a":1}');
    const slow = await spawnRunner(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], {
      input: "",
      timeoutMs: 300,
    });
    assert.equal(slow.signal, "SIGKILL");
  });

  it("refuses a hostile value before any process runs", async () => {
    const { runner, calls } = fakeRunner();
    const cli = new SpireServerCli({ preCommand: KUBECTL, serverBin: "spire-server", runner });
    await assert.rejects(cli.batchDeleteEntries([HOSTILE]), InvalidRegistrationError);
    await assert.rejects(
      cli.batchCreateEntries([
        {
          spiffeId: parent.child("s", "x"),
          parentId: parent,
          selectors: [{ type: "unix;rm", value: "uid:1" }],
        },
      ]),
      InvalidRegistrationError,
    );
    await assert.rejects(
      cli.batchCreateEntries([
        {
          spiffeId: parent.child("s", "x"),
          parentId: parent,
          selectors: [{ type: "unix", value: "uid:1\nx" }],
        },
      ]),
      InvalidRegistrationError,
    );
    // A look-alike object is not a SpiffeId, whatever its toString says.
    const fake = { toString: () => HOSTILE, trustDomain: td, path: "/x" } as unknown as SpiffeId;
    await assert.rejects(cli.evictAgent(fake), InvalidRegistrationError);
    assert.throws(() => cli.argv(["entry", "show"], ["-spiffeID", HOSTILE]), InvalidRegistrationError);
    assert.equal(calls.length, 0);
  });

  it("refuses a binary or socket path a remote shell would interpret", () => {
    assert.throws(() => new SpireServerCli({ serverBin: "spire-server; id" }), InvalidRegistrationError);
    assert.throws(
      () => new SpireServerCli({ serverBin: "spire-server", socketPath: "/tmp/$(id)/api.sock" }),
      InvalidRegistrationError,
    );
    assert.throws(
      () => new SpireServerCli({ serverBin: "spire-server", socketPath: "relative.sock" }),
      InvalidRegistrationError,
    );
    assert.throws(
      () => new SpireServerCli({ serverBin: "s", preCommand: ["ssh", ""] }),
      InvalidRegistrationError,
    );
  });
});

describe("spire/server-cli: calls", () => {
  it("sends the whole batch as one `entry create -data -` with the entries on stdin", async () => {
    const a = parent.child("s", "a");
    const b = parent.child("s", "b");
    const { runner, calls } = fakeRunner({
      stdout: JSON.stringify({
        results: [
          {
            status: { code: 0, message: "OK" },
            entry: wireEntry("id-a", a, [{ type: "unix", value: HOSTILE }]),
          },
          {
            status: { code: 3, message: "bad" },
            entry: wireEntry("", b, [{ type: "unix", value: "uid:2" }]),
          },
        ],
      }),
    });
    const cli = new SpireServerCli({ preCommand: KUBECTL, serverBin: "spire-server", runner });
    const expiresAt = new Date("2030-01-01T00:00:00Z");
    const res = await cli.batchCreateEntries([
      { spiffeId: a, parentId: parent, selectors: [{ type: "unix", value: HOSTILE }], expiresAt, hint: "h" },
      { spiffeId: b, parentId: parent, selectors: [{ type: "unix", value: "uid:2" }], x509SvidTtl: 60 },
    ]);
    assert.equal(calls.length, 1);
    const call = calls[0];
    assert.ok(call);
    assert.equal(call.file, "kubectl");
    assert.deepEqual(call.args, [
      ...KUBECTL.slice(1),
      "spire-server",
      "entry",
      "create",
      "-data",
      "-",
      "-output",
      "json",
    ]);
    // The free-form value travels in the JSON document, never in argv.
    assert.ok(!call.args.some((x) => x.includes(";")));
    assert.deepEqual(JSON.parse(call.input), {
      entries: [
        {
          spiffe_id: a.toString(),
          parent_id: parent.toString(),
          selectors: [{ type: "unix", value: HOSTILE }],
          entryExpiry: 1893456000,
          hint: "h",
        },
        {
          spiffe_id: b.toString(),
          parent_id: parent.toString(),
          selectors: [{ type: "unix", value: "uid:2" }],
          x509_svid_ttl: 60,
        },
      ],
    });
    assert.equal(res[0]?.status, "created");
    assert.equal(res[0]?.status === "created" && res[0].id, "id-a");
    assert.deepEqual(res[1], { status: "error", code: 3, message: "bad" });
  });

  it("resolves the id of an ALREADY_EXISTS result, which the CLI drops, by listing", async () => {
    const a = parent.child("s", "a");
    const sel = [
      { type: "unix", value: "uid:1" },
      { type: "unix", value: "gid:2" },
    ];
    const { runner, calls } = fakeRunner(
      {
        stdout: JSON.stringify({
          results: [
            { status: { code: 6, message: "similar entry already exists" }, entry: wireEntry("", a, sel) },
          ],
        }),
      },
      {
        stdout: JSON.stringify({
          entries: [
            wireEntry("other", a, [{ type: "unix", value: "uid:1" }]),
            wireEntry("the-one", a, [...sel].reverse()),
          ],
          next_page_token: "",
        }),
      },
    );
    const cli = new SpireServerCli({
      serverBin: "/opt/spire/bin/spire-server",
      socketPath: "/s/api.sock",
      runner,
    });
    const res = await cli.batchCreateEntries([{ spiffeId: a, parentId: parent, selectors: sel }]);
    assert.equal(res[0]?.status, "exists");
    assert.equal(res[0]?.status === "exists" && res[0].id, "the-one");
    assert.deepEqual(calls[1]?.args, [
      "entry",
      "show",
      "-spiffeID",
      a.toString(),
      "-parentID",
      parent.toString(),
      "-socketPath",
      "/s/api.sock",
      "-output",
      "json",
    ]);
  });

  it("deletes a batch with one `entry delete -file -` and maps per-id statuses", async () => {
    const { runner, calls } = fakeRunner({
      stdout: JSON.stringify({
        results: [
          { id: "a", status: { code: 0, message: "OK" } },
          { id: "b", status: { code: 5, message: "entry not found" } },
        ],
      }),
    });
    const cli = new SpireServerCli({ serverBin: "spire-server", runner });
    const res = await cli.batchDeleteEntries(["a", "b"]);
    assert.deepEqual(calls[0]?.args, ["entry", "delete", "-file", "-", "-output", "json"]);
    assert.deepEqual(JSON.parse(calls[0]?.input ?? ""), { ids: ["a", "b"] });
    assert.deepEqual(res, [
      { id: "a", status: "deleted" },
      { id: "b", status: "not-found" },
    ]);
  });

  it("builds token, evict and bundle calls and parses their JSON", async () => {
    const { runner, calls } = fakeRunner(
      { stdout: '{"expires_at":"1700000600","value":"tok"}' },
      { stdout: "{}" },
      {
        stdout: JSON.stringify({
          trust_domain: td,
          x509_authorities: [{ asn1: Buffer.from("der").toString("base64"), tainted: false }],
          jwt_authorities: [
            { key_id: "k", public_key: Buffer.from("pk").toString("base64"), expires_at: "0" },
          ],
          refresh_hint: "0",
          sequence_number: "3",
        }),
      },
    );
    const cli = new SpireServerCli({ serverBin: "spire-server", runner });
    const agentId = SpiffeId.of(td, "h", "node1");
    assert.deepEqual(await cli.createJoinToken({ ttlSeconds: 600, agentId }), {
      token: "tok",
      expiresAt: new Date(1700000600 * 1000),
    });
    await cli.evictAgent(SpiffeId.of(td, "spire", "agent", "join_token", "tok"));
    const bundle = await cli.getBundle();
    assert.deepEqual(calls[0]?.args, [
      "token",
      "generate",
      "-ttl",
      "600",
      "-spiffeID",
      agentId.toString(),
      "-output",
      "json",
    ]);
    assert.deepEqual(calls[1]?.args, [
      "agent",
      "evict",
      "-spiffeID",
      "spiffe://hpcs.test/spire/agent/join_token/tok",
      "-output",
      "json",
    ]);
    assert.deepEqual(calls[2]?.args, ["bundle", "show", "-output", "json"]);
    assert.deepEqual(bundle.x509Authorities, [Buffer.from("der")]);
    assert.equal(bundle.jwtAuthorities[0]?.keyId, "k");
    assert.equal(bundle.jwtAuthorities[0]?.expiresAt, undefined);
    assert.equal(bundle.sequenceNumber, 3);
  });

  it("turns a failing CLI into a SpireError carrying the gRPC code", async () => {
    const { runner } = fakeRunner(
      { code: 1, stdout: "", stderr: "Error: rpc error: code = NotFound desc = agent not found\n" },
      { code: null, signal: "SIGKILL", stdout: "" },
      { stdout: "not json" },
    );
    const cli = new SpireServerCli({ serverBin: "spire-server", runner, timeoutMs: 5 });
    const id = SpiffeId.of(td, "spire", "agent", "join_token", "x");
    await assert.rejects(cli.evictAgent(id), (e: unknown) => e instanceof SpireError && e.code === 5);
    await assert.rejects(cli.evictAgent(id), (e: unknown) => e instanceof SpireError && e.code === 4);
    await assert.rejects(cli.getBundle(), SpireError);
  });

  it("maps CLI error text to gRPC codes", () => {
    assert.equal(grpcCodeFromStderr("Error: rpc error: code = AlreadyExists desc = x"), 6);
    assert.equal(grpcCodeFromStderr("connection refused"), -1);
    assert.equal(grpcCodeFromStderr("code = Bogus"), -1);
  });
});
