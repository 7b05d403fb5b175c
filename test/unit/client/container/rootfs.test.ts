import assert from "node:assert/strict";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { applyLayers, emptyRootfs, type Rootfs } from "../../../../client/container/rootfs.js";
import { manifestLines } from "../../../../client/container/rootfs-manifest.js";
import { writeLayer, type TarSpec } from "./tar-fixture.js";

describe("client/container/rootfs", () => {
  let tmp: string;
  let rootfs: Rootfs;
  const signal = new AbortController().signal;
  let n = 0;

  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), "rootfs-test-"));
    mkdirSync(join(tmp, "root"));
    rootfs = emptyRootfs(join(tmp, "root"));
  });
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));

  const apply = (...layers: TarSpec[][]): Promise<void> =>
    applyLayers(
      rootfs,
      layers.map((l) => writeLayer(tmp, `layer${n++}.tar`, l)),
      signal,
    );
  const at = (rel: string): string => join(rootfs.dir, rel);
  const tree = (): string[] => {
    const out: string[] = [];
    const walk = (rel: string): void => {
      for (const name of readdirSync(rel === "" ? rootfs.dir : at(rel)).sort()) {
        const key = rel === "" ? name : `${rel}/${name}`;
        out.push(key);
        if (lstatSync(at(key)).isDirectory()) walk(key);
      }
    };
    walk("");
    return out;
  };

  it("keeps files, directories, symlinks and hard links, with the image's metadata beside a private tree", async () => {
    await apply([
      { path: "./", mode: 0o755 },
      { path: "bin/", mode: 0o755 },
      { path: "bin/tool", data: "#!/bin/sh\necho hi\n", mode: 0o4755, uid: 0, gid: 0, mtime: 1_600_000_000 },
      { path: "bin/alias", type: "Link", linkpath: "bin/tool" },
      { path: "bin/sh", type: "SymbolicLink", linkpath: "tool" },
      { path: "home/app/", mode: 0o750, uid: 1000, gid: 1000 },
      { path: "home/app/notes", data: "x", mode: 0o600, uid: 1000, gid: 1000 },
      { path: "dev/null", type: "CharacterDevice", mode: 0o666, devmaj: 1, devmin: 3 },
    ]);
    assert.equal(readFileSync(at("bin/tool"), "utf8"), "#!/bin/sh\necho hi\n");
    assert.equal(lstatSync(at("bin/alias")).ino, lstatSync(at("bin/tool")).ino);
    assert.equal(readlinkSync(at("bin/sh")), "tool");
    // The tree on disk is private and never setuid; the image's modes and owners are metadata.
    assert.equal(lstatSync(at("bin/tool")).mode & 0o7777, 0o600);
    assert.equal(lstatSync(at("home/app")).mode & 0o7777, 0o700);
    assert.deepEqual(rootfs.attrs.get("bin/tool"), { mode: 0o4755, uid: 0, gid: 0, mtime: 1_600_000_000 });
    assert.deepEqual(rootfs.attrs.get("home/app"), {
      mode: 0o750,
      uid: 1000,
      gid: 1000,
      mtime: 1_700_000_000,
    });
    // An implied parent directory gets Docker's default.
    assert.deepEqual(rootfs.attrs.get("home"), { mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    assert.deepEqual(rootfs.specials.get("dev/null"), {
      kind: "char",
      major: 1,
      minor: 3,
      attrs: { mode: 0o666, uid: 0, gid: 0, mtime: 1_700_000_000 },
    });
    assert.equal(existsSync(at("dev/null")), false);
    const lines: string[] = [];
    for await (const l of manifestLines(rootfs)) lines.push(l);
    assert.ok(lines.includes('"/dev/null" c 0666 0:0 1700000000 1,3'), lines.join("\n"));
    assert.ok(lines.some((l) => l.startsWith('"/bin/tool" f 4755 0:0 1600000000 ')));
  });

  it("applies whiteouts to lower layers and never materializes them", async () => {
    await apply(
      [
        { path: "a/x", data: "1" },
        { path: "a/y", data: "2" },
        { path: "a/sub/z", data: "3" },
        { path: "dev/tty", type: "CharacterDevice", devmaj: 5, devmin: 0 },
      ],
      [
        { path: "a/.wh.x" },
        { path: "a/.wh.sub" },
        { path: "dev/.wh.tty" },
        { path: "a/.wh..wh.plnk/", type: "Directory" },
      ],
    );
    assert.deepEqual(tree(), ["a", "a/y", "dev"]);
    assert.equal(rootfs.specials.size, 0);
  });

  it("empties an opaque directory of the lower layers' entries but keeps this layer's, in any order", async () => {
    await apply(
      [
        { path: "d/old", data: "old" },
        { path: "d/keep/deep", data: "deep" },
        { path: "d/fifo", type: "FIFO" },
        { path: "other/stay", data: "s" },
      ],
      [
        { path: "d/", mode: 0o700 },
        { path: "d/before", data: "b" },
        { path: "d/keep/", mode: 0o755 },
        { path: "d/.wh..wh..opq" },
        { path: "d/after", data: "a" },
      ],
    );
    assert.deepEqual(tree(), ["d", "d/after", "d/before", "d/keep", "other", "other/stay"]);
    assert.equal(rootfs.specials.size, 0);
    assert.equal(rootfs.attrs.get("d")?.mode, 0o700);
  });

  it("replaces a file by a directory and a directory by a file, and merges directories", async () => {
    await apply(
      [
        { path: "p", data: "file" },
        { path: "q/inner", data: "i" },
        { path: "m/one", data: "1" },
      ],
      [
        { path: "p/", mode: 0o755 },
        { path: "p/child", data: "c" },
        { path: "q", data: "now a file" },
        { path: "m/two", data: "2" },
      ],
    );
    assert.deepEqual(tree(), ["m", "m/one", "m/two", "p", "p/child", "q"]);
    assert.equal(readFileSync(at("q"), "utf8"), "now a file");
  });

  it("resolves links in a path inside the root: an absolute link never leads out", async () => {
    const outside = join(tmp, "outside");
    mkdirSync(outside);
    await apply(
      [
        { path: "usr/lib/", mode: 0o755 },
        { path: "lib", type: "SymbolicLink", linkpath: "usr/lib" },
        { path: "escape", type: "SymbolicLink", linkpath: outside },
        { path: "up", type: "SymbolicLink", linkpath: "../../../.." },
      ],
      [
        { path: "lib/libx.so", data: "x" },
        { path: "escape/planted", data: "p" },
        { path: "up/etc-planted", data: "e" },
      ],
    );
    assert.equal(readFileSync(at("usr/lib/libx.so"), "utf8"), "x");
    assert.deepEqual(readdirSync(outside), [], "nothing written outside the root");
    assert.equal(readFileSync(at(`${outside.slice(1)}/planted`), "utf8"), "p");
    assert.equal(readFileSync(at("etc-planted"), "utf8"), "e");
    assert.ok(rootfs.attrs.has("usr/lib/libx.so"));
  });

  for (const [path, why] of [
    ["../evil", /'\.\.' in the path/],
    ["a/../../evil", /'\.\.' in the path/],
    ["/etc/passwd", /absolute path/],
    ["bad\nname", /newline/],
  ] as const) {
    it(`refuses an entry named ${JSON.stringify(path)} with one line naming the layer and entry`, async () => {
      await assert.rejects(
        apply([
          { path: "ok", data: "1" },
          { path, data: "x" },
        ]),
        (err: Error) => {
          assert.match(err.message, /^layer 1\/1 \(sha256:[0-9a-f]{12}\): entry /);
          assert.match(err.message, why);
          assert.doesNotMatch(err.message, /\n/);
          return true;
        },
      );
      assert.equal(existsSync(join(tmp, "evil")), false);
    });
  }

  it("refuses a hard link that points outside or at nothing", async () => {
    await assert.rejects(
      apply([{ path: "h", type: "Link", linkpath: "../../etc/passwd" }]),
      /'\.\.' in the path/,
    );
    await assert.rejects(apply([{ path: "h", type: "Link", linkpath: "missing" }]), /not an existing file/);
  });

  it("checks each layer against its diff_id and reads gzip layers", async () => {
    const good = writeLayer(tmp, "g.tar.gz", [{ path: "f", data: "gz" }], { gzip: true });
    await applyLayers(rootfs, [good], signal);
    assert.equal(readFileSync(at("f"), "utf8"), "gz");
    const bad = {
      ...writeLayer(tmp, "b.tar", [{ path: "g", data: "1" }]),
      diffId: `sha256:${"0".repeat(64)}`,
    };
    await assert.rejects(applyLayers(rootfs, [bad], signal), /does not match its diff_id/);
  });

  it("accepts an empty layer and refuses one that is not a tar", async () => {
    await apply([]);
    assert.deepEqual(tree(), []);
    const junk = join(tmp, "junk");
    (await import("node:fs")).writeFileSync(junk, Buffer.alloc(2048, 0x41));
    await assert.rejects(
      applyLayers(rootfs, [{ path: junk, diffId: `sha256:${"0".repeat(64)}` }], signal),
      /layer 1\/1/,
    );
  });
});
