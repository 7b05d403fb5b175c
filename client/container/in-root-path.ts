/**
 * Paths inside a root filesystem directory, resolved the way the container will see them: symbolic
 * links in the path are followed as if the root directory were `/`, so `..` and absolute link targets
 * stop at the root and nothing outside it is ever reached (the "secure join" of container runtimes).
 *
 * Layer entries may legitimately go through links (`lib -> usr/lib` on merged-/usr distributions), and
 * a hostile layer may plant `etc -> /etc` and then write `etc/passwd`: resolving every component here,
 * instead of letting the kernel follow links, gives the first its meaning and makes the second land
 * at `<root>/etc/passwd`.
 */

import { lstatSync, mkdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";

/** Linux's own limit on links followed while resolving one path. */
const MAX_LINKS = 40;

export interface ResolveOptions {
  /** Follow a symbolic link in the last component too (default: no — the last one is what we create). */
  followLast?: boolean;
  /**
   * Create missing directories on the way (the last component too when `followLast`: the path is then
   * a directory to be), calling `create` with each one's key; without it, missing directories are part
   * of the key as named.
   */
  create?: (key: string) => void;
}

/**
 * Resolves `rel` (a path inside `root`, `/`-separated) to its key: the real path relative to `root`,
 * without `.`/`..`/empty components or links ("" is the root itself). Throws one line if a non-last
 * component is not a directory or links loop.
 */
export function resolveInRoot(root: string, rel: string, opts: ResolveOptions = {}): string {
  const pending = rel.split("/");
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const c = pending.shift() as string;
    if (c === "" || c === ".") continue;
    if (c === "..") {
      done.pop();
      continue;
    }
    const isLast = pending.every((p) => p === "" || p === ".");
    if (isLast && !opts.followLast) {
      done.push(c);
      break;
    }
    const key = [...done, c].join("/");
    const st = lstatOrUndefined(join(root, key));
    if (st?.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new Error(`too many levels of symbolic links in ${JSON.stringify(rel)}`);
      const target = readlinkSync(join(root, key));
      if (target.startsWith("/")) done.length = 0;
      pending.unshift(...target.split("/"));
      continue;
    }
    if (isLast) {
      if (st === undefined && opts.create) {
        mkdirSync(join(root, key), { mode: 0o700 });
        opts.create(key);
      }
      done.push(c);
      break;
    }
    if (st === undefined) {
      if (!opts.create) {
        // Everything below a missing directory is missing too (lstat says ENOENT): keep going.
        done.push(c);
        continue;
      }
      mkdirSync(join(root, key), { mode: 0o700 });
      opts.create(key);
    } else if (!st.isDirectory()) {
      throw new Error(`${JSON.stringify(rel)}: /${key} is not a directory`);
    }
    done.push(c);
  }
  return done.join("/");
}

export function lstatOrUndefined(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
