/**
 * What `hpcs data-prep` and `hpcs container-prep` share after their own preparation: ship one artifact.
 *
 * Everything that can be checked without side effects is checked first (config, SSH login and host
 * key, the remote directory, no artifact of that name already there), so most mistakes cost nothing.
 * Only then does the client register and start its spire-agent (stopped and wiped on every way out,
 * client/identity/client-agent.ts), and publishArtifact runs its ordered, all-or-nothing steps. Grant
 * and revoke go over JSON/HTTP with a JWT-SVID, or, with `[hpcs-server] grpc-mtls`, over gRPC with the
 * workload's X509-SVID (hpcs-grpc-client.ts).
 */

import { posix } from "node:path";
import { ConfigError } from "../lib/config/ini-file.js";
import type { ClientConfig } from "../lib/config/client-config.js";
import type { ArtifactSecret } from "./artifact/secret.js";
import { type ArtifactInfo, infoFileName } from "./data-prep/info-file.js";
import { UsageError } from "./usage-error.js";
import { EXIT } from "./exit-codes.js";
import { HpcsGrpcClient } from "./hpcs-grpc-client.js";
import { HpcsServerClient } from "./hpcs-server-client.js";
import { type ClientIdentity, establishIdentity } from "./identity/client-identity.js";
import { NO_PROGRESS, type Progress, terminalProgress } from "./progress.js";
import { publishArtifact, PublishError, type PublishResult, type PublishServer } from "./publish-artifact.js";
import { exists } from "./ssh/remote-files.js";
import { SshSession } from "./ssh/ssh-session.js";
import { sessionOptions } from "./ssh/session-options.js";
import type { Readable } from "node:stream";

export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WriteStream;
  /** Aborted on SIGINT/SIGTERM by the CLI. */
  signal: AbortSignal;
}

/** What to ship, as the command's own options decided it. */
export interface ShipSpec {
  kind: ArtifactInfo["kind"];
  payload: ArtifactInfo["payload"];
  payloadName?: string;
  /** Overrides [supercomputer] username. */
  username?: string;
  atRestDir: string;
  artifactName: string;
  nodes: string[];
  users: string[];
  groups: string[];
  expiresInSec?: number;
  outputDir?: string;
  json: boolean;
  quiet: boolean;
  /**
   * Local work that must not start before the cheap checks passed (container-prep builds its SIF
   * here): runs after SSH and the remote directory were checked, before anything is created.
   */
  prepare?(signal: AbortSignal): Promise<void>;
  /** Estimated ciphertext bytes, for the progress bar (asked after prepare). */
  totalBytes(): number;
  openCiphertext(secret: ArtifactSecret, signal: AbortSignal): Promise<Readable>;
}

/** Runs a command body and maps its failure to one stderr line (+ a JSON object) and an exit code. */
export async function runCommand(
  name: string,
  json: boolean,
  io: CommandIo,
  body: () => Promise<number>,
): Promise<number> {
  try {
    return await body();
  } catch (err) {
    const usage = err instanceof UsageError || err instanceof ConfigError;
    const message = err instanceof Error ? err.message : String(err);
    io.stderr.write(`hpcs ${name}: ${message}\n`);
    if (json) {
      const step = err instanceof PublishError ? err.step : undefined;
      io.stdout.write(`${JSON.stringify({ ok: false, error: message, ...(step ? { step } : {}) })}\n`);
    }
    if (io.signal.aborted) return io.signal.reason === "SIGTERM" ? EXIT.terminated : EXIT.interrupted;
    return usage ? EXIT.usage : EXIT.failed;
  }
}

/** Config → SSH → remote checks → identity → publish → report. Throws; runCommand maps the error. */
export async function shipArtifact(spec: ShipSpec, cfg: ClientConfig, io: CommandIo): Promise<number> {
  const username = spec.username ?? cfg.supercomputer.username;
  const sshOptions = sessionOptions(cfg.supercomputer, username);
  const ssh = await SshSession.connect(sshOptions);
  try {
    await checkRemote(ssh, spec);
    io.signal.throwIfAborted();
    await spec.prepare?.(io.signal);
    io.signal.throwIfAborted();
    const identity = await establishIdentity(cfg, { signal: io.signal });
    let server: PublishServer & { close?(): void };
    try {
      server = await publishServer(cfg, identity, io.signal);
    } catch (err) {
      await identity.close();
      throw err;
    }
    const progress: Progress =
      spec.json || spec.quiet
        ? NO_PROGRESS
        : terminalProgress({ total: spec.totalBytes(), stream: io.stderr });
    try {
      const result = await publishArtifact(identity, server, ssh, {
        kind: spec.kind,
        payload: spec.payload,
        ...(spec.payloadName ? { payloadName: spec.payloadName } : {}),
        openCiphertext: (secret, signal) => spec.openCiphertext(secret, signal),
        atRestDir: spec.atRestDir,
        artifactName: spec.artifactName,
        remoteMode: remoteMode(spec, username),
        nodes: spec.nodes,
        users: spec.users,
        groups: spec.groups,
        ...(spec.expiresInSec ? { expiresAt: new Date(Date.now() + spec.expiresInSec * 1000) } : {}),
        ...(spec.outputDir ? { localDir: spec.outputDir } : {}),
        signal: io.signal,
        reconnect: () => SshSession.connect(sshOptions),
        onStep: (s) => progress.step(s),
        onProgress: (n) => progress.bytes(n),
      });
      progress.stop();
      report(result, spec, io);
      return EXIT.ok;
    } finally {
      progress.stop();
      server.close?.();
      await identity.close();
    }
  } finally {
    ssh.close();
  }
}

/** Where grant and revoke go: gRPC over SPIFFE mTLS when configured, else JSON/HTTP. */
async function publishServer(
  cfg: ClientConfig,
  identity: ClientIdentity,
  signal: AbortSignal,
): Promise<PublishServer & { close?(): void }> {
  const mtls = cfg.hpcsServer.grpcMtls;
  if (!mtls) return new HpcsServerClient(cfg.hpcsServer);
  const client = await HpcsGrpcClient.open({
    host: mtls.host,
    port: mtls.port,
    serverId: mtls.serverId,
    workload: identity.workloadApi,
    spiffeId: identity.workloadSpiffeId,
  });
  // One round trip before the secret is created: a channel that cannot open (wrong address or server
  // ID) would also fail the rollback's revoke and leave the secret behind.
  try {
    await client.health({ signal });
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

/** Before anything is created: the directory must exist and hold no artifact or info file of that name. */
async function checkRemote(ssh: SshSession, opts: ShipSpec): Promise<void> {
  if (!(await exists(ssh, opts.atRestDir))) {
    throw new UsageError(
      `--data-path-at-rest ${opts.atRestDir} does not exist on ${ssh.host}: create it or pick another directory`,
    );
  }
  for (const name of [opts.artifactName, infoFileName(opts.artifactName)]) {
    const path = posix.join(opts.atRestDir, name);
    if (await exists(ssh, path)) {
      throw new UsageError(
        `${path} already exists on ${ssh.host}: choose another --data-path or remove it first`,
      );
    }
  }
}

/**
 * Ciphertext is safe on shared storage by design; when anyone besides the uploader must read it in a
 * job, it is world-readable (the grant, not the file mode, decides who gets the key).
 */
function remoteMode(opts: ShipSpec, username: string): number {
  const onlyMe = opts.groups.length === 0 && opts.users.every((u) => u === username);
  return onlyMe ? 0o600 : 0o644;
}

function report(r: PublishResult, opts: ShipSpec, io: CommandIo): void {
  if (opts.json) {
    io.stdout.write(
      `${JSON.stringify({
        ok: true,
        ...r.info,
        info_file: r.infoPath,
        ...(r.localArtifact ? { local_artifact: r.localArtifact } : {}),
        ...(r.localInfo ? { local_info_file: r.localInfo } : {}),
      })}\n`,
    );
    return;
  }
  if (opts.quiet) return;
  const i = r.info;
  io.stdout.write(
    [
      `shipped    ${i.path_at_rest} (${i.size} bytes, sha256 ${i.sha256})`,
      `info file  ${r.infoPath}${r.localInfo ? ` (copy: ${r.localInfo})` : ""}`,
      `secret     ${i.secret_path}, readable with role ${i.access_role}`,
      `identity   ${i.spiffeID}`,
      `granted    nodes ${i.grant.nodes.join(",")}; users ${i.grant.users.join(",") || "-"}; groups ${i.grant.groups.join(",") || "-"}${i.grant.expires ? `; until ${i.grant.expires}` : ""}`,
      "",
    ].join("\n"),
  );
}
