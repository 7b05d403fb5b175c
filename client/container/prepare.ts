/**
 * The "prepared image": the original's sd-container layout added to a flattened root filesystem.
 *
 *   /sd-container/input, output, scratch, keys, encrypted    mount points for the job runtime
 *   /sd-container/tools/input_logic/run    runs the user's input jobs, mounted at …/input_logic/jobs
 *   /sd-container/tools/output_logic/run   runs the user's output jobs, mounted at …/output_logic/jobs
 *   /sd-container/tools/entrypoint         the wrapper every runtime starts (see ENTRYPOINT_SCRIPT)
 *   /sd-container/tools/{entrypoint,cmd,workdir}.argv   the image's own ENTRYPOINT, CMD and WORKDIR,
 *                                          encoded for the wrapper (argv-encoding.ts)
 *   /sd-container/image-config.json        the original config (env, workdir, user…) for runc/crun
 *   /.singularity.d/runscript, env/90-environment.sh   what apptainer/singularity run and source
 *
 * All scripts are POSIX sh (busybox ash runs them), and no script interprets data as code: the wrapper
 * rebuilds "$@" from the .argv files with printf '%b' (no eval, no `sh -c`); the environment file for
 * apptainer is generated with single-quoted values. An existing /sd-container is replaced (an image
 * prepared twice gets the current tools), never merged.
 */

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeArg, encodeArgv } from "./argv-encoding.js";
import type { ImageConfig } from "./image-source.js";
import { lstatOrUndefined, resolveInRoot } from "./in-root-path.js";
import type { FileAttrs, Rootfs } from "./rootfs.js";

export const SD_ROOT = "/sd-container";
export const ENTRYPOINT_PATH = "/sd-container/tools/entrypoint";
export const IMAGE_CONFIG_PATH = "/sd-container/image-config.json";
/** Files the wrapper writes into the output volume. */
export const OUTPUT_FILES = { stdout: "stdout.log", stderr: "stderr.log", exitCode: "exit_code" } as const;

/** What the runtime reads from /sd-container/image-config.json. */
export interface PreparedImageConfig {
  version: 1;
  /** The original image's ID. Not its tag or file name: the tree must not depend on how it was opened. */
  configDigest: string;
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
  architecture: string;
  /** What to run: the wrapper, followed by the job's arguments (which replace CMD when given). */
  wrapper: string;
  outputFiles: typeof OUTPUT_FILES;
}

export interface PrepareOptions {
  config: ImageConfig;
  configDigest: string;
  /** mtime of everything added (seconds): the image's creation time keeps builds reproducible. */
  mtime: number;
}

/** The input or output logic runner. */
export const runnerScript = (kind: "input" | "output"): string => `#!/bin/sh
# sd-container ${kind} logic (written by hpcs container-prep).
# Runs the user's ${kind} jobs: every regular file in ${SD_ROOT}/tools/${kind}_logic/jobs, in name
# order (dot-files skipped), an executable file directly and any other file with sh. Stops at the
# first job that fails and exits with its code; no jobs (or no jobs directory) is success.
set -u
jobs=${SD_ROOT}/tools/${kind}_logic/jobs
[ -d "$jobs" ] || exit 0
for job in "$jobs"/*; do
  [ -f "$job" ] || continue
  name=\${job##*/}
  printf '[sd-container] ${kind} logic: running %s\\n' "$name" >&2
  if [ -x "$job" ]; then
    "$job"
  else
    sh "$job"
  fi
  rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '[sd-container] ${kind} logic: %s failed (exit %s)\\n' "$name" "$rc" >&2
    exit "$rc"
  fi
done
exit 0
`;

export const ENTRYPOINT_SCRIPT = `#!/bin/sh
# sd-container entrypoint (written by hpcs container-prep). In order:
#   1. ${SD_ROOT}/tools/input_logic/run; if it fails, the application is not started and this exits
#      with its code;
#   2. the image's ENTRYPOINT followed by this script's arguments, or by the image's CMD when there are
#      none (Docker's rule), in the image's WORKDIR. Exec form: every argument reaches the program
#      exactly as given. The image's own arguments come from entrypoint.argv / cmd.argv, one per
#      line, bytes outside [A-Za-z0-9_./,:=+@-] written as \\0ooo and decoded by printf %b; "$@" is
#      rebuilt with set --, never with eval or sh -c. Its stdout, stderr and exit code go to
#      ${SD_ROOT}/output/${OUTPUT_FILES.stdout}, ${OUTPUT_FILES.stderr} and ${OUTPUT_FILES.exitCode}; TERM, INT and HUP are passed on to it;
#   3. ${SD_ROOT}/tools/output_logic/run, with SD_APP_EXIT_CODE set;
# then exits with the application's code (or the output logic's, if the application succeeded and
# the output logic failed).
set -u
tools=${SD_ROOT}/tools
out=${SD_ROOT}/output
say() { printf '[sd-container] %s\\n' "$*" >&2; }

# (printf, not ':': a failed redirection of a special built-in would end the shell right here.)
if ! printf '' >"$out/${OUTPUT_FILES.exitCode}" 2>/dev/null; then
  say "cannot write to $out: mount a writable output volume there"
  exit 70
fi

# "$@" = the job's arguments. Append the ENTRYPOINT, then move the job's arguments behind it.
n=$#
while IFS= read -r enc; do
  arg=$(printf '%bx' "$enc")
  set -- "$@" "\${arg%x}"
done <"$tools/entrypoint.argv"
i=0
while [ "$i" -lt "$n" ]; do
  arg=$1
  shift
  set -- "$@" "$arg"
  i=$((i + 1))
done
if [ "$n" -eq 0 ]; then
  while IFS= read -r enc; do
    arg=$(printf '%bx' "$enc")
    set -- "$@" "\${arg%x}"
  done <"$tools/cmd.argv"
fi
if [ "$#" -eq 0 ]; then
  say "nothing to run: the image has no ENTRYPOINT or CMD and the job gave no arguments"
  printf '127\\n' >"$out/${OUTPUT_FILES.exitCode}"
  exit 127
fi
workdir=
while IFS= read -r enc; do
  workdir=$(printf '%bx' "$enc")
  workdir=\${workdir%x}
done <"$tools/workdir.argv"

"$tools/input_logic/run"
rc=$?
if [ "$rc" -ne 0 ]; then
  say "input logic failed (exit $rc): the application was not started"
  rm -f "$out/${OUTPUT_FILES.exitCode}"
  exit "$rc"
fi

if [ -n "$workdir" ] && ! cd "$workdir"; then
  say "cannot enter the image's WORKDIR $workdir"
  printf '126\\n' >"$out/${OUTPUT_FILES.exitCode}"
  exit 126
fi

# In the background so that signals reach this shell (and are passed on) while the application runs;
# an asynchronous command's stdin would be /dev/null, so the real stdin is handed over on fd 3.
exec 3<&0
"$@" <&3 3<&- >"$out/${OUTPUT_FILES.stdout}" 2>"$out/${OUTPUT_FILES.stderr}" &
child=$!
exec 3<&-
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
trap 'kill -HUP "$child" 2>/dev/null' HUP
while :; do
  wait "$child"
  rc=$?
  # wait returns early when a trapped signal arrives; the application may still be running.
  kill -0 "$child" 2>/dev/null || break
done
trap - TERM INT HUP
printf '%s\\n' "$rc" >"$out/${OUTPUT_FILES.exitCode}"

SD_APP_EXIT_CODE=$rc
export SD_APP_EXIT_CODE
cd / || exit "$rc"
"$tools/output_logic/run"
orc=$?
if [ "$orc" -ne 0 ]; then
  say "output logic failed (exit $orc)"
  if [ "$rc" -eq 0 ]; then rc=$orc; fi
fi
exit "$rc"
`;

const RUNSCRIPT = `#!/bin/sh
# apptainer/singularity runscript (written by hpcs container-prep): the sd-container entrypoint.
exec ${ENTRYPOINT_PATH} "$@"
`;

const SHELL_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The image's Env as sh assignments for apptainer, single-quoted (a quote is written '\\''). */
export function environmentScript(env: readonly string[]): string {
  const lines = ["#!/bin/sh", "# The original image's environment (written by hpcs container-prep)."];
  for (const kv of env) {
    const eq = kv.indexOf("=");
    const name = eq < 0 ? kv : kv.slice(0, eq);
    const value = eq < 0 ? "" : kv.slice(eq + 1);
    if (!SHELL_NAME.test(name)) {
      lines.push(`# skipped, not a shell variable name: ${JSON.stringify(name)}`);
      continue;
    }
    lines.push(`${name}='${value.replace(/'/g, "'\\''")}'`, `export ${name}`);
  }
  return lines.join("\n") + "\n";
}

/** Adds the sd-container layout to `rootfs` (content and attributes). Throws if the image has no /bin/sh. */
export function addSdContainerLayout(rootfs: Rootfs, opts: PrepareOptions): PreparedImageConfig {
  const shKey = resolveInRoot(rootfs.dir, "bin/sh", { followLast: true });
  if (!lstatOrUndefined(join(rootfs.dir, shKey))?.isFile()) {
    throw new Error(
      "the image has no /bin/sh: the sd-container entrypoint wrapper is a POSIX shell script; " +
        "base the image on one with a shell (e.g. add busybox)",
    );
  }
  const c = opts.config;
  const prepared: PreparedImageConfig = {
    version: 1,
    configDigest: opts.configDigest,
    entrypoint: c.entrypoint,
    cmd: c.cmd,
    env: c.env,
    workingDir: c.workingDir,
    user: c.user,
    architecture: c.architecture,
    wrapper: ENTRYPOINT_PATH,
    outputFiles: OUTPUT_FILES,
  };
  const w = new TreeWriter(rootfs, opts.mtime);
  w.replaceDir("sd-container", 0o755);
  for (const d of ["input", "output", "scratch", "encrypted", "tools"]) w.dir(`sd-container/${d}`, 0o755);
  w.dir("sd-container/keys", 0o700);
  for (const kind of ["input", "output"] as const) {
    w.dir(`sd-container/tools/${kind}_logic`, 0o755);
    w.dir(`sd-container/tools/${kind}_logic/jobs`, 0o755);
    w.file(`sd-container/tools/${kind}_logic/run`, runnerScript(kind), 0o755);
  }
  w.file("sd-container/tools/entrypoint", ENTRYPOINT_SCRIPT, 0o755);
  w.file("sd-container/tools/entrypoint.argv", encodeArgv(c.entrypoint, "ENTRYPOINT argument"), 0o644);
  w.file("sd-container/tools/cmd.argv", encodeArgv(c.cmd, "CMD argument"), 0o644);
  w.file(
    "sd-container/tools/workdir.argv",
    c.workingDir === "" ? "" : `${encodeArg(c.workingDir, "WORKDIR")}\n`,
    0o644,
  );
  w.file("sd-container/image-config.json", JSON.stringify(prepared, null, 2) + "\n", 0o644);

  w.dir(".singularity.d", 0o755);
  for (const d of ["env", "actions", "libs"]) w.dir(`.singularity.d/${d}`, 0o755);
  w.file(".singularity.d/runscript", RUNSCRIPT, 0o755);
  w.file(".singularity.d/env/90-environment.sh", environmentScript(c.env), 0o755);
  return prepared;
}

/** Writes root-owned files and directories into the tree, through in-root path resolution. */
class TreeWriter {
  constructor(
    private readonly rootfs: Rootfs,
    private readonly mtime: number,
  ) {}

  replaceDir(rel: string, mode: number): void {
    const key = this.key(rel);
    rmSync(join(this.rootfs.dir, key), { recursive: true, force: true });
    this.dir(rel, mode);
  }

  dir(rel: string, mode: number): void {
    const key = this.key(rel);
    const st = lstatOrUndefined(join(this.rootfs.dir, key));
    if (!st?.isDirectory()) {
      rmSync(join(this.rootfs.dir, key), { recursive: true, force: true });
      mkdirSync(join(this.rootfs.dir, key), { mode: 0o700 });
    }
    this.set(key, mode);
  }

  file(rel: string, content: string, mode: number): void {
    const key = this.key(rel);
    rmSync(join(this.rootfs.dir, key), { recursive: true, force: true });
    writeFileSync(join(this.rootfs.dir, key), content, { mode: 0o600, flag: "wx" });
    this.set(key, mode);
  }

  private key(rel: string): string {
    const key = resolveInRoot(this.rootfs.dir, rel, {
      create: (k) => this.set(k, 0o755),
    });
    this.rootfs.specials.delete(key);
    return key;
  }

  private set(key: string, mode: number): void {
    const attrs: FileAttrs = { mode, uid: 0, gid: 0, mtime: this.mtime };
    this.rootfs.attrs.set(key, attrs);
  }
}
