/**
 * `npm run demo`: the whole story on the local bench, from a fresh clone.
 *
 *   1. the bench up (stack/stack.sh: SPIRE, Vault, sshd, Slurm + MUNGE, Docker), the hpcs server
 *      bootstrapped as an operator would (its SPIFFE ID, Vault policy and role; MUNGE node attestation);
 *   2. a researcher's machine: a client config and an enrollment secret from the operator;
 *   3. data-prep of demo/sample-data and container-prep of demo/app (built locally) for alice on node vm;
 *   4. job-prep as alice on the local Slurm: attestation, keys, gocryptfs, the app, encrypted results;
 *   5. the results fetched and decrypted on the researcher's side, printed; then where everything is.
 *
 * The server is started through test/support/hpcs-server.ts: the same bootstrap the tests use, so the
 * demo and the tests cannot drift apart. It is stopped (its entries, policies and roles removed) at the
 * end; the artifacts, the job's files and the results stay for inspection.
 */

import { spawn } from "node:child_process";
import { cp, mkdir, readFile, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CLIENT_CLI, HpcsClientHome } from "../test/support/hpcs-client.js";
import { HpcsServerProcess } from "../test/support/hpcs-server.js";
import { loadStackEnv, sshUser } from "../test/support/stack-env.js";

// dist/demo/demo.js → the repository root.
const ROOT = resolve(fileURLToPath(new URL("../../", import.meta.url)));
const APP_TAG = "hpcs-demo/wordcount:1";
const USER = "alice";

const say = (s: string): void => void process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`);

/** Runs a command with the demo's stdio; rejects on a non-zero exit. */
function step(file: string, args: string[], opts: { capture?: boolean } = {}): Promise<string> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", opts.capture ? "pipe" : "inherit", "inherit"] });
    let out = "";
    child.stdout?.on("data", (c: Buffer) => (out += c.toString()));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolveRun(out) : reject(new Error(`${file} ${args[0] ?? ""} exited ${code}`)),
    );
  });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").toLowerCase();
  const out = join(ROOT, "demo-output", stamp);
  await mkdir(out, { recursive: true });

  say("1/5 the bench (stack/stack.sh up) and the hpcs server (MUNGE node attestation)");
  await step("bash", [join(ROOT, "stack/stack.sh"), "up"]);
  const env = loadStackEnv();
  const srv = await HpcsServerProcess.start(env, { nodeAttestation: "munge" });
  try {
    say("2/5 the researcher's machine: client config + enrollment secret");
    const home = await HpcsClientHome.create(env, srv, `demo-${stamp}`, USER);
    const atRest = sshUser(env, USER).scratch;
    const hpcs = (args: string[], capture = false): Promise<string> =>
      step(process.execPath, [CLIENT_CLI, args[0] ?? "", "--config", home.configPath, ...args.slice(1)], {
        capture,
      });
    process.stdout.write(`client config: ${home.configPath}\n`);

    say(`3/5 data-prep demo/sample-data and container-prep ${APP_TAG} for ${USER} on node ${env.slurm.node}`);
    const dataset = join(out, "sample-data");
    await cp(join(ROOT, "demo/sample-data"), dataset, { recursive: true });
    await step("docker", ["build", "-q", "-t", APP_TAG, join(ROOT, "demo/app")]);
    const grant = ["-u", USER, "-c", env.slurm.node, "--data-path-at-rest", atRest, "--username", USER];
    await hpcs([
      "data-prep",
      "-i",
      dataset,
      "-o",
      out,
      "--data-path",
      `sample-data-${stamp}.tar.gpg`,
      ...grant,
    ]);
    await hpcs(["container-prep", "-b", APP_TAG, "--data-path", `wordcount-${stamp}.sif.gpg`, ...grant]);

    say(`4/5 job-prep: a confidential job as ${USER} on the local Slurm (partition ${env.slurm.partition})`);
    const submitted = await hpcs(
      [
        "job-prep",
        "-J",
        `demo-${stamp}`,
        "-N",
        "1",
        "-p",
        env.slurm.partition,
        "-t",
        "00:10:00",
        "-w",
        env.slurm.node,
        "-s",
        atRest,
        "-ai",
        join(atRest, `wordcount-${stamp}.sif.gpg.info.yaml`),
        "-di",
        join(atRest, `sample-data-${stamp}.tar.gpg.info.yaml`),
        "--keys-dir",
        out,
        // -f: the job's own log lines as they come (on stderr, since --json keeps stdout for the result).
        "-f",
        "--json",
        "--",
        "/sd-container/encrypted/sample-data",
      ],
      true,
    );
    const job = JSON.parse(submitted.trim().split("\n").pop() ?? "{}") as { jobId?: string };
    if (!job.jobId) throw new Error(`job-prep printed no job id: ${submitted}`);

    say(`5/5 the results of job ${job.jobId}, decrypted here with the job's private key`);
    const fetched = await hpcs(["job-prep", "results", job.jobId, "--keys-dir", out, "--json"], true);
    const results = JSON.parse(fetched.trim().split("\n").pop() ?? "{}") as { outputDir?: string };
    const dir = results.outputDir ?? join(out, `hpcs-job-${job.jobId}-output`);
    process.stdout.write(`\n${dir}/result:\n${await readFile(join(dir, "result"), "utf8")}`);

    const seconds = ((Date.now() - t0) / 1000).toFixed(0);
    say(`done in ${seconds} s — where everything is`);
    process.stdout.write(
      [
        `researcher's side    ${out}`,
        `  dataset            ${dataset}`,
        `  job key + record   ${out}/hpcs-job-${job.jobId}.{key.asc,json}`,
        `  decrypted results  ${dir} (${(await readdir(dir)).join(", ")})`,
        `  client config      ${home.configPath}`,
        `cluster (${USER}@${env.ssh.host}:${env.ssh.port})`,
        `  artifacts + info   ${atRest}/{sample-data,wordcount}-${stamp}.*`,
        `  job files          ${atRest}/.hpcs/ (script, log, encrypted volumes' backing dirs)`,
        `  encrypted output   ${atRest}/output/`,
        `bench state          ${env.state_dir} (logs: ${env.state_dir}/logs)`,
        `stop the bench       npm run stack -- down`,
        "",
      ].join("\n"),
    );
  } finally {
    await srv.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
