/**
 * The flags data-prep and container-prep share — where the artifact goes, who gets it, how long, how
 * to report — checked before the first side effect and reported as one UsageError line naming the
 * flag and the fix.
 *
 *   --data-path          the artifact's file name (the original took a local path such as
 *                        /tmp/encrypted_input.tgz; only its base name is used)
 *   --data-path-at-rest  the directory on the supercomputer the artifact is shipped to
 *   --username           your user on the supercomputer (overrides [supercomputer] username)
 *   -u/--users, -g/--groups  who may decrypt it in a job (repeat the flag or separate with commas)
 *   -c/--compute-nodes   the nodes it is granted on
 */

import { basename, resolve } from "node:path";
import { InvalidDurationError, parseDuration } from "../lib/duration.js";
import { InvalidNameError, type NameKind, validateName } from "../lib/names.js";
import { checkRemoteDir, checkRemoteName } from "./ssh/remote-name.js";
import { UsageError } from "./usage-error.js";

export const DEFAULT_CONFIG = "/tmp/hpcs-client.conf";
const MIN_EXPIRY_SEC = 60;
const MAX_EXPIRY_SEC = 365 * 86400;

/** As commander hands them over (lists already split per flag occurrence). */
export interface RawShipFlags {
  config?: string;
  dataPath?: string;
  dataPathAtRest?: string;
  username?: string;
  users?: string[];
  groups?: string[];
  computeNodes?: string[];
  expires?: string;
  json?: boolean;
  quiet?: boolean;
}

export interface ShipOptions {
  configPath: string;
  /** Remote file name of the artifact; its info file is `<name>.info.yaml` beside it. */
  artifactName: string;
  atRestDir: string;
  username?: string;
  users: string[];
  groups: string[];
  nodes: string[];
  expiresInSec?: number;
  json: boolean;
  quiet: boolean;
}

export function shipOptions(raw: RawShipFlags, defaultName: string, cwd = process.cwd()): ShipOptions {
  const atRestDir = remote("--data-path-at-rest", () =>
    checkRemoteDir(
      required(
        raw.dataPathAtRest,
        "--data-path-at-rest",
        "the directory on the supercomputer, e.g. /scratch/p1/alice",
      ),
    ),
  );
  const artifactName = remote("--data-path", () =>
    checkRemoteName(raw.dataPath ? basename(raw.dataPath) : defaultName),
  );
  if (artifactName.endsWith(".part") || artifactName.endsWith(".info.yaml")) {
    throw new UsageError(
      `--data-path ${artifactName} ends like a temporary or info file; choose another name`,
    );
  }
  const nodes = names("node", "-c/--compute-nodes", raw.computeNodes);
  if (nodes.length === 0) {
    throw new UsageError("no compute node given: add -c/--compute-nodes <node>[,<node>…]");
  }
  const users = names("user", "-u/--users", raw.users);
  const groups = names("group", "-g/--groups", raw.groups);
  if (users.length === 0 && groups.length === 0) {
    throw new UsageError("nobody would be able to decrypt it: add -u/--users or -g/--groups");
  }
  const opts: ShipOptions = {
    configPath: resolve(cwd, raw.config ?? DEFAULT_CONFIG),
    artifactName,
    atRestDir,
    users,
    groups,
    nodes,
    json: raw.json === true,
    quiet: raw.quiet === true,
  };
  if (raw.username !== undefined) opts.username = names("user", "--username", [raw.username])[0] ?? "";
  if (raw.expires !== undefined) {
    try {
      opts.expiresInSec = parseDuration(raw.expires, MIN_EXPIRY_SEC, MAX_EXPIRY_SEC);
    } catch (err) {
      if (err instanceof InvalidDurationError) throw new UsageError(`--expires: ${err.message}`);
      throw err;
    }
  }
  return opts;
}

/** commander collector: `-u a -u b,c` → ["a", "b", "c"]. */
export function collectList(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(",").map((v) => v.trim())];
}

export function required(v: string | undefined, flag: string, what: string): string {
  if (v === undefined || v.trim() === "") throw new UsageError(`missing ${flag}: give ${what}`);
  return v;
}

function names(kind: NameKind, flag: string, values: string[] | undefined): string[] {
  const out: string[] = [];
  for (const v of values ?? []) {
    try {
      if (!out.includes(v)) out.push(validateName(kind, v));
    } catch (err) {
      if (err instanceof InvalidNameError) throw new UsageError(`${flag}: ${err.message}`);
      throw err;
    }
  }
  return out;
}

function remote<T>(flag: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
}
