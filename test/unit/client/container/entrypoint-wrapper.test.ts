/**
 * The entrypoint wrapper and the runners, run by real shells (dash as /bin/sh, and busybox ash when
 * installed — the test images are busybox-based) in a scratch copy of the /sd-container tree. Only the
 * tree's location differs from the real image; the scripts are the ones prepare.ts writes.
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeArgv, encodeArg, encodeArgv } from "../../../../client/container/argv-encoding.js";
import {
  ENTRYPOINT_SCRIPT,
  environmentScript,
  runnerScript,
  SD_ROOT,
} from "../../../../client/container/prepare.js";

const TRICKY = [
  "two words",
  "it's",
  '"double"',
  "",
  "line1\nline2\n",
  "tab\there",
  "$HOME `id` $(id) ; rm -rf / & | > <",
  "back\\slash \\n \\0101 %s %b",
  "-n",
  "-e",
  " leading and trailing ",
  "ü € 😀",
  "*",
  "x",
];

/** The app: node printing its argv as JSON, so the test sees exactly what arrived. */
const APP = [process.execPath, "-e", "process.stdout.write(JSON.stringify(process.argv.slice(1)))"];

function shells(): string[][] {
  const out = [["/bin/sh"]];
  for (const bb of ["/usr/bin/busybox", "/bin/busybox"]) {
    if (existsSync(bb)) {
      out.push([bb, "sh"]);
      break;
    }
  }
  return out;
}

describe("client/container/argv-encoding", () => {
  it("round-trips any argument and writes only safe characters and octal escapes", () => {
    const text = encodeArgv(TRICKY);
    assert.deepEqual(decodeArgv(text), TRICKY);
    assert.match(text, /^[A-Za-z0-9_./,:=+@\\\n-]*$/);
    assert.equal(text.split("\n").length, TRICKY.length + 1);
    assert.equal(encodeArg("a b"), "a\\0040b");
    assert.deepEqual(decodeArgv(""), []);
  });

  it("refuses NUL, which no program can receive", () => {
    assert.throws(() => encodeArgv(["ok", "a\0b"], "CMD argument"), /CMD argument 2 contains a NUL byte/);
  });
});

for (const shell of shells()) {
  describe(`sd-container entrypoint wrapper under ${shell.join(" ")}`, () => {
    let tmp: string;
    let sd: string;

    beforeEach(() => {
      tmp = mkdtempSync(join(tmpdir(), "sd-wrapper-"));
      sd = join(tmp, "sd-container");
      for (const d of ["output", "tools/input_logic/jobs", "tools/output_logic/jobs"]) {
        mkdirSync(join(sd, d), { recursive: true });
      }
      for (const kind of ["input", "output"] as const) {
        const runner = join(sd, `tools/${kind}_logic/run`);
        writeFileSync(runner, runnerScript(kind).replaceAll(SD_ROOT, sd), { mode: 0o755 });
      }
      setImage(APP, ["from", "CMD with space"], "");
    });
    afterEach(() => rmSync(tmp, { recursive: true, force: true }));

    function setImage(entrypoint: string[], cmd: string[], workdir: string): void {
      writeFileSync(join(sd, "tools/entrypoint.argv"), encodeArgv(entrypoint));
      writeFileSync(join(sd, "tools/cmd.argv"), encodeArgv(cmd));
      writeFileSync(join(sd, "tools/workdir.argv"), workdir ? `${encodeArg(workdir)}\n` : "");
    }
    function run(args: string[]): { status: number | null; stderr: string } {
      const script = join(sd, "tools/entrypoint");
      writeFileSync(script, ENTRYPOINT_SCRIPT.replaceAll(SD_ROOT, sd), { mode: 0o755 });
      const r = spawnSync(shell[0] as string, [...shell.slice(1), script, ...args], {
        encoding: "utf8",
        timeout: 30_000,
      });
      return { status: r.status, stderr: r.stderr };
    }
    const out = (name: string): string => readFileSync(join(sd, "output", name), "utf8");

    it("passes the job's arguments through exactly, after the ENTRYPOINT, replacing CMD", () => {
      const r = run(TRICKY);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(out("stdout.log")), TRICKY);
      assert.equal(out("exit_code"), "0\n");
    });

    it("uses CMD when the job gives no arguments, and ENTRYPOINT arguments survive encoding", () => {
      setImage([...APP, "ep arg 'q'", ""], ["cmd\narg", "*"], "");
      const r = run([]);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(out("stdout.log")), ["ep arg 'q'", "", "cmd\narg", "*"]);
    });

    it("records stdout, stderr and the exit code, and exits with the application's code", () => {
      setImage(["/bin/sh", "-c", 'echo "out:$1"; echo "err:$2" >&2; exit 42', "sh"], [], "");
      const r = run(["a b", "c'd"]);
      assert.equal(r.status, 42);
      assert.equal(out("stdout.log"), "out:a b\n");
      assert.equal(out("stderr.log"), "err:c'd\n");
      assert.equal(out("exit_code"), "42\n");
    });

    it("runs in the image's WORKDIR", () => {
      const wd = join(tmp, "work dir");
      mkdirSync(wd);
      setImage(["/bin/sh", "-c", "pwd"], [], wd);
      assert.equal(run([]).status, 0);
      assert.equal(out("stdout.log"), `${wd}\n`);
    });

    it("runs input jobs before and output jobs after, in name order, with the app's code", () => {
      const marker = join(tmp, "order");
      writeFileSync(join(sd, "tools/input_logic/jobs/10-first"), `#!/bin/sh\necho in1 >>'${marker}'\n`, {
        mode: 0o755,
      });
      writeFileSync(join(sd, "tools/input_logic/jobs/20-second.sh"), `echo in2 >>'${marker}'\n`); // not executable: sh
      writeFileSync(join(sd, "tools/input_logic/jobs/.hidden"), `echo hidden >>'${marker}'\n`);
      writeFileSync(
        join(sd, "tools/output_logic/jobs/50-out"),
        `#!/bin/sh\necho "out $SD_APP_EXIT_CODE" >>'${marker}'\n`,
        { mode: 0o755 },
      );
      setImage(["/bin/sh", "-c", `echo app >>'${marker}'; exit 3`], [], "");
      assert.equal(run([]).status, 3);
      assert.equal(readFileSync(marker, "utf8"), "in1\nin2\napp\nout 3\n");
    });

    it("does not start the application when an input job fails", () => {
      const marker = join(tmp, "app-ran");
      writeFileSync(join(sd, "tools/input_logic/jobs/check"), "#!/bin/sh\nexit 9\n", { mode: 0o755 });
      setImage(["/bin/sh", "-c", `touch '${marker}'`], [], "");
      const r = run([]);
      assert.equal(r.status, 9);
      assert.match(r.stderr, /input logic failed \(exit 9\)/);
      assert.equal(existsSync(marker), false);
      assert.equal(existsSync(join(sd, "output/exit_code")), false);
    });

    it("reports an output job's failure when the application succeeded", () => {
      writeFileSync(join(sd, "tools/output_logic/jobs/seal"), "#!/bin/sh\nexit 5\n", { mode: 0o755 });
      setImage(["/bin/sh", "-c", "exit 0"], [], "");
      const r = run([]);
      assert.equal(r.status, 5);
      assert.equal(out("exit_code"), "0\n");
    });

    it("says so when there is nothing to run, and when the output volume is not writable", () => {
      setImage([], [], "");
      const r = run([]);
      assert.equal(r.status, 127);
      assert.match(r.stderr, /nothing to run/);
      // Not a directory (a mode would not stop root, who runs these tests on the bench).
      rmSync(join(sd, "output"), { recursive: true });
      writeFileSync(join(sd, "output"), "");
      const w = run(["x"]);
      assert.equal(w.status, 70);
      assert.match(w.stderr, /cannot write to .*output: mount a writable output volume/);
    });
  });
}

describe("client/container/prepare environmentScript", () => {
  it("single-quotes values and skips names sh cannot hold", () => {
    const text = environmentScript(["PATH=/usr/bin:/bin", "Q=it's $x", "EMPTY=", "bad-name=1", "NOEQ"]);
    const dir = mkdtempSync(join(tmpdir(), "sd-env-"));
    const file = join(dir, "90-environment.sh");
    writeFileSync(file, text);
    const r = spawnSync("/bin/sh", ["-c", `. "$1"; printf '%s|' "$PATH" "$Q" "$EMPTY" "$NOEQ"`, "sh", file], {
      encoding: "utf8",
    });
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.stdout, "/usr/bin:/bin|it's $x|||");
    assert.match(text, /# skipped, not a shell variable name: "bad-name"/);
  });
});
