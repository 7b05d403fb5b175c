/**
 * `hpcs data-prep`: encrypt a dataset as one stream, keep its key in Vault, grant it to the job's
 * nodes and users, ship it over SSH and write its info file — or, if anything fails, undo it all.
 */

import { openArtifactStream } from "../artifact/artifact-stream.js";
import { estimateTarSize } from "../artifact/tar-size.js";
import { basename } from "node:path";
import { loadClientConfig } from "../../lib/config/client-config.js";
import { type CommandIo, runCommand, shipArtifact } from "../ship-command.js";
import { dataPrepOptions, type RawDataPrepFlags } from "./options.js";

export function dataPrepCommand(raw: RawDataPrepFlags, io: CommandIo): Promise<number> {
  return runCommand("data-prep", raw.json === true, io, async () => {
    const opts = dataPrepOptions(raw);
    const cfg = loadClientConfig(opts.configPath);
    const total = await estimateTarSize(opts.input);
    return shipArtifact(
      {
        kind: "data",
        // A directory travels as a tar, a single file as itself; either way the job finds it under its
        // own name, /sd-container/encrypted/<name> (the original's layout: -i ./jp2a_input → …/jp2a_input).
        payload: opts.inputKind === "directory" ? ("tar" as const) : ("file" as const),
        payloadName: basename(opts.input),
        ...(opts.username ? { username: opts.username } : {}),
        atRestDir: opts.atRestDir,
        artifactName: opts.artifactName,
        nodes: opts.nodes,
        users: opts.users,
        groups: opts.groups,
        ...(opts.expiresInSec ? { expiresInSec: opts.expiresInSec } : {}),
        ...(opts.outputDir ? { outputDir: opts.outputDir } : {}),
        json: opts.json,
        quiet: opts.quiet,
        totalBytes: () => total,
        openCiphertext: async (secret, signal) =>
          (await openArtifactStream(opts.input, secret, { worker: true, digest: false, signal })).stream,
      },
      cfg,
      io,
    );
  });
}
