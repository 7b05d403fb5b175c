/**
 * `hpcs container-prep`: OCI image → prepared image → SIF (client/container/), then the same shipping
 * as data-prep (client/ship-command.ts): key to Vault, grant, streaming encryption + upload, info file
 * with `kind: container`, all undone on failure. The image is prepared before anything is created, so
 * a bad image costs nothing; its plaintext stays in a private directory on the user's own disk and is
 * removed on every way out.
 */

import { copyFile, rename, rm } from "node:fs/promises";
import { loadClientConfig } from "../../lib/config/client-config.js";
import { openArtifactStream } from "../artifact/artifact-stream.js";
import {
  type PrepareStage,
  prepareContainer,
  type PreparedContainer,
} from "../container/prepare-container.js";
import { type CommandIo, runCommand, shipArtifact } from "../ship-command.js";
import { UsageError } from "../usage-error.js";
import { type ContainerPrepOptions, containerPrepOptions, type RawContainerPrepFlags } from "./options.js";

export function containerPrepCommand(raw: RawContainerPrepFlags, io: CommandIo): Promise<number> {
  return runCommand("container-prep", raw.json === true, io, async () => {
    const opts = containerPrepOptions(raw);
    const cfg = loadClientConfig(opts.configPath);
    // Stage lines are progress: only for a person at a terminal, like data-prep's bar.
    const say = (line: string): void => {
      if (!opts.json && !opts.quiet && io.stderr.isTTY) io.stderr.write(`${line}\n`);
    };
    let prepared: PreparedContainer | undefined;
    const sif = (): PreparedContainer => {
      if (!prepared) throw new Error("container-prep: the SIF was not prepared");
      return prepared;
    };
    try {
      const code = await shipArtifact(
        {
          kind: "container",
          payload: "sif",
          ...(opts.username ? { username: opts.username } : {}),
          atRestDir: opts.atRestDir,
          artifactName: opts.artifactName,
          nodes: opts.nodes,
          users: opts.users,
          groups: opts.groups,
          ...(opts.expiresInSec ? { expiresInSec: opts.expiresInSec } : {}),
          json: opts.json,
          quiet: opts.quiet,
          prepare: async (signal) => {
            prepared = await prepareImage(opts, signal, say);
          },
          totalBytes: () => sif().sifSize,
          openCiphertext: async (secret, signal) =>
            (await openArtifactStream(sif().sifPath, secret, { worker: true, digest: false, signal })).stream,
        },
        cfg,
        io,
      );
      // Only a run that shipped leaves the local copy behind (it is the user's own plaintext).
      if (opts.sifPath) await keepCopy(sif().sifPath, opts.sifPath);
      return code;
    } finally {
      await prepared?.cleanup();
    }
  });
}

/** A source the image cannot be read from is the command's mistake (exit 2), found before anything exists. */
async function prepareImage(
  opts: ContainerPrepOptions,
  signal: AbortSignal,
  say: (line: string) => void,
): Promise<PreparedContainer> {
  let current: PrepareStage = "export";
  try {
    return await prepareContainer({
      source: opts.source,
      ...(opts.dockerSocket ? { docker: opts.dockerSocket } : {}),
      workDir: opts.workDir,
      signal,
      onStage: (stage, event) => {
        current = stage;
        if (event === "start") say(`container-prep: ${stage}…`);
      },
    });
  } catch (err) {
    if (current === "export" && !signal.aborted) throw new UsageError((err as Error).message);
    throw err;
  }
}

/** Copies the SIF to the user's path via a temp name, so a half-copied SIF never has the final name. */
async function keepCopy(from: string, to: string): Promise<void> {
  const part = `${to}.part`;
  try {
    await copyFile(from, part);
    await rename(part, to);
  } catch (err) {
    await rm(part, { force: true });
    throw err;
  }
}
