/**
 * The programs the job needs on the compute node that a site does not usually install for users —
 * spire-agent and gocryptfs — shipped from the user's machine into a per-user, content-addressed
 * tools directory on the cluster: `~/.hpcs/tools/<sha256>/<name>`. A tool already there with the
 * same sha256 (checked remotely with sha256sum, not trusted by name) is reused, so each version
 * crosses the network once. Uploads go to a random temporary name, are made executable and renamed
 * last, so a concurrent job-prep never runs a half-written binary.
 *
 * With `[supercomputer] site-tools = true`, a tool the login node already has on PATH is used by its
 * bare name instead (the site's build, found on the compute node's PATH too).
 *
 * The binaries must run on the compute nodes: the client image's are static Linux amd64 builds.
 */

import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { access, constants, stat } from "node:fs/promises";
import { delimiter, isAbsolute, join, posix } from "node:path";
import { pipeline } from "node:stream/promises";
import type { SFTPWrapper } from "ssh2";
import { SFTP_STATUS, sftpStatus, shortMessage } from "../ssh/sftp-errors.js";
import { replace, sftpUnlink } from "../ssh/sftp-ops.js";
import type { SshSession } from "../ssh/ssh-session.js";
import { uploadStream } from "../ssh/upload.js";
import { execArgv } from "./remote-exec.js";

export interface ToolSpec {
  /** Name on the cluster (and on the site's PATH). */
  name: string;
  /** Local program: a name looked up on PATH, or a path. */
  local: string;
  /** Where the local program comes from, for messages (e.g. "[spire-server] agent-bin"). */
  source: string;
}

export interface ShippedTool {
  name: string;
  /** Absolute cluster path, or the bare name when the site's own tool is used. */
  path: string;
  how: "site" | "cached" | "uploaded";
}

/** Finds the local program; throws one line naming where it was expected. */
export async function resolveLocalTool(tool: ToolSpec, pathEnv = process.env.PATH ?? ""): Promise<string> {
  const candidates = tool.local.includes("/")
    ? [tool.local]
    : pathEnv
        .split(delimiter)
        .filter((d) => isAbsolute(d))
        .map((d) => join(d, tool.local));
  for (const c of candidates) {
    try {
      if ((await stat(c)).isFile()) {
        await access(c, constants.R_OK);
        return c;
      }
    } catch {
      // next candidate
    }
  }
  throw new Error(
    tool.local.includes("/")
      ? `${tool.name} not found at ${tool.local} (${tool.source}): fix the path`
      : `${tool.name} not found on PATH (${tool.source}): install it here, job-prep ships it to the cluster`,
  );
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/** The login user's home directory, as SFTP resolves "." (where an SFTP session starts). */
export function remoteHome(sftp: SFTPWrapper, host: string): Promise<string> {
  return new Promise((resolve, reject) =>
    sftp.realpath(".", (err, p) =>
      err ? reject(new Error(`cannot resolve the home directory on ${host}: ${err.message}`)) : resolve(p),
    ),
  );
}

/** Creates each missing directory of `dir` below `base` (0700); existing ones are left as they are. */
export async function mkdirs(
  sftp: SFTPWrapper,
  base: string,
  parts: string[],
  host: string,
): Promise<string> {
  let dir = base;
  for (const part of parts) {
    dir = posix.join(dir, part);
    const here = dir;
    await new Promise<void>((resolve, reject) =>
      sftp.mkdir(here, { mode: 0o700 }, (err) => {
        if (!err) return resolve();
        // OpenSSH reports an existing directory as plain FAILURE: check it really is one.
        sftp.stat(here, (e2, st) =>
          !e2 && st.isDirectory()
            ? resolve()
            : reject(
                new Error(
                  sftpStatus(err) === SFTP_STATUS.PERMISSION_DENIED
                    ? `permission denied creating ${here} on ${host}`
                    : `cannot create ${here} on ${host}: ${shortMessage(err)}`,
                ),
              ),
        );
      }),
    );
  }
  return dir;
}

export interface PlannedTool extends ShippedTool {
  localPath: string;
  sha256: string;
}

/**
 * Decides, without writing anything, where each tool will be on the cluster: the site's (bare name),
 * an identical copy already in the tools directory, or a copy still to upload (installTools).
 */
export async function planTools(
  session: SshSession,
  tools: ToolSpec[],
  opts: { siteTools: boolean; signal?: AbortSignal },
): Promise<PlannedTool[]> {
  const local = await Promise.all(tools.map(async (t) => ({ tool: t, path: await resolveLocalTool(t) })));
  const sftp = await session.sftp();
  let home: string;
  try {
    home = await remoteHome(sftp, session.host);
  } finally {
    sftp.end();
  }
  const out: PlannedTool[] = [];
  for (const { tool, path } of local) {
    opts.signal?.throwIfAborted();
    const sha = await sha256File(path);
    if (opts.siteTools && (await onSitePath(session, tool.name, opts.signal))) {
      out.push({ name: tool.name, path: tool.name, how: "site", localPath: path, sha256: sha });
      continue;
    }
    const target = posix.join(home, ".hpcs", "tools", sha, tool.name);
    const cached = (await remoteSha256(session, target, opts.signal)) === sha;
    out.push({
      name: tool.name,
      path: target,
      how: cached ? "cached" : "uploaded",
      localPath: path,
      sha256: sha,
    });
  }
  return out;
}

/** Uploads the planned tools that are not on the cluster yet. */
export async function installTools(
  session: SshSession,
  planned: PlannedTool[],
  opts: { signal?: AbortSignal; onStep?: (line: string) => void } = {},
): Promise<void> {
  const todo = planned.filter((t) => t.how === "uploaded");
  if (todo.length === 0) return;
  const sftp = await session.sftp();
  try {
    const home = await remoteHome(sftp, session.host);
    for (const t of todo) {
      opts.signal?.throwIfAborted();
      const dir = posix.dirname(t.path);
      opts.onStep?.(`shipping ${t.name} (${t.localPath}) to ${t.path}`);
      await mkdirs(sftp, home, [".hpcs", "tools", t.sha256], session.host);
      await uploadTool(session, sftp, t.localPath, dir, t.name, t.sha256, opts.signal);
    }
  } finally {
    sftp.end();
  }
}

async function onSitePath(session: SshSession, name: string, signal?: AbortSignal): Promise<boolean> {
  const r = await execArgv(session, ["sh", "-c", 'command -v "$1"', "sh", name], signal ? { signal } : {});
  return r.code === 0 && r.stdout.trim() !== "";
}

/** The remote file's sha256, or undefined when it is absent or unreadable. */
async function remoteSha256(
  session: SshSession,
  path: string,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const r = await execArgv(session, ["sha256sum", "--", path], signal ? { signal } : {});
  if (r.code !== 0) return undefined;
  return /^([0-9a-f]{64})\s/.exec(r.stdout)?.[1];
}

async function uploadTool(
  session: SshSession,
  sftp: SFTPWrapper,
  localPath: string,
  dir: string,
  name: string,
  sha: string,
  signal?: AbortSignal,
): Promise<void> {
  const tmpName = `${name}.${randomBytes(6).toString("hex")}.tmp`;
  const tmpPath = posix.join(dir, tmpName);
  const result = await uploadStream(session, createReadStream(localPath), {
    dir,
    name: tmpName,
    mode: 0o700,
    ...(signal ? { signal } : {}),
  });
  try {
    if (result.sha256 !== sha)
      throw new Error(`${localPath} changed while it was shipped: run job-prep again`);
    await new Promise<void>((resolve, reject) =>
      sftp.chmod(tmpPath, 0o755, (err) => (err ? reject(err) : resolve())),
    );
    await replace(sftp, tmpPath, posix.join(dir, name));
  } catch (err) {
    await sftpUnlink(sftp, tmpPath).catch(() => undefined);
    throw new Error(`cannot install ${name} in ${dir} on ${session.host}: ${shortMessage(err)}`);
  }
}
