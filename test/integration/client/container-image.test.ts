/**
 * The container building blocks on the real bench: a test image built by the real dockerd (FROM the
 * bench's busybox image, with an ENTRYPOINT, a CMD, a WORKDIR, a non-root-owned directory and a
 * whiteout), prepared from the daemon tag and from its `docker save` tar; the SIF read back by siftool
 * (an independent reader), its partition unpacked by unsquashfs and compared with the prepared tree,
 * and the wrapper run in that tree by runc (or crun) (test/support/oci-bundle.ts).
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import Dockerode from "dockerode";
import { create as tarCreate } from "tar";
import { prepareContainer, type PreparedContainer } from "../../../client/container/prepare-container.js";
import { manifestLines } from "../../../client/container/rootfs-manifest.js";
import { runOk } from "../../support/exec.js";
import { dumpSifObject, OciBundle } from "../../support/oci-bundle.js";
import { nonce } from "../../support/spire.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

const APP_SCRIPT = `#!/bin/sh
for a in "$@"; do printf '[%s]\\n' "$a"; done
printf 'pwd=%s\\n' "$(pwd)"
printf 'greeting=%s\\n' "$GREETING"
echo "to stderr: $#" >&2
exit 7
`;

const DOCKERFILE = `ARG BASE
FROM \${BASE}
COPY --chown=1000:1000 app /app
RUN rm /bin/false && mkdir -p /data/keep && echo kept >/data/keep/f
WORKDIR /app
ENV GREETING="hello world" QUOTE="it's"
ENTRYPOINT ["/bin/sh", "/app/run.sh", "entrypoint arg"]
CMD ["default cmd"]
`;

async function lines(source: Parameters<typeof manifestLines>[0]): Promise<string[]> {
  const out: string[] = [];
  for await (const l of manifestLines(source)) out.push(l);
  return out;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  await pipeline((await import("node:fs")).createReadStream(path), h);
  return h.digest("hex");
}

describe("client/container on the real bench (dockerd, mksquashfs, siftool, runc)", function () {
  this.timeout(300_000);
  const n = nonce();
  const tag = `hpcs-test/container-prep:${n}`.toLowerCase();
  const signal = new AbortController().signal;
  let env: StackEnv;
  let docker: Dockerode;
  let tmp: string;
  let work: string;
  let fromTag: PreparedContainer | undefined;
  let fromTar: PreparedContainer | undefined;
  let bundle: OciBundle | undefined;

  before(async () => {
    env = loadStackEnv();
    docker = new Dockerode({ socketPath: env.docker.socket });
    tmp = await mkdtemp(join(tmpdir(), "ctr-it-"));
    work = join(tmp, "work");
    await mkdir(work);
    const ctx = join(tmp, "context");
    await mkdir(join(ctx, "app"), { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), DOCKERFILE);
    await writeFile(join(ctx, "app", "run.sh"), APP_SCRIPT);
    await chmod(join(ctx, "app", "run.sh"), 0o755);
    const context = Readable.from(tarCreate({ cwd: ctx, portable: true }, ["."]));
    const progress = await docker.buildImage(context, { t: tag, buildargs: { BASE: env.docker.test_image } });
    const out = await new Promise<{ error?: string }[]>((resolve, reject) =>
      docker.modem.followProgress(progress, (err: Error | null, res: { error?: string }[]) =>
        err ? reject(err) : resolve(res),
      ),
    );
    const failed = out.find((o) => o.error);
    if (failed) throw new Error(`docker build failed: ${failed.error}`);
  });

  after(async () => {
    await fromTag?.cleanup();
    await fromTar?.cleanup();
    await docker
      ?.getImage(tag)
      .remove({ force: true })
      .catch(() => undefined);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("prepares the same root filesystem from the daemon tag and from a docker save tar", async () => {
    fromTag = await prepareContainer({
      source: { tag },
      docker: env.docker.socket,
      workDir: work,
      signal,
      digest: true,
      keepRootfs: true,
    });
    const savePath = join(tmp, "image.tar");
    await pipeline((await docker.getImage(tag).get()) as Readable, createWriteStream(savePath));
    fromTar = await prepareContainer({
      source: { tarPath: savePath },
      workDir: work,
      signal,
      digest: true,
      keepRootfs: true,
    });

    assert.ok(fromTag.rootfs && fromTar.rootfs);
    const a = await lines(fromTag.rootfs);
    assert.deepEqual(await lines(fromTar.rootfs), a);
    assert.equal(fromTar.rootfsDigest, fromTag.rootfsDigest);
    assert.match(fromTag.rootfsDigest ?? "", /^sha256:[0-9a-f]{64}$/);

    const find = (p: string): string | undefined => a.find((l) => l.startsWith(`${JSON.stringify(p)} `));
    assert.match(find("/app") ?? "", / d 0755 1000:1000 /);
    assert.match(find("/app/run.sh") ?? "", / f 0755 1000:1000 /);
    assert.equal(find("/bin/false"), undefined, "the RUN rm whiteout was applied");
    assert.match(find("/data/keep/f") ?? "", / f 0644 0:0 /);
    assert.match(find("/sd-container/tools/entrypoint") ?? "", / f 0755 0:0 /);
    for (const d of [
      "input",
      "output",
      "scratch",
      "keys",
      "encrypted",
      "tools/input_logic/jobs",
      "tools/output_logic/jobs",
    ]) {
      assert.ok(find(`/sd-container/${d}`)?.includes(" d "), d);
    }
    const cfg = JSON.parse(
      await readFile(join(fromTag.rootfs.dir, "sd-container/image-config.json"), "utf8"),
    );
    assert.deepEqual(cfg.entrypoint, ["/bin/sh", "/app/run.sh", "entrypoint arg"]);
    assert.deepEqual(cfg.cmd, ["default cmd"]);
    assert.equal(cfg.workingDir, "/app");
    assert.ok(cfg.env.includes("GREETING=hello world"));

    // Same tree, same creation time: the squashfs partitions are byte-identical.
    const parts = [];
    for (const p of [fromTag, fromTar]) {
      const out = join(tmp, `part-${parts.length}.sqfs`);
      await dumpSifObject(env, p.sifPath, 2, out);
      parts.push(await sha256File(out));
    }
    assert.equal(parts[0], parts[1]);
  });

  it("writes a SIF that siftool reads, whose partition unsquashes to the prepared tree", async () => {
    assert.ok(fromTag?.rootfs);
    const list = await runOk(env.tools.siftool, ["list", fromTag.sifPath]);
    assert.match(list, /1\s+\|1\s+\|NONE\s+\|32176-\d+\s+\|Def\.FILE/);
    assert.match(list, /2\s+\|1\s+\|NONE\s+\|\d+-\d+\s+\|FS \(Squashfs\/\*System\/amd64\)/);
    const info = await runOk(env.tools.siftool, ["info", "2", fromTag.sifPath]);
    assert.match(info, /Filesystem Type:\s+Squashfs/);
    assert.match(info, /Partition Type:\s+\*System/);
    const header = await runOk(env.tools.siftool, ["header", fromTag.sifPath]);
    assert.match(header, /Launch Script:\s+#!\/usr\/bin\/env run-singularity/);
    assert.match(header, /Primary Architecture:\s+amd64/);
    const deffile = await runOk(env.tools.siftool, ["dump", "1", fromTag.sifPath]);
    assert.match(deffile, /exec \/sd-container\/tools\/entrypoint "\$@"/);

    bundle = await OciBundle.fromSif(env, fromTag.sifPath, join(tmp, "bundle"));
    assert.deepEqual(await lines({ dir: bundle.rootfs }), await lines(fromTag.rootfs));
  });

  it("runs the wrapper in the unpacked tree with runc: arguments intact, outputs where it says", async () => {
    assert.ok(
      bundle && existsSync(join(bundle.rootfs, "sd-container", "tools", "entrypoint")),
      "previous test unpacked it",
    );
    const output = join(tmp, "output");
    const jobs = join(tmp, "input-jobs");
    await mkdir(output);
    await mkdir(jobs);
    await writeFile(
      join(jobs, "10-mark"),
      "#!/bin/sh\necho input-job-ran >/sd-container/output/input-job\n",
      {
        mode: 0o755,
      },
    );
    const cfg = JSON.parse(await readFile(join(bundle.rootfs, "sd-container/image-config.json"), "utf8"));
    const args = ["arg with spaces", `it's "quoted"`, "", "$HOME;`id`\nsecond line", "*"];
    const r = await bundle.run({
      id: `hpcs-ctr-${n}`.toLowerCase(),
      args: [cfg.wrapper, ...args],
      env: cfg.env,
      cwd: "/",
      mounts: [
        { destination: "/sd-container/output", source: output },
        { destination: "/sd-container/tools/input_logic/jobs", source: jobs, readonly: true },
      ],
    });
    assert.equal(r.code, 7, `${bundle.runtime} run: ${r.stderr}`);
    const stdout = await readFile(join(output, "stdout.log"), "utf8");
    assert.equal(
      stdout,
      ["[entrypoint arg]", ...args.map((a) => `[${a}]`), "pwd=/app", "greeting=hello world", ""].join("\n"),
    );
    assert.equal(await readFile(join(output, "stderr.log"), "utf8"), "to stderr: 6\n");
    assert.equal(await readFile(join(output, "exit_code"), "utf8"), "7\n");
    assert.equal(await readFile(join(output, "input-job"), "utf8"), "input-job-ran\n");
  });

  describe("bad input: one clear line, nothing left in the work directory", () => {
    const cases: [string, () => Parameters<typeof prepareContainer>[0], RegExp][] = [
      [
        "an unknown image tag",
        () => ({
          source: { tag: `hpcs-test/no-such-image:${n}`.toLowerCase() },
          docker: env.docker.socket,
          workDir: work,
          signal,
        }),
        /^image "hpcs-test\/no-such-image:[^"]+" is not in the local Docker daemon: build or pull it first, or pass a `docker save` tar$/,
      ],
      [
        "no docker socket when a tag is given",
        () => ({ source: { tag }, docker: join(tmp, "no", "docker.sock"), workDir: work, signal }),
        /^cannot reach the Docker daemon at .*docker\.sock \(ENOENT\): start Docker or mount its socket/,
      ],
      [
        "a garbage tar",
        () => ({ source: { tarPath: join(tmp, "garbage.tar") }, workDir: work, signal }),
        /^image archive ".*garbage\.tar" is not a readable tar archive/,
      ],
      [
        "an unreadable tar path",
        () => ({ source: { tarPath: join(tmp, "missing.tar") }, workDir: work, signal }),
        /^image archive ".*missing\.tar": no such file or directory$/,
      ],
    ];
    for (const [what, opts, why] of cases) {
      it(what, async () => {
        await writeFile(join(tmp, "garbage.tar"), Buffer.alloc(10_000, 0x33));
        const before = (await readdir(work)).sort();
        await assert.rejects(prepareContainer(opts()), (err: Error) => {
          assert.match(err.message, why);
          assert.doesNotMatch(err.message, /\n/);
          return true;
        });
        assert.deepEqual((await readdir(work)).sort(), before);
      });
    }
  });
});
