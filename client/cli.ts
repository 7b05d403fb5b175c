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
import { collectList, DEFAULT_CONFIG } from "./ship-options.js";
import { EXIT } from "./exit-codes.js";

export interface Commands {
  dataPrep: (raw: RawDataPrepFlags) => Promise<number>;
  containerPrep: (raw: RawContainerPrepFlags) => Promise<number>;
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
  const program = buildProgram({
    dataPrep: (raw) => dataPrepCommand(raw, io),
    containerPrep: (raw) => containerPrepCommand(raw, io),
  });
  try {
    await program.parseAsync(argv);
  } catch (err) {
    // commander's exitOverride: --help/--version exit 0, usage errors (already printed) exit 2.
    const code = (err as { exitCode?: number; code?: string }).exitCode;
    process.exitCode = code === 0 ? EXIT.ok : EXIT.usage;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/client/cli.js")) {
  void main(process.argv);
}
