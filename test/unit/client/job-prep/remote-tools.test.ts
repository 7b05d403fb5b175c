import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveLocalTool, sha256File } from "../../../../client/job-prep/remote-tools.js";

describe("client/job-prep/remote-tools (local side)", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "remote-tools-"));
    await writeFile(join(dir, "gocryptfs"), "#!/bin/sh\n");
    await chmod(join(dir, "gocryptfs"), 0o755);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("finds a bare name on PATH (absolute entries only) and takes a path as it is", async () => {
    const spec = { name: "gocryptfs", local: "gocryptfs", source: "test" };
    assert.equal(await resolveLocalTool(spec, `relative:${dir}`), join(dir, "gocryptfs"));
    const byPath = { ...spec, local: join(dir, "gocryptfs") };
    assert.equal(await resolveLocalTool(byPath, ""), join(dir, "gocryptfs"));
  });

  it("says where the tool was expected, in one line", async () => {
    await assert.rejects(
      resolveLocalTool(
        { name: "spire-agent", local: "spire-agent", source: "[spire-server] agent-bin" },
        dir,
      ),
      /^Error: spire-agent not found on PATH \(\[spire-server\] agent-bin\): install it here/,
    );
    await assert.rejects(
      resolveLocalTool(
        { name: "spire-agent", local: join(dir, "nope"), source: "[spire-server] agent-bin" },
        "",
      ),
      /spire-agent not found at .*nope \(\[spire-server\] agent-bin\): fix the path/,
    );
  });

  it("hashes the file it would ship", async () => {
    assert.equal(
      await sha256File(join(dir, "gocryptfs")),
      createHash("sha256").update("#!/bin/sh\n").digest("hex"),
    );
  });
});
