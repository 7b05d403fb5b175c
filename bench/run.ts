/**
 * `npm run bench -- <name> [options]`: benchmarks on the real bench (`npm run stack -- up`), each
 * printing its numbers beside a baseline. Scripts anyone can run, never timed unit tests.
 */

import { CONTAINER_PREP_USAGE, containerPrepBench } from "./container-prep.js";
import { DATA_PREP_USAGE, dataPrepBench } from "./data-prep.js";
import { encryptBench, ENCRYPT_USAGE } from "./encrypt.js";
import { grantBench, GRANT_USAGE } from "./grant.js";
import { jobBench, JOB_USAGE } from "./job.js";
import { uploadBench, UPLOAD_USAGE } from "./upload.js";

type Bench = (argv: string[]) => Promise<number>;

const BENCHES: Record<string, { run: Bench; usage: string }> = {
  grant: { run: grantBench, usage: GRANT_USAGE },
  upload: { run: uploadBench, usage: UPLOAD_USAGE },
  encrypt: { run: encryptBench, usage: ENCRYPT_USAGE },
  "container-prep": { run: containerPrepBench, usage: CONTAINER_PREP_USAGE },
  "data-prep": { run: dataPrepBench, usage: DATA_PREP_USAGE },
  job: { run: jobBench, usage: JOB_USAGE },
};

function usage(): string {
  return [
    "usage: npm run bench -- <name> [options]",
    "",
    "benchmarks:",
    ...Object.values(BENCHES).map((b) => `  ${b.usage}`),
  ].join("\n");
}

const [name, ...rest] = process.argv.slice(2);
const bench = name !== undefined ? BENCHES[name] : undefined;
if (name === "-h" || name === "--help") {
  process.stdout.write(usage() + "\n");
} else if (!bench) {
  process.stderr.write(
    (name === undefined ? "no benchmark named\n" : `unknown benchmark ${JSON.stringify(name)}\n`) +
      usage() +
      "\n",
  );
  process.exitCode = 2;
} else {
  try {
    process.exitCode = await bench.run(rest);
  } catch (err) {
    process.stderr.write(`bench ${name}: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
