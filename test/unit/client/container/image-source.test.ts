/** Image archives on disk (no daemon): `docker save` and OCI layouts made by hand, good and bad. */

import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { openImage } from "../../../../client/container/image-source.js";
import { applyLayers, emptyRootfs } from "../../../../client/container/rootfs.js";
import { sha256Hex, tarBytes } from "./tar-fixture.js";

const signal = new AbortController().signal;

function config(diffIds: string[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: "amd64",
      os: "linux",
      created: "2026-01-02T03:04:05Z",
      config: {
        Entrypoint: ["/bin/app", "--flag"],
        Cmd: ["default arg"],
        Env: ["PATH=/bin", "A=b c"],
        WorkingDir: "/work",
        User: "1000:1000",
        Labels: { "org.example": "x" },
      },
      rootfs: { type: "layers", diff_ids: diffIds },
      ...extra,
    }),
  );
}

const LAYER1 = tarBytes([{ path: "bin/app", data: "one", mode: 0o755 }]);
const LAYER2 = tarBytes([{ path: "bin/.wh.app" }, { path: "etc/two", data: "two" }]);
const DIFF_IDS = [LAYER1, LAYER2].map((l) => `sha256:${sha256Hex(l)}`);

/** A `docker save` archive (Docker < 25): <id>.json, <layer>/layer.tar, manifest.json last. */
function dockerSave(opts: { configOverride?: Buffer; tags?: string[][] } = {}): Buffer {
  const cfg = opts.configOverride ?? config(DIFF_IDS);
  const cfgName = `${sha256Hex(cfg)}.json`;
  const images = opts.tags ?? [["example/app:1"]];
  return tarBytes([
    { path: "aaa/", type: "Directory" },
    { path: "aaa/layer.tar", data: LAYER1 },
    { path: "bbb/", type: "Directory" },
    { path: "bbb/layer.tar", data: LAYER2 },
    // The same layer twice: docker save links the second copy to the first.
    { path: "ccc/", type: "Directory" },
    { path: "ccc/layer.tar", type: "SymbolicLink", linkpath: "../aaa/layer.tar" },
    { path: cfgName, data: cfg },
    {
      path: "manifest.json",
      data: JSON.stringify(
        images.map((tags) => ({
          Config: cfgName,
          RepoTags: tags,
          Layers: ["ccc/layer.tar", "bbb/layer.tar"],
        })),
      ),
    },
  ]);
}

/** An OCI image layout with a gzip layer and a nested index. */
function ociLayout(opts: { corruptBlob?: boolean } = {}): Buffer {
  const gz1 = gzipSync(LAYER1);
  const cfg = config(DIFF_IDS);
  const desc = (mediaType: string, b: Buffer): { mediaType: string; digest: string; size: number } => ({
    mediaType,
    digest: `sha256:${sha256Hex(b)}`,
    size: b.length,
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: desc("application/vnd.oci.image.config.v1+json", cfg),
      layers: [
        desc("application/vnd.oci.image.layer.v1.tar+gzip", gz1),
        desc("application/vnd.oci.image.layer.v1.tar", LAYER2),
      ],
    }),
  );
  const nested = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [
        {
          ...desc("application/vnd.oci.image.manifest.v1+json", manifest),
          platform: { os: "linux", architecture: "amd64" },
        },
        {
          ...desc("application/vnd.oci.image.manifest.v1+json", Buffer.from("{}")),
          platform: { os: "linux", architecture: "s390x" },
        },
      ],
    }),
  );
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        ...desc("application/vnd.oci.image.index.v1+json", nested),
        annotations: { "org.opencontainers.image.ref.name": "1" },
      },
    ],
  };
  const blob = (b: Buffer): { path: string; data: Buffer } => ({
    path: `blobs/sha256/${sha256Hex(b)}`,
    data: b,
  });
  return tarBytes([
    { path: "oci-layout", data: '{"imageLayoutVersion":"1.0.0"}' },
    blob(gz1),
    { ...blob(LAYER2), ...(opts.corruptBlob ? { data: Buffer.concat([LAYER2, Buffer.from("x")]) } : {}) },
    blob(cfg),
    blob(manifest),
    blob(nested),
    { path: "index.json", data: JSON.stringify(index) },
  ]);
}

describe("client/container/image-source (archives)", () => {
  let tmp: string;
  let work: string;
  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), "image-source-test-"));
    work = join(tmp, "work");
    mkdirSync(work);
  });
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));

  const file = (name: string, data: Buffer): string => {
    writeFileSync(join(tmp, name), data);
    return join(tmp, name);
  };

  async function flattened(tarPath: string, tag?: string): Promise<string[]> {
    const image = await openImage(tag ? { tarPath, tag } : { tarPath }, { workDir: work, signal });
    try {
      assert.deepEqual(image.config.entrypoint, ["/bin/app", "--flag"]);
      assert.deepEqual(image.config.cmd, ["default arg"]);
      assert.deepEqual(image.config.env, ["PATH=/bin", "A=b c"]);
      assert.equal(image.config.workingDir, "/work");
      assert.equal(image.config.user, "1000:1000");
      assert.equal(image.config.created?.toISOString(), "2026-01-02T03:04:05.000Z");
      assert.deepEqual(
        image.layers.map((l) => l.diffId),
        DIFF_IDS,
      );
      const root = join(tmp, "root");
      mkdirSync(root);
      await applyLayers(emptyRootfs(root), image.layers, signal);
      return readdirSync(root, { recursive: true }).map(String).sort();
    } finally {
      await image.dispose();
      assert.deepEqual(readdirSync(work), [], "dispose() removes the layer store");
    }
  }

  it("opens a docker save archive: config, layer order, linked duplicate layers", async () => {
    assert.deepEqual(await flattened(file("save.tar", dockerSave())), ["bin", "etc", "etc/two"]);
  });

  it("opens an OCI layout: nested index, platform choice, gzip layer", async () => {
    assert.deepEqual(await flattened(file("oci.tar", ociLayout()), "example/app:1"), [
      "bin",
      "etc",
      "etc/two",
    ]);
  });

  it("selects an image by tag in a multi-image archive, and asks for one otherwise", async () => {
    const multi = file("multi.tar", dockerSave({ tags: [["a:1"], ["b:2", "b:latest"]] }));
    assert.deepEqual(await flattened(multi, "b"), ["bin", "etc", "etc/two"]);
    await assert.rejects(
      openImage({ tarPath: multi }, { workDir: work, signal }),
      /holds 2 images \(a:1, b:2, b:latest\)/,
    );
    await assert.rejects(
      openImage({ tarPath: multi, tag: "c:3" }, { workDir: work, signal }),
      /has no image tagged "c:3"/,
    );
  });

  const bad: [string, () => Buffer | undefined, RegExp][] = [
    [
      "garbage",
      () => Buffer.alloc(4096, 0x5a),
      /is not a readable tar archive .*: pass a `docker save` or OCI layout tar/,
    ],
    ["truncated", () => dockerSave().subarray(0, 2000), /is not a readable tar archive \(.*Truncated/],
    ["empty", () => Buffer.alloc(0), /neither a `docker save` archive nor an OCI image layout/],
    [
      "a tar of something else",
      () => tarBytes([{ path: "hello.txt", data: "hi" }]),
      /neither a `docker save`/,
    ],
    [
      "a corrupt blob",
      () => ociLayout({ corruptBlob: true }),
      /does not match its digest: the archive is corrupt/,
    ],
    [
      "a config that does not match its layers",
      () => dockerSave({ configOverride: config([DIFF_IDS[0] as string]) }),
      /config lists 1 layer digests but the manifest 2 layers/,
    ],
    [
      "an entry escaping the archive",
      () => tarBytes([{ path: "../x", data: "x" }]),
      /points outside the archive/,
    ],
    ["a missing file", () => undefined, /image archive ".*missing.tar": no such file or directory/],
  ];
  for (const [what, bytes, why] of bad) {
    it(`refuses ${what} with one line and leaves nothing behind`, async () => {
      const b = bytes();
      const path = b ? file("bad.tar", b) : join(tmp, "missing.tar");
      await assert.rejects(openImage({ tarPath: path }, { workDir: work, signal }), (err: Error) => {
        assert.match(err.message, why);
        assert.doesNotMatch(err.message, /\n/);
        return true;
      });
      assert.deepEqual(readdirSync(work), []);
    });
  }

  it("refuses a directory, a bad tag and a missing work directory before creating anything", async () => {
    await assert.rejects(openImage({ tarPath: tmp }, { workDir: work, signal }), /not a regular file/);
    await assert.rejects(
      openImage({ tarPath: file("s.tar", dockerSave()), tag: "Bad Tag" }, { workDir: work, signal }),
      /not a Docker image reference/,
    );
    await assert.rejects(
      openImage({ tarPath: file("s2.tar", dockerSave()) }, { workDir: join(tmp, "nope"), signal }),
      /work directory ".*nope": no such file or directory/,
    );
    assert.deepEqual(readdirSync(work), []);
  });

  it("stops when aborted", async () => {
    const ac = new AbortController();
    ac.abort(new Error("interrupted"));
    await assert.rejects(
      openImage({ tarPath: file("s.tar", dockerSave()) }, { workDir: work, signal: ac.signal }),
      /interrupted/,
    );
    assert.deepEqual(readdirSync(work), []);
    assert.ok(readFileSync(join(tmp, "s.tar")).length > 0);
  });
});
