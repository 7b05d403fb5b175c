import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { run, runOk, type RunResult } from "../../support/exec.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

// The repository root (this file runs as <out>/test/integration/client/image.test.js).
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const IMAGE = "hpcs/client:bench";
const BASE = "hpcs-bench/node:20";
const LABEL = "org.hpcs.test=client-image";
const PROJECT = "hpcs-client-image-test";
const COMPOSE = ["-f", join(ROOT, "compose/docker-compose.yml")];
const COMPOSE_BENCH = [...COMPOSE, "-f", join(ROOT, "compose/docker-compose.bench.yml")];

interface ComposeService {
  image: string;
  command: string[];
  user?: string;
  network_mode?: string;
  volumes: string[];
  build: { context: string; dockerfile: string; args: Record<string, string> };
}

describe("client image (client/Dockerfile, compose/)", function () {
  // A cold build (debootstrap, npm ci, tsc) takes minutes; a warm one seconds.
  this.timeout(600_000);
  let env: StackEnv;
  let work: string;
  let dockerEnv: NodeJS.ProcessEnv;
  const docker = (args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> =>
    run("docker", args, { env: dockerEnv, timeoutMs: opts.timeoutMs ?? 120_000 });
  // Every container this file starts carries LABEL, so after() can remove one a failure left behind.
  const runIn = (args: string[]): Promise<RunResult> =>
    docker(["run", "--rm", "--label", LABEL, "--network", "none", ...args]);
  const compose = (files: string[], args: string[]): Promise<RunResult> =>
    run("docker-compose", [...files, "-p", PROJECT, ...args], {
      cwd: work,
      timeoutMs: 120_000,
      env: { ...dockerEnv, PWD: work, HOME: work, HPCS_CLIENT_IMAGE: IMAGE },
    });

  before(async function () {
    env = loadStackEnv();
    dockerEnv = { ...process.env, DOCKER_HOST: `unix://${env.docker.socket}` };
    work = mkdtempSync(join(tmpdir(), "hpcs-image-"));
    mkdirSync(join(work, "workdir"));
    mkdirSync(join(work, ".ssh"));
    const t0 = Date.now();
    await runOk("bash", [join(ROOT, "stack/base-image.sh")], { env: dockerEnv, timeoutMs: 600_000 });
    const t1 = Date.now();
    await runOk("bash", [join(ROOT, "compose/build-image.sh"), "-t", IMAGE, "--base", BASE], {
      env: dockerEnv,
      timeoutMs: 600_000,
    });
    const size = (
      await runOk("docker", ["image", "inspect", "-f", "{{ .Size }}", IMAGE], { env: dockerEnv })
    ).trim();
    console.log(
      `      base image ${((t1 - t0) / 1000).toFixed(1)} s, client image ${((Date.now() - t1) / 1000).toFixed(1)} s, ` +
        `${(Number(size) / 1e6).toFixed(0)} MB`,
    );
  });

  after(async function () {
    if (dockerEnv) {
      const left = (await docker(["ps", "-aq", "--filter", `label=${LABEL}`])).stdout
        .split("\n")
        .filter(Boolean);
      if (left.length > 0) await docker(["rm", "-f", ...left]);
      await compose(COMPOSE_BENCH, ["down", "--remove-orphans"]);
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("runs the CLI as its entry point (--help lists data-prep)", async function () {
    const has = await runIn(["--entrypoint", "test", IMAGE, "-f", "/opt/hpcs/dist/client/cli.js"]);
    if (has.code !== 0) {
      // TODO(issue 4): remove once client/cli.ts is in the tree; the image is useless without it.
      console.log(
        "      skipped: the image has no /opt/hpcs/dist/client/cli.js (client/cli.ts not written yet)",
      );
      this.skip();
    }
    const r = await runIn([IMAGE, "--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /data-prep/);
  });

  it("has GnuPG and spire-agent", async () => {
    const gpg = await runIn(["--entrypoint", "gpg", IMAGE, "--version"]);
    assert.equal(gpg.code, 0, gpg.stderr);
    assert.match(gpg.stdout, /^gpg \(GnuPG\) 2\.\d+/);
    const agent = await runIn(["--entrypoint", "spire-agent", IMAGE, "--version"]);
    assert.equal(agent.code, 0, agent.stderr);
    // spire-agent prints its version on stderr.
    assert.match(agent.stdout + agent.stderr, /^\d+\.\d+\.\d+/);
  });

  it("runs as a non-root user with HOME=/tmp, and a run-time uid works too", async () => {
    const r = await runIn(["--entrypoint", "sh", IMAGE, "-c", 'echo "$(id -u) $(id -g) $HOME"']);
    assert.equal(r.code, 0, r.stderr);
    const [uid, gid, home] = r.stdout.trim().split(" ");
    assert.notEqual(uid, "0");
    assert.notEqual(gid, "0");
    assert.equal(home, "/tmp");
    // compose's `user: $HPCS_UID:$HPCS_GID` picks an arbitrary uid: the tools must still start.
    const other = await runIn([
      "--user",
      "4242:4242",
      "--entrypoint",
      "sh",
      IMAGE,
      "-c",
      "id -u && gpg --version",
    ]);
    assert.equal(other.code, 0, other.stderr);
    assert.match(other.stdout, /^4242\n/);
  });

  it("has the compiled client, production dependencies only, and the proto files", async () => {
    const r = await runIn([
      "--entrypoint",
      "sh",
      IMAGE,
      "-c",
      "cd /opt/hpcs && ls dist proto && ls node_modules/commander/package.json && " +
        "for p in typescript mocha eslint prettier @eslint @typescript-eslint @types/mocha; do " +
        '[ -e "node_modules/$p" ] && echo "dev dependency: $p"; done; true',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^client$/m);
    assert.match(r.stdout, /^lib$/m);
    assert.doesNotMatch(r.stdout, /^test$/m);
    assert.match(r.stdout, /^hpcs$/m);
    assert.match(r.stdout, /^spiffe$/m);
    assert.match(r.stdout, /^node_modules\/commander\/package\.json$/m);
    assert.doesNotMatch(r.stdout, /dev dependency/);
  });

  it("docker-compose validates the compose file, alone and with the bench override", async () => {
    const plain = await compose(COMPOSE, ["config"]);
    assert.equal(plain.code, 0, plain.stderr);
    const services = (parse(plain.stdout) as { services: Record<string, ComposeService> }).services;
    assert.deepEqual(Object.keys(services).sort(), ["container-prep", "data-prep", "job-prep"]);
    const dp = services["data-prep"];
    assert.ok(dp);
    assert.equal(dp.image, IMAGE);
    assert.deepEqual(dp.command.slice(0, 3), ["data-prep", "--config", "/tmp/hpcs-client.conf"]);
    assert.ok(dp.volumes.includes(`${join(work, "workdir")}:/tmp:rw`), dp.volumes.join(", "));
    assert.ok(dp.volumes.includes(`${join(work, ".ssh")}:/tmp/.ssh:ro`), dp.volumes.join(", "));
    assert.equal(dp.build.dockerfile, "client/Dockerfile");
    assert.equal(dp.build.args.BASE, "node:20-bookworm-slim");
    assert.equal(dp.network_mode, undefined);

    const bench = await compose(COMPOSE_BENCH, ["config"]);
    assert.equal(bench.code, 0, bench.stderr);
    const b = (parse(bench.stdout) as { services: Record<string, ComposeService> }).services;
    for (const name of ["data-prep", "container-prep", "job-prep"]) {
      assert.equal(b[name]?.network_mode, "host", name);
      assert.equal(b[name]?.build.args.BASE, BASE, name);
    }
  });

  it("`docker-compose run --rm data-prep --help` runs the image as the compose file says", async function () {
    const has = await runIn(["--entrypoint", "test", IMAGE, "-f", "/opt/hpcs/dist/client/cli.js"]);
    if (has.code !== 0) {
      // TODO(issue 4): remove once client/cli.ts is in the tree.
      console.log(
        "      skipped: the image has no /opt/hpcs/dist/client/cli.js (client/cli.ts not written yet)",
      );
      this.skip();
    }
    const r = await compose(COMPOSE_BENCH, [
      "run",
      "--rm",
      "-T",
      "-l",
      LABEL,
      "data-prep",
      "data-prep",
      "--help",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /--data-path-at-rest/);
    const left = await docker(["ps", "-aq", "--filter", `label=com.docker.compose.project=${PROJECT}`]);
    assert.equal(left.stdout.trim(), "", "run --rm left a container behind");
  });
});
