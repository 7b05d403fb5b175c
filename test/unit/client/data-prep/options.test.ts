import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dataPrepOptions, type RawDataPrepFlags } from "../../../../client/data-prep/options.js";
import { collectList } from "../../../../client/ship-options.js";
import { UsageError } from "../../../../client/usage-error.js";

describe("client/data-prep/options", () => {
  let dir: string;
  let base: RawDataPrepFlags;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "dp-opts-"));
    mkdirSync(join(dir, "input"));
    writeFileSync(join(dir, "file.bin"), "x");
    base = {
      inputData: join(dir, "input"),
      dataPathAtRest: "/scratch/p1/alice",
      users: ["alice"],
      computeNodes: ["nid001"],
    };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps the original's meaning and fills defaults", () => {
    const o = dataPrepOptions({ ...base, dataPath: "/tmp/encrypted_input.tgz", username: "alice" }, dir);
    assert.equal(o.input, join(dir, "input"));
    assert.equal(o.inputKind, "directory");
    assert.equal(o.artifactName, "encrypted_input.tgz");
    assert.equal(o.atRestDir, "/scratch/p1/alice");
    assert.equal(o.configPath, "/tmp/hpcs-client.conf");
    assert.deepEqual(o.nodes, ["nid001"]);
    assert.equal(o.outputDir, undefined);
    assert.equal(dataPrepOptions(base, dir).artifactName, "input.tar.gpg");
    assert.equal(dataPrepOptions({ ...base, inputData: join(dir, "file.bin") }, dir).inputKind, "file");
  });

  it("collects repeated and comma-separated lists, without duplicates", () => {
    const users = collectList("bob, carol", collectList("alice", undefined));
    assert.deepEqual(users, ["alice", "bob", "carol"]);
    assert.deepEqual(dataPrepOptions({ ...base, users: ["alice", "alice"] }, dir).users, ["alice"]);
  });

  it("parses --expires", () => {
    assert.equal(dataPrepOptions({ ...base, expires: "7d" }, dir).expiresInSec, 604800);
    assert.throws(
      () => dataPrepOptions({ ...base, expires: "soon" }, dir),
      /--expires: "soon" is not a duration/,
    );
  });

  const refusals: [string, RawDataPrepFlags, RegExp][] = [
    ["no input", { inputData: undefined }, /missing -i\/--input-data/],
    ["missing input", { inputData: "/nonexistent/x" }, /does not exist: check -i\/--input-data/],
    ["no at-rest dir", { dataPathAtRest: undefined }, /missing --data-path-at-rest/],
    [
      "relative at-rest dir",
      { dataPathAtRest: "scratch/x" },
      /--data-path-at-rest: invalid remote directory/,
    ],
    ["climbing at-rest dir", { dataPathAtRest: "/scratch/../etc" }, /invalid remote directory/],
    ["bad artifact name", { dataPath: "a;b" }, /--data-path: invalid remote file name/],
    ["reserved artifact suffix", { dataPath: "x.part" }, /temporary or info file/],
    ["no nodes", { computeNodes: [] }, /no compute node given/],
    ["bad node", { computeNodes: ["nid;rm"] }, /-c\/--compute-nodes: invalid node name/],
    ["bad user", { users: ["../x"] }, /-u\/--users: invalid user name/],
    ["bad group", { groups: ["a b"] }, /-g\/--groups: invalid group name/],
    ["too long user", { users: ["a".repeat(300)] }, /invalid user name/],
    ["nobody to decrypt", { users: [], groups: [] }, /nobody would be able to decrypt/],
    ["bad username", { username: "Alice!" }, /--username: invalid user name/],
    ["output not a dir", { outputData: "/nonexistent" }, /-o\/--output-data .* is not a writable directory/],
  ];
  for (const [name, patch, re] of refusals) {
    it(`refuses ${name} with one line`, () => {
      assert.throws(
        () => dataPrepOptions({ ...base, ...patch }, dir),
        (err: Error) => err instanceof UsageError && re.test(err.message) && !err.message.includes("\n"),
      );
    });
  }

  it("refuses an unreadable input", function () {
    if (process.getuid?.() === 0) this.skip(); // root reads everything
    const locked = join(dir, "locked");
    mkdirSync(locked);
    chmodSync(locked, 0);
    assert.throws(() => dataPrepOptions({ ...base, inputData: locked }, dir), /not readable/);
  });
});
