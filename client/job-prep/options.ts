/**
 * `hpcs job-prep` flags → validated options, all checked before the first side effect (exit 2, one
 * line naming the flag and the fix). The original's flags keep their spelling and meaning:
 *
 *   -J/--job-name  -N/--nodes  -p/--partition  -t/--time  -A/--account  -w/--nodelist   (sbatch's)
 *   -s/--workdir                       cluster directory the job works in; results land in <workdir>/output
 *   -ai/--application-info             info file of the container (cluster path)
 *   -di/--data-info                    info file of a dataset (cluster path; repeat for several)
 *   -i/--supplementary-input-scripts   cluster dir of input verification scripts
 *   -o/--supplementary-output-scripts  cluster dir of output verification scripts
 *   -flags/--singularity-supplementary-flags   extra container runtime flags, split on whitespace
 *   -args/--arguments                  the app's arguments as one string, split on whitespace
 *   -f/--follow                        stream the job's output while it runs
 *
 * Commander reads `-ai` as `-a -i`, so the original's multi-letter short flags are rewritten to their
 * long forms first (whole tokens only, never an option's value, never after `--`). Whatever follows
 * `--` is the app's arguments verbatim, one argv each: the way to pass an argument with spaces or
 * quotes. Nothing here is ever parsed by a shell.
 */

import { dirname, resolve } from "node:path";
import { InvalidNameError, validateName } from "../../lib/names.js";
import { checkRemoteDir } from "../ssh/remote-name.js";
import { DEFAULT_CONFIG, required } from "../ship-options.js";
import { UsageError } from "../usage-error.js";

export const RUNTIMES = ["auto", "apptainer", "singularity", "runc", "crun"] as const;
export type Runtime = (typeof RUNTIMES)[number];

export const DEFAULT_JOB_NAME = "hpcs-job";

/** The original's multi-letter short flags and the long flag each one means. */
export const MULTI_LETTER_FLAGS: Readonly<Record<string, string>> = {
  "-ai": "--application-info",
  "-di": "--data-info",
  "-flags": "--singularity-supplementary-flags",
  "-args": "--arguments",
};

/** job-prep's flags that take a value: the token after one of them is a value, never rewritten. */
const VALUE_FLAGS = new Set([
  "--config",
  "-J",
  "--job-name",
  "-N",
  "--nodes",
  "-p",
  "--partition",
  "-t",
  "--time",
  "-A",
  "--account",
  "-w",
  "--nodelist",
  "-s",
  "--workdir",
  "--application-info",
  "--data-info",
  "-i",
  "--supplementary-input-scripts",
  "-o",
  "--supplementary-output-scripts",
  "--singularity-supplementary-flags",
  "--arguments",
  "--runtime",
  "--keys-dir",
  "--output-dir",
]);

export interface PreparedArgv {
  /** What commander parses: the multi-letter short flags rewritten, without `--` and what follows it. */
  argv: string[];
  /** The words after `--` (job-prep only), verbatim; undefined when there was no `--`. */
  literalArgs?: string[];
}

/**
 * Rewrites `hpcs job-prep …`'s multi-letter short flags and splits off what follows `--`. `argv` is
 * process.argv (node, script, …). Other subcommands pass through untouched.
 */
export function prepareJobPrepArgv(argv: readonly string[]): PreparedArgv {
  const head = argv.slice(0, 2);
  const rest = argv.slice(2);
  if (rest[0] !== "job-prep") return { argv: [...argv] };
  const out = [...head, "job-prep"];
  let expectValue = false;
  for (let i = 1; i < rest.length; i++) {
    const tok = rest[i] as string;
    if (expectValue) {
      out.push(tok);
      expectValue = false;
      continue;
    }
    if (tok === "--") return { argv: out, literalArgs: rest.slice(i + 1) };
    const long = MULTI_LETTER_FLAGS[tok] ?? tok;
    out.push(long);
    expectValue = VALUE_FLAGS.has(long);
  }
  return { argv: out };
}

/** As commander hands them over. */
export interface RawJobPrepFlags {
  config?: string;
  jobName?: string;
  nodes?: string;
  partition?: string;
  time?: string;
  account?: string;
  nodelist?: string;
  workdir?: string;
  applicationInfo?: string;
  dataInfo?: string[];
  supplementaryInputScripts?: string;
  supplementaryOutputScripts?: string;
  singularitySupplementaryFlags?: string;
  arguments?: string;
  follow?: boolean;
  wait?: boolean;
  runtime?: string;
  keysDir?: string;
  json?: boolean;
  quiet?: boolean;
  /** Filled by the CLI from what followed `--`. */
  literalArgs?: string[];
}

export interface JobPrepOptions {
  configPath: string;
  keysDir: string;
  jobName: string;
  nodes?: number;
  partition?: string;
  time?: string;
  account?: string;
  nodelist?: string;
  workdir: string;
  appInfo: string;
  dataInfo: string[];
  inputScripts?: string;
  outputScripts?: string;
  singularityFlags: string[];
  args: string[];
  follow: boolean;
  wait: boolean;
  runtime: Runtime;
  json: boolean;
  quiet: boolean;
}

export function jobPrepOptions(raw: RawJobPrepFlags, cwd = process.cwd()): JobPrepOptions {
  const configPath = resolve(cwd, raw.config ?? DEFAULT_CONFIG);
  const workdir = remoteDir(
    "-s/--workdir",
    required(raw.workdir, "-s/--workdir", "the job's directory on the supercomputer, e.g. /scratch/p1/alice"),
  );
  const appInfo = remoteDir(
    "-ai/--application-info",
    required(
      raw.applicationInfo,
      "-ai/--application-info",
      "the container's info file on the supercomputer (<image>.sif.gpg.info.yaml)",
    ),
  );
  const dataInfo = (raw.dataInfo ?? []).map((p) => remoteDir("-di/--data-info", p));
  if (new Set(dataInfo).size !== dataInfo.length) {
    throw new UsageError("-di/--data-info: the same info file is given twice; give each dataset once");
  }
  if (raw.follow === true && raw.wait === false) {
    throw new UsageError("-f/--follow and --no-wait contradict each other: give one of them");
  }
  const args = splitWords(stripQuotes(raw.arguments ?? ""));
  if (args.length > 0 && raw.literalArgs !== undefined) {
    throw new UsageError(
      "the app's arguments are given twice: use -args STRING or put them after --, not both",
    );
  }
  const opts: JobPrepOptions = {
    configPath,
    keysDir: resolve(cwd, raw.keysDir ?? dirname(configPath)),
    jobName: jobName(raw.jobName ?? DEFAULT_JOB_NAME),
    workdir,
    appInfo,
    dataInfo,
    singularityFlags: splitWords(stripQuotes(raw.singularitySupplementaryFlags ?? "")),
    args: raw.literalArgs ?? args,
    follow: raw.follow === true,
    wait: raw.wait !== false,
    runtime: runtime(raw.runtime ?? "auto"),
    json: raw.json === true,
    quiet: raw.quiet === true,
  };
  if (raw.nodes !== undefined) opts.nodes = nodes(raw.nodes);
  if (raw.partition !== undefined) opts.partition = slurmWord("-p/--partition", raw.partition, "debug");
  if (raw.account !== undefined) opts.account = slurmWord("-A/--account", raw.account, "project_462000031");
  if (raw.nodelist !== undefined) opts.nodelist = nodelist(raw.nodelist);
  if (raw.time !== undefined) opts.time = slurmTime(raw.time);
  if (raw.supplementaryInputScripts !== undefined) {
    opts.inputScripts = remoteDir("-i/--supplementary-input-scripts", raw.supplementaryInputScripts);
  }
  if (raw.supplementaryOutputScripts !== undefined) {
    opts.outputScripts = remoteDir("-o/--supplementary-output-scripts", raw.supplementaryOutputScripts);
  }
  return opts;
}

/**
 * The original's compose file quotes values twice (`"\"00:60:00\""`, `"\" /sd-container/… \""`):
 * surrounding `"`, `'` or `\"` pairs are removed, layer by layer, together with the blanks inside them.
 */
export function stripQuotes(value: string): string {
  let s = value.trim();
  for (;;) {
    const pair = [`\\"`, `"`, `'`].find((q) => s.length >= 2 * q.length && s.startsWith(q) && s.endsWith(q));
    if (!pair) return s;
    s = s.slice(pair.length, s.length - pair.length).trim();
  }
}

/** Whitespace-separated words; no quoting, escaping or expansion of any kind. */
export function splitWords(value: string): string[] {
  return value.split(/\s+/).filter((w) => w !== "");
}

/** A job name ends up in the job directory's and the result's file names: a strict whitelist. */
function jobName(v: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(v) || v.includes("..")) {
    throw new UsageError(
      `-J/--job-name ${JSON.stringify(v)}: use letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit), e.g. jp2a-run`,
    );
  }
  return v;
}

function nodes(v: string): number {
  if (!/^[1-9][0-9]{0,5}$/.test(v.trim())) {
    throw new UsageError(`-N/--nodes ${JSON.stringify(v)}: give a positive number of nodes, e.g. 1`);
  }
  return Number(v.trim());
}

function slurmWord(flag: string, v: string, example: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(v)) {
    throw new UsageError(
      `${flag} ${JSON.stringify(v)}: use letters, digits, '_', '.' or '-', e.g. ${example}`,
    );
  }
  return v;
}

/** A Slurm host list (`nid[001-004],nid010`), each host name as lib/names.ts's `node` rule wants. */
function nodelist(v: string): string {
  const fail = (): never => {
    throw new UsageError(
      `-w/--nodelist ${JSON.stringify(v)}: give host names or a Slurm host list, e.g. nid003044 or nid[001-004]`,
    );
  };
  if (v.length > 1024) fail();
  // Split on commas outside brackets.
  const parts = v.match(/(?:[^,[\]]|\[[0-9,-]+\])+/g) ?? [];
  if (parts.join(",") !== v) fail();
  for (const part of parts) {
    const bare = part.replace(/\[[0-9,-]+\]/g, "0");
    try {
      validateName("node", bare);
    } catch (err) {
      if (err instanceof InvalidNameError) fail();
      throw err;
    }
  }
  return v;
}

/** sbatch's time formats (and the original's doubly quoted `"\"00:60:00\""`). */
function slurmTime(raw: string): string {
  const v = stripQuotes(raw);
  const ok =
    /^(?:UNLIMITED|INFINITE)$/i.test(v) ||
    /^\d{1,6}(?::\d{1,2}){0,2}$/.test(v) ||
    /^\d{1,4}-\d{1,2}(?::\d{1,2}){0,2}$/.test(v);
  if (!ok) {
    throw new UsageError(
      `-t/--time ${JSON.stringify(raw)}: use a Slurm time, e.g. 30, 01:00:00 or 1-12:00:00`,
    );
  }
  return v;
}

function runtime(v: string): Runtime {
  if (!(RUNTIMES as readonly string[]).includes(v)) {
    throw new UsageError(`--runtime ${JSON.stringify(v)}: use one of ${RUNTIMES.join(", ")}`);
  }
  return v as Runtime;
}

function remoteDir(flag: string, v: string): string {
  try {
    const dir = checkRemoteDir(stripQuotes(v));
    return dir.length > 1 ? dir.replace(/\/$/, "") : dir;
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
}
