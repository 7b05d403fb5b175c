import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdir, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { extract } from "tar";
import { findGnuTar } from "../../../../client/artifact/gnu-tar.js";
import { tarDirectory, type TarTool } from "../../../../client/artifact/tar-stream.js";
import { makeRandomTree, snapshot, tempDir } from "./helpers.js";

// Both tools must write archives that extract to the same tree, the way the node extracts them.
for (const tool of ["gnu", "builtin"] as const) describeTar(tool);

function describeTar(tool: TarTool): void {
  describe(`client/artifact/tar-stream (${tool})`, () => {
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
      await pipeline(await tarDirectory(src, tool), extract({ cwd: out }));
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
      const archive = await tarDirectory(src, tool);
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
        tarDirectory(join(work, "nope"), tool),
        oneLine(/^data directory ".*nope": does not exist$/),
      );
    });

    it("refuses a file with one line", async () => {
      await writeFile(join(work, "f"), "x");
      await assert.rejects(
        tarDirectory(join(work, "f"), tool),
        oneLine(/^data directory ".*f": not a directory$/),
      );
    });

    it("refuses an unreadable directory with one line", async function () {
      if (process.getuid?.() === 0) this.skip(); // root reads everything
      const dir = join(work, "locked");
      await mkdir(dir);
      await chmod(dir, 0o000);
      try {
        await assert.rejects(tarDirectory(dir, tool), oneLine(/^data directory ".*locked": not readable/));
      } finally {
        await chmod(dir, 0o700);
      }
    });
  });
}

describe("client/artifact/gnu-tar", () => {
  let work: string;
  beforeEach(async () => {
    work = await tempDir("gnutar");
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("finds the bench's GNU tar and refuses a command that is not GNU tar", async () => {
    assert.match((await findGnuTar()) ?? "", /^\d+\.\d+$/);
    assert.equal(await findGnuTar("/bin/true"), undefined);
    assert.equal(await findGnuTar(join(work, "no-such-tar")), undefined);
  });

  it("without GNU tar on PATH: 'gnu' is refused in one line, 'auto' falls back to the builtin tar", async () => {
    const src = join(work, "src");
    await mkdir(src);
    await writeFile(join(src, "a"), "x");
    const path = process.env.PATH;
    process.env.PATH = work; // a directory with no tar in it
    try {
      await assert.rejects(
        tarDirectory(src, "gnu"),
        (err: Error) =>
          /^GNU tar 1\.28 or later is not on PATH: install it/.test(err.message) &&
          !err.message.includes("\n"),
      );
      const out = join(work, "out");
      await mkdir(out);
      await pipeline(await tarDirectory(src, "auto"), extract({ cwd: out }));
      assert.deepEqual(await snapshot(out), await snapshot(src));
    } finally {
      process.env.PATH = path;
    }
  });

  it("writes GNU tar's archive with relative names, numeric owner 0 and modes kept", async () => {
    const src = join(work, "src");
    await mkdir(join(src, "sub"), { recursive: true });
    await writeFile(join(src, "sub", "run.sh"), "#!/bin/sh\n", { mode: 0o750 });
    const out = join(work, "out");
    await mkdir(out);
    const listing: string[] = [];
    await pipeline(
      await tarDirectory(src, "gnu"),
      extract({ cwd: out, onReadEntry: (e) => listing.push(`${e.path} ${e.uid ?? "-"} ${e.uname || "-"}`) }),
    );
    assert.deepEqual(listing.sort(), ["./ 0 -", "./sub/ 0 -", "./sub/run.sh 0 -"]);
    assert.equal((await lstat(join(out, "sub", "run.sh"))).mode & 0o777, 0o750);
  });

  it("fails the stream, never ends it, when a file shrinks while tar reads it", async () => {
    const src = join(work, "src");
    await mkdir(src);
    const big = join(src, "big.bin");
    await writeFile(big, randomBytes(32 * 1024 * 1024));
    const archive = await tarDirectory(src, "gnu");
    const iterator = archive[Symbol.asyncIterator]();
    // tar is now inside big.bin, held back by the pipe (nothing is read until the next call).
    await iterator.next();
    await truncate(big, 1024);
    await assert.rejects(
      (async () => {
        for (;;) if ((await iterator.next()).done) return;
      })(),
      (err: Error) =>
        /^tar of ".*src" failed: .*big\.bin: File shrank/.test(err.message) && !err.message.includes("\n"),
    );
  });

  it("kills tar when the stream is destroyed", async () => {
    const src = join(work, "src");
    await mkdir(src);
    await writeFile(join(src, "big.bin"), randomBytes(16 * 1024 * 1024));
    const archive = await tarDirectory(src, "gnu");
    await archive[Symbol.asyncIterator]().next();
    assert.ok(
      await processesWithArgument(`--directory=${src}`),
      "tar should be running, blocked on the pipe",
    );
    archive.destroy();
    // Nothing holds the directory: no tar left reading it.
    await waitUntil(async () => !(await processesWithArgument(`--directory=${src}`)));
  });
});

async function processesWithArgument(arg: string): Promise<boolean> {
  const out = await new Promise<string>((resolve) => {
    let text = "";
    const ps = spawn("ps", ["-ww", "-eo", "args"], { stdio: ["ignore", "pipe", "ignore"] });
    ps.stdout.on("data", (c: Buffer) => (text += c.toString()));
    ps.on("close", () => resolve(text));
  });
  return out.split("\n").some((line) => line.includes(arg));
}

/** Polls `check` for up to 20 s: generous, since a loaded machine delays process exit. */
async function waitUntil(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail("condition not reached within 20 s");
}
