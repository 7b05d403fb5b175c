import assert from "node:assert/strict";
import { chmod, mkdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { extract } from "tar";
import { tarDirectory } from "../../../../client/artifact/tar-stream.js";
import { makeRandomTree, snapshot, tempDir } from "./helpers.js";

describe("client/artifact/tar-stream", () => {
  let work: string;
  beforeEach(async () => {
    work = await tempDir("tar");
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("archives a directory that extracts to the same tree", async () => {
    const src = join(work, "src");
    const out = join(work, "out");
    await mkdir(src);
    await mkdir(out);
    await makeRandomTree(src);
    await pipeline(await tarDirectory(src), extract({ cwd: out }));
    assert.deepEqual(await snapshot(out), await snapshot(src));
  });

  it("keeps symlinks as links and never reads what they point to", async () => {
    const src = join(work, "src");
    const out = join(work, "out");
    await mkdir(src);
    await mkdir(out);
    await writeFile(join(work, "outside secret"), "must not be archived");
    await symlink(join(work, "outside secret"), join(src, "escape"));
    await symlink(work, join(src, "escape-dir"));
    await symlink("../outside secret", join(src, "relative-escape"));
    const names: string[] = [];
    const archive = await tarDirectory(src);
    // What the archive holds, as GNU tar on the node would see it: link entries with their targets.
    await pipeline(
      archive,
      extract({ cwd: out, onReadEntry: (e) => names.push(`${e.type} ${e.path} -> ${e.linkpath ?? ""}`) }),
    );
    assert.deepEqual(names.sort(), [
      "Directory ./ -> ",
      `SymbolicLink ./escape -> ${join(work, "outside secret")}`,
      `SymbolicLink ./escape-dir -> ${work}`,
      "SymbolicLink ./relative-escape -> ../outside secret",
    ]);
    // Nothing but links came out (node-tar's extract drops the leading "/" of absolute targets).
    for (const v of Object.values(await snapshot(out))) assert.match(v, /^link:/);
  });

  const oneLine = (re: RegExp) => (err: Error) => re.test(err.message) && !err.message.includes("\n");

  it("refuses a missing directory with one line, before any stream", async () => {
    await assert.rejects(
      tarDirectory(join(work, "nope")),
      oneLine(/^data directory ".*nope": does not exist$/),
    );
  });

  it("refuses a file with one line", async () => {
    await writeFile(join(work, "f"), "x");
    await assert.rejects(tarDirectory(join(work, "f")), oneLine(/^data directory ".*f": not a directory$/));
  });

  it("refuses an unreadable directory with one line", async function () {
    if (process.getuid?.() === 0) this.skip(); // root reads everything
    const dir = join(work, "locked");
    await mkdir(dir);
    await chmod(dir, 0o000);
    try {
      await assert.rejects(tarDirectory(dir), oneLine(/^data directory ".*locked": not readable/));
    } finally {
      await chmod(dir, 0o700);
    }
  });
});
