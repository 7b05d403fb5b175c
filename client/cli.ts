#!/usr/bin/env node
/**
 * `hpcs`: the researcher's commands (the client image's entry point, so `docker compose run --rm
 * data-prep` ends up here). Flags follow the original HPCS tools; see client/README.md.
 *
 * SIGINT/SIGTERM abort the running command, which undoes what it had done and stops its agent; a
 * second signal exits at once (the agent child is still killed by its exit hook).
 */

import { Command, Option } from "commander";
import { containerPrepCommand } from "./container-prep/container-prep-command.js";
import type { RawContainerPrepFlags } from "./container-prep/options.js";
import { dataPrepCommand } from "./data-prep/data-prep-command.js";
import type { RawDataPrepFlags } from "./data-prep/options.js";
import { jobPrepCommand } from "./job-prep/job-prep-command.js";
import { prepareJobPrepArgv, type RawJobPrepFlags, RUNTIMES } from "./job-prep/options.js";
import { type RawResultsFlags, resultsCommand } from "./job-prep/results-command.js";
import { collectList, DEFAULT_CONFIG } from "./ship-options.js";
import { EXIT } from "./exit-codes.js";

export interface Commands {
  dataPrep: (raw: RawDataPrepFlags) => Promise<number>;
  containerPrep: (raw: RawContainerPrepFlags) => Promise<number>;
  jobPrep: (raw: RawJobPrepFlags) => Promise<number>;
  jobPrepResults: (job: string, raw: RawResultsFlags) => Promise<number>;
}

/** The options every shipping command takes, in the original's spelling. */
function shipFlags(cmd: Command): Command {
  return cmd
    .option("--config <file>", "client configuration (INI)", DEFAULT_CONFIG)
    .option("--data-path <name>", "artifact file name (a path is accepted; only its base name is used)")
    .option("--data-path-at-rest <dir>", "directory on the supercomputer to ship the artifact to")
    .option("--username <user>", "your user on the supercomputer (default: [supercomputer] username)")
    .option(
      "-u, --users <users>",
      "users who may decrypt it in a job (repeat or comma-separate)",
      collectList,
    )
    .option(
      "-g, --groups <groups>",
      "groups whose members may decrypt it (repeat or comma-separate)",
      collectList,
    )
    .option(
      "-c, --compute-nodes <nodes>",
      "compute nodes it is granted on (repeat or comma-separate)",
      collectList,
    )
    .option("--expires <duration>", "grant lifetime, e.g. 12h or 7d (default: no expiry)")
    .addOption(new Option("--json", "print one JSON result object on stdout").conflicts("quiet"))
    .option("-q, --quiet", "print nothing but errors");
}

const EXIT_HELP = [
  "",
  "Exit status: 0 shipped; 1 a step failed (what was done is undone); 2 bad flags or configuration",
  "(nothing was created); 130/143 interrupted (undone).",
];

export function buildProgram(run: Commands): Command {
  const program = new Command("hpcs")
    .description("Confidential jobs on shared supercomputers: prepare data, containers and jobs.")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();

  shipFlags(
    program
      .command("data-prep")
      .description(
        "Encrypt a dataset as one stream, store its key in Vault, grant it to compute nodes × users/groups, " +
          "and ship it over SSH with its info file. On any failure everything done so far is undone.",
      )
      .option("-i, --input-data <path>", "dataset to encrypt: a directory or a file")
      .option(
        "-o, --output-data <dir>",
        "also keep a local copy of the encrypted artifact and its info file here",
      ),
  )
    .addHelpText(
      "after",
      [
        ...EXIT_HELP,
        "",
        "Example:",
        "  hpcs data-prep --config /tmp/hpcs-client.conf -i /tmp/input -o /tmp/ -u alice -c nid003044 \\",
        "    --data-path /tmp/encrypted_input.tar.gpg --data-path-at-rest /scratch/project_1/alice/",
      ].join("\n"),
    )
    .action(async (flags: RawDataPrepFlags) => {
      process.exitCode = await run.dataPrep(flags);
    });

  shipFlags(
    program
      .command("container-prep")
      .description(
        "Prepare an OCI/Docker image for confidential runs (sd-container layout, wrapper), write it as a SIF, " +
          "then encrypt, store the key, grant and ship it like data-prep.",
      )
      .option(
        "-b, --base-oci-image <image>",
        "image tag in the local Docker daemon, or a docker save / OCI tar (docker-archive:<path>, oci-archive:<path>)",
      )
      .option("-s, --sif-path <path>", "also keep the unencrypted SIF here (your machine only)")
      .option("-e, --encrypted", "accepted for compatibility: the container is always encrypted")
      .option(
        "-d, --docker-path <socket>",
        "Docker daemon socket (default: DOCKER_HOST, else /var/run/docker.sock)",
      )
      .option("--work-dir <dir>", "local directory for the image while it is prepared (default: TMPDIR)"),
  )
    .addHelpText(
      "after",
      [
        ...EXIT_HELP,
        "",
        "Example:",
        "  hpcs container-prep --config /tmp/hpcs-client.conf -b talinx/jp2a -u alice -c nid003044 \\",
        "    --data-path /tmp/jp2a.sif.gpg --data-path-at-rest /scratch/project_1/alice/",
      ].join("\n"),
    )
    .action(async (flags: RawContainerPrepFlags) => {
      process.exitCode = await run.containerPrep(flags);
    });

  const jobPrep = program
    .command("job-prep")
    .description(
      "Submit a confidential job: read the container's and datasets' info files on the supercomputer, " +
        "create the job's output key pair (the private key stays here), ship what the job needs, sbatch, " +
        "then wait for the job (or follow its output). `hpcs job-prep results <job>` fetches and decrypts the result.",
    )
    .usage("[options] [-- app-arg…]")
    .option("--config <file>", "client configuration (INI)", DEFAULT_CONFIG)
    .option("-J, --job-name <name>", "Slurm job name (default: hpcs-job)")
    .option("-N, --nodes <n>", "number of nodes (sbatch -N)")
    .option("-p, --partition <partition>", "partition (sbatch -p)")
    .option("-t, --time <time>", "time limit, e.g. 01:00:00 (sbatch -t)")
    .option("-A, --account <account>", "account / project (sbatch -A)")
    .option("-w, --nodelist <nodes>", "nodes to run on (sbatch -w)")
    .option("-s, --workdir <dir>", "the job's directory on the supercomputer; results go to <dir>/output")
    .option("--application-info <file>", "-ai: the container's info file on the supercomputer")
    .option(
      "--data-info <file>",
      "-di: a dataset's info file on the supercomputer (repeat for several datasets)",
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option(
      "-i, --supplementary-input-scripts <dir>",
      "directory of input verification scripts (supercomputer)",
    )
    .option(
      "-o, --supplementary-output-scripts <dir>",
      "directory of output verification scripts (supercomputer)",
    )
    .option(
      "--singularity-supplementary-flags <flags>",
      "-flags: extra container runtime flags, split on whitespace",
    )
    .option(
      "--arguments <string>",
      "-args: the app's arguments as one string, split on whitespace (for arguments with spaces, put them after --)",
    )
    .option("-f, --follow", "stream the job's output while it runs")
    .option("--no-wait", "return right after submission, printing the job id")
    .option("--runtime <name>", `container runtime on the node: ${RUNTIMES.join(", ")}`, "auto")
    .option("--keys-dir <dir>", "where the job's private key and record go (default: the config's directory)")
    .addOption(new Option("--json", "print one JSON result object on stdout").conflicts("quiet"))
    .option("-q, --quiet", "print nothing but errors (and the job's output with -f)")
    .addHelpText(
      "after",
      [
        "",
        "Exit status: 0 the job and the app succeeded (or, with --no-wait, the job was submitted); 1 a step",
        "failed or the job did not complete with exit 0; 2 bad flags, configuration or info files (nothing",
        "was created); 130/143 interrupted (the job keeps running: `hpcs job-prep results <id>` later).",
        "",
        "Example:",
        "  hpcs job-prep --config /tmp/hpcs-client.conf -N 1 -p standard -t 01:00:00 -A project_1 -w nid003044 \\",
        "    -s /scratch/project_1/alice -ai /scratch/project_1/alice/jp2a.sif.gpg.info.yaml \\",
        "    -di /scratch/project_1/alice/encrypted_input.tar.gpg.info.yaml -f \\",
        "    -- /sd-container/encrypted/encrypted_input/image.png --width=100 --output=/sd-container/output/result",
      ].join("\n"),
    )
    .action(async (flags: RawJobPrepFlags) => {
      process.exitCode = await run.jobPrep(flags);
    });

  jobPrep
    .command("results")
    .description(
      "Download a finished job's encrypted result and decrypt it here with the job's private key " +
        "(into --output-dir, default <keys-dir>/hpcs-job-<id>-output).",
    )
    .argument("<job>", "the job id job-prep printed (or the path of its hpcs-job-<id>.json record)")
    .option("--config <file>", "client configuration (INI) (default: job-prep's --config)")
    .option(
      "--keys-dir <dir>",
      "where job-prep put the job's key and record (default: the config's directory)",
    )
    .option("--output-dir <dir>", "directory to create for the result")
    .addOption(new Option("--json", "print one JSON result object on stdout").conflicts("quiet"))
    .option("-q, --quiet", "print nothing but errors")
    .action(async (job: string, flags: RawResultsFlags) => {
      // Without positional options commander gives job-prep's own flags (--config, --keys-dir, --json,
      // -q) to job-prep wherever they stand, also after `results <job>`: take them from there too.
      const parent = jobPrep.opts<RawJobPrepFlags>();
      const keysDir = flags.keysDir ?? parent.keysDir;
      process.exitCode = await run.jobPrepResults(job, {
        ...flags,
        config: flags.config ?? parent.config ?? DEFAULT_CONFIG,
        ...(keysDir ? { keysDir } : {}),
        json: flags.json === true || parent.json === true,
        quiet: flags.quiet === true || parent.quiet === true,
      });
    });
  return program;
}

async function main(argv: string[]): Promise<void> {
  // `hpcs … --help | head`: a closed stdout is the reader's choice, not an error worth a stack trace.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(EXIT.ok);
    throw err;
  });
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) process.exit(sig === "SIGTERM" ? EXIT.terminated : EXIT.interrupted);
    process.stderr.write(`\nhpcs: ${sig}: undoing what was done (again to exit at once)\n`);
    controller.abort(sig);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const io = { stdout: process.stdout, stderr: process.stderr, signal: controller.signal };
  // `-ai`, `-di`, `-flags`, `-args` (the original's spelling) → long flags; `-- args…` kept verbatim.
  const prepared = prepareJobPrepArgv(argv);
  const program = buildProgram({
    dataPrep: (raw) => dataPrepCommand(raw, io),
    containerPrep: (raw) => containerPrepCommand(raw, io),
    jobPrep: (raw) =>
      jobPrepCommand(prepared.literalArgs ? { ...raw, literalArgs: prepared.literalArgs } : raw, io),
    jobPrepResults: (job, raw) => resultsCommand(job, raw, io),
  });
  try {
    await program.parseAsync(prepared.argv);
  } catch (err) {
    // commander's exitOverride: --help/--version exit 0, usage errors (already printed) exit 2.
    const code = (err as { exitCode?: number; code?: string }).exitCode;
    process.exitCode = code === 0 ? EXIT.ok : EXIT.usage;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/client/cli.js")) {
  void main(process.argv);
}
