/**
 * A directory → tar byte stream made by GNU tar in a child process, the tool data-prep uses when the
 * machine has it (the client image does; see tar-stream.ts for the choice and the builtin fallback).
 *
 * Why a process rather than node-tar: on the data-prep bench node-tar cost ~1 s of CPU per GiB in the
 * encryption worker (its reads, headers and stream plumbing) and ~60 MiB of peak RSS (its read buffers,
 * several files in flight); GNU tar reads with one reused buffer, on a core of its own, and the worker
 * only encrypts what arrives on the pipe. Measured in bench/README.md "data-prep".
 *
 * The archive matches tar-stream.ts' builtin one entry for entry: relative names ("./a/b"), symlinks
 * kept as links (tar never follows them without -h), no owner names or ids, no atime/ctime, and no pax
 * header per file for sub-second mtimes (the node extracts with GNU tar either way).
 *
 * A tar that fails — an unreadable file, a file that changed or shrank while being read — exits
 * non-zero only after it has written everything it could, so the stream ends only once tar has exited
 * 0; otherwise it fails with tar's own first line. An archive silently missing files is never uploaded.
 */

import { execFile, spawn } from "node:child_process";
import { Readable } from "node:stream";

/** `--sort=name` (a reproducible archive whatever the directory order) arrived in GNU tar 1.28. */
const MIN_VERSION: readonly [number, number] = [1, 28];
/** Enough of tar's stderr to name the problem; the rest is dropped. */
const MAX_STDERR = 4096;

/** The version ("1.34") if `command` is GNU tar recent enough for the options below, else undefined. */
export function findGnuTar(command = "tar"): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(command, ["--version"], { timeout: 5000 }, (err, stdout) => {
      const m = err ? null : /^tar \(GNU tar\) (\d+)\.(\d+)/.exec(stdout);
      if (!m) return resolve(undefined);
      const version: [number, number] = [Number(m[1]), Number(m[2])];
      const recent =
        version[0] > MIN_VERSION[0] || (version[0] === MIN_VERSION[0] && version[1] >= MIN_VERSION[1]);
      resolve(recent ? version.join(".") : undefined);
    });
  });
}

/**
 * The tar stream of `dir` (already checked readable by the caller), written by `command`. Destroying
 * the stream kills tar; tar failing destroys the stream with one line naming `dir` and tar's reason.
 */
export function gnuTarStream(dir: string, command = "tar"): Readable {
  const args = [
    "--create",
    "--file=-",
    `--directory=${dir}`,
    "--format=posix",
    "--pax-option=delete=atime,delete=ctime,delete=mtime",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--sort=name",
    // 64 KiB records: whole pipe-fulls per write, a tenth of the default's system calls.
    "--blocking-factor=128",
    "--",
    ".",
  ];
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  const quoted = JSON.stringify(dir);
  let stderr = "";
  let stdoutEnded = false;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  const out = new Readable({
    read() {
      child.stdout.resume();
    },
    destroy(err, cb) {
      if (exit === undefined) child.kill("SIGTERM");
      cb(err);
    },
  });
  const settle = (): void => {
    if (!stdoutEnded || exit === undefined || out.destroyed) return;
    if (exit.code === 0) {
      out.push(null);
      return;
    }
    const why =
      firstTarLine(stderr) ?? (exit.signal ? `killed by ${exit.signal}` : `exit status ${exit.code}`);
    out.destroy(new Error(`tar of ${quoted} failed: ${why}`));
  };

  child.stdout.on("data", (chunk: Buffer) => {
    if (!out.push(chunk)) child.stdout.pause();
  });
  child.stdout.on("end", () => {
    stdoutEnded = true;
    settle();
  });
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (s: string) => {
    if (stderr.length < MAX_STDERR) stderr += s;
  });
  child.on("error", (err) => {
    if (!out.destroyed) out.destroy(new Error(`tar of ${quoted} could not start: ${err.message}`));
  });
  // "close", not "exit": by then stderr has been read to its end too.
  child.on("close", (code, signal) => {
    exit = { code, signal };
    settle();
  });
  return out;
}

/** tar's first diagnostic without its "tar: " prefix ("./x: file changed as we read it"). */
function firstTarLine(stderr: string): string | undefined {
  const line = stderr.split("\n").find((l) => l.trim() !== "");
  return line?.replace(/^[^:]*tar: /, "");
}
