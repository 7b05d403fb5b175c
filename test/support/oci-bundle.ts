import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { run, runOk, type RunResult } from "./exec.js";
import type { StackEnv } from "./stack-env.js";

/** runc when the bench has it, else crun: both take the same `spec` / `run` / `delete` commands. */
export function ociRuntime(): "runc" | "crun" {
  return existsSync("/usr/sbin/runc") || existsSync("/usr/bin/runc") ? "runc" : "crun";
}

/** `siftool dump <id> <sif> >out`: one SIF object's bytes (2 is the squashfs partition) into a file. */
export async function dumpSifObject(env: StackEnv, sifPath: string, id: number, out: string): Promise<void> {
  await runOk("sh", [
    "-c",
    'exec "$1" dump "$2" "$3" >"$4"',
    "sh",
    env.tools.siftool,
    String(id),
    sifPath,
    out,
  ]);
}

export interface BundleMount {
  /** Path inside the container. */
  destination: string;
  /** Host path. */
  source: string;
  readonly?: boolean;
}

export interface BundleRun {
  /** The container's ID for the runtime (lower case); deleted after the run whatever happens. */
  id: string;
  /** argv of the container's process. */
  args: string[];
  env: string[];
  cwd?: string;
  mounts?: BundleMount[];
  timeoutMs?: number;
}

/**
 * An OCI runtime bundle (`<dir>/rootfs` + `<dir>/config.json`) made from a SIF the way a compute node
 * would run it without apptainer: the squashfs partition read by siftool (an independent reader) and
 * unpacked by unsquashfs, then the runtime's default spec with a read-only root, the given process and
 * bind mounts. Runs as root (the bench's runtime is not rootless).
 */
export class OciBundle {
  private constructor(
    readonly dir: string,
    readonly runtime: "runc" | "crun",
  ) {}

  get rootfs(): string {
    return join(this.dir, "rootfs");
  }

  /** Unpacks partition 2 of `sifPath` into `<dir>/rootfs` (`dir` is created; it must not hold a rootfs). */
  static async fromSif(env: StackEnv, sifPath: string, dir: string): Promise<OciBundle> {
    await mkdir(dir, { recursive: true });
    const part = join(dir, "partition.sqfs");
    try {
      await dumpSifObject(env, sifPath, 2, part);
      await runOk("unsquashfs", ["-no-progress", "-d", join(dir, "rootfs"), part]);
    } finally {
      await rm(part, { force: true });
    }
    return new OciBundle(dir, ociRuntime());
  }

  /** Writes config.json for `opts` and runs it to the end; the container is deleted afterwards. */
  async run(opts: BundleRun): Promise<RunResult> {
    const config = join(this.dir, "config.json");
    await rm(config, { force: true });
    await runOk(this.runtime, ["spec", "--bundle", this.dir]);
    const spec = JSON.parse(await readFile(config, "utf8"));
    spec.process.terminal = false;
    spec.process.args = opts.args;
    spec.process.env = opts.env;
    spec.process.cwd = opts.cwd ?? "/";
    spec.root = { path: "rootfs", readonly: true };
    for (const m of opts.mounts ?? []) {
      spec.mounts.push({
        destination: m.destination,
        type: "bind",
        source: m.source,
        options: ["rbind", m.readonly ? "ro" : "rw"],
      });
    }
    await writeFile(config, JSON.stringify(spec));
    try {
      return await run(this.runtime, ["run", "--bundle", this.dir, opts.id], {
        timeoutMs: opts.timeoutMs ?? 60_000,
      });
    } finally {
      await run(this.runtime, ["delete", "--force", opts.id]).catch(() => undefined);
    }
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
