import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  InvalidJobParamError,
  type JobArtifact,
  type JobScriptParams,
  jobRuntimePath,
  ociConfigPieces,
  ociEnvFromFlags,
  renderJobScript,
} from "../../../../client/job-prep/job-script.js";
import { shellQuote } from "../../../../client/job-prep/shell-quote.js";

const NASTY = [
  "a b",
  "it's",
  '"double"',
  "$(touch /tmp/pwned)",
  "`id`",
  "; rm -rf ~",
  "$HOME",
  "*",
  "#",
  "\\",
  "'",
  "",
  "tab\there",
  "line\nbreak",
  "ünï",
];

function art(payload: JobArtifact["payload"], name: string, over: Partial<JobArtifact> = {}): JobArtifact {
  return {
    path: `/scratch/alice/${name || "app"}.gpg`,
    sha256: "ab".repeat(32),
    secretPath: "kv/data/hpcs/lab-1/s1",
    role: "hpcs-grant-lab-1.s1",
    spiffeId: "spiffe://hpcs.test/c/lab-1/s/s1",
    payload,
    name,
    ...over,
  };
}

function params(over: Partial<JobScriptParams> = {}): JobScriptParams {
  return {
    sbatch: { jobName: "job1", output: "/scratch/alice/w/.hpcs/j/job.out" },
    workdir: "/scratch/alice/w",
    jobDir: "/scratch/alice/w/.hpcs/j",
    serverUrl: "https://hpcs.example.org:8443",
    serverCaFile: "/scratch/alice/w/.hpcs/j/ca.pem",
    vaultUrl: "https://vault.example.org:8200",
    vaultAudience: "vault",
    jwtMount: "jwt",
    spire: {
      address: "spire.example.org",
      port: 8081,
      trustDomain: "hpcs.test",
      bundleFile: "/scratch/b.pem",
    },
    tools: { spireAgent: "/scratch/alice/w/.hpcs/tools/spire-agent", gocryptfs: "gocryptfs" },
    app: art("sif", ""),
    data: [art("tar", "ds1"), art("file", "f.csv")],
    outputKeyFile: "/scratch/alice/w/.hpcs/j/output-key.asc",
    runtime: "auto",
    singularityFlags: [],
    args: [],
    ...over,
  };
}

/** Runs `bash -c` with the rendered header (everything before the runtime body) and `probe`. */
function evalHeader(script: string, probe: string): string {
  const header = script.slice(0, script.indexOf("set -uo pipefail"));
  const r = spawnSync("bash", ["-c", `${header}\n${probe}`], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

function refuses(p: JobScriptParams, field: RegExp): void {
  assert.throws(
    () => renderJobScript(p),
    (err: Error) =>
      err instanceof InvalidJobParamError && field.test(err.message) && !err.message.includes("\n"),
  );
}

describe("renderJobScript", () => {
  it("writes the shebang, #SBATCH lines, the values and the runtime body", () => {
    const s = renderJobScript(
      params({
        sbatch: {
          jobName: "j",
          output: "/o/j.out",
          nodes: 2,
          partition: "debug",
          time: "1-02:03:04",
          account: "p1",
          nodelist: "nid[001-002],vm",
        },
      }),
    );
    const lines = s.split("\n");
    assert.equal(lines[0], "#!/bin/bash");
    assert.deepEqual(lines.slice(1, 8), [
      '#SBATCH --job-name="j"',
      '#SBATCH --output="/o/j.out"',
      "#SBATCH --nodes=2",
      "#SBATCH --partition=debug",
      "#SBATCH --time=1-02:03:04",
      "#SBATCH --account=p1",
      "#SBATCH --nodelist=nid[001-002],vm",
    ]);
    assert.equal(s.split("\n#!").length, 1, "only one shebang");
    assert.ok(s.includes("hpcs-job: %s"), "the runtime body follows");
    // No command before the last #SBATCH line (sbatch stops reading directives at the first one).
    const firstCommand = lines.findIndex((l) => l !== "" && !l.startsWith("#"));
    assert.ok(firstCommand > lines.findLastIndex((l) => l.startsWith("#SBATCH")));
  });

  it("escapes #SBATCH values for sbatch's tokenizer: quotes, backslashes, #, spaces stay in the value", () => {
    const s = renderJobScript(params({ sbatch: { jobName: `a b'c"d$(x);e#f\\g`, output: "/o/x y.out" } }));
    assert.ok(s.includes(`#SBATCH --job-name="a b'c\\"d$(x);e#f\\\\g"`), s.slice(0, 200));
    assert.ok(s.includes('#SBATCH --output="/o/x y.out"'));
  });

  it("single-quotes every value: bash reads back exactly what was given", () => {
    const s = renderJobScript(
      params({
        args: NASTY,
        singularityFlags: ["--env", "A=$(x) 'y'", "--nv"],
        workdir: "/scratch/a b/w'x $(id);y",
        sbatch: { jobName: `n 'q' "d" $(id); z`, output: "/o/j.out" },
      }),
    );
    const out = evalHeader(
      s,
      'printf "%s\\0" "${HPCS_ARGS[@]}"; printf "W%s\\0" "$HPCS_WORKDIR" "$HPCS_JOB_NAME"; printf "F%s\\0" "${HPCS_SINGULARITY_FLAGS[@]}" "${HPCS_OCI_IGNORED_FLAGS[@]}"',
    );
    assert.deepEqual(out.split("\0").slice(0, -1), [
      ...NASTY,
      "W/scratch/a b/w'x $(id);y",
      `Wn 'q' "d" $(id); z`,
      "F--env",
      "FA=$(x) 'y'",
      "F--nv",
      "F--nv",
    ]);
    assert.equal(shellQuote("it's"), `'it'\\''s'`);
  });

  it("puts artifacts in parallel arrays, app first", () => {
    const s = renderJobScript(params());
    const out = evalHeader(
      s,
      'printf "%s|" "${HPCS_ART_PAYLOAD[@]}" "${HPCS_ART_NAME[@]}" "${#HPCS_ART_PATH[@]}"',
    );
    assert.equal(out, "sif|tar|file||ds1|f.csv|3|");
  });

  it("passes shellcheck with nasty values", function () {
    const check = spawnSync("shellcheck", ["--version"]);
    if (check.status !== 0) this.skip();
    const dir = mkdtempSync(join(tmpdir(), "job-script-"));
    try {
      const file = join(dir, "job.sh");
      writeFileSync(
        file,
        renderJobScript(
          params({
            args: NASTY,
            singularityFlags: ["-e", "K=v"],
            inputScripts: "/s/in",
            outputScripts: "/s/out",
            sbatch: { jobName: `x $(y) 'z'`, output: "/o/%j.out" },
          }),
        ),
      );
      const r = spawnSync("shellcheck", [file], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stdout);
      const body = spawnSync("shellcheck", [jobRuntimePath()], { encoding: "utf8" });
      assert.equal(body.status, 0, body.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses newlines and control characters in #SBATCH values", () => {
    refuses(params({ sbatch: { jobName: "a\nsrun evil", output: "/o/j.out" } }), /sbatch\.jobName.*control/);
    refuses(params({ sbatch: { jobName: "a\rb", output: "/o/j.out" } }), /sbatch\.jobName/);
    refuses(params({ sbatch: { jobName: "j", output: "/o/j\n.out" } }), /sbatch\.output/);
    refuses(params({ sbatch: { jobName: "a/b", output: "/o/j.out" } }), /sbatch\.jobName.*'\/'/);
    refuses(params({ sbatch: { jobName: "", output: "/o/j.out" } }), /sbatch\.jobName/);
    refuses(params({ sbatch: { jobName: "j", output: "relative.out" } }), /sbatch\.output.*absolute/);
  });

  it("checks the other #SBATCH values against strict patterns", () => {
    const sb = (o: object) => params({ sbatch: { jobName: "j", output: "/o/j.out", ...o } });
    refuses(sb({ partition: "debug --wrap=x" }), /sbatch\.partition/);
    refuses(sb({ partition: "a\nb" }), /sbatch\.partition/);
    refuses(sb({ time: "1 hour" }), /sbatch\.time/);
    refuses(sb({ time: "10:00\n" }), /sbatch\.time/);
    refuses(sb({ account: "p1;x" }), /sbatch\.account/);
    refuses(sb({ nodelist: "vm other" }), /sbatch\.nodelist/);
    refuses(sb({ nodes: 0 }), /sbatch\.nodes/);
    refuses(sb({ nodes: 1.5 }), /sbatch\.nodes/);
    for (const time of ["10", "10:30", "1:00:00", "2-0", "2-03:04", "2-03:04:05", "UNLIMITED"]) {
      assert.ok(renderJobScript(sb({ time })).includes(`--time=${time}\n`));
    }
  });

  it("refuses values that would reach other languages unchecked", () => {
    refuses(params({ serverUrl: "https://h/x y" }), /serverUrl/);
    refuses(params({ vaultUrl: "file:///etc/passwd" }), /vaultUrl/);
    refuses(params({ jwtMount: "jwt/../x" }), /jwtMount/);
    refuses(
      params({ spire: { address: "h", port: 0, trustDomain: "hpcs.test", bundleFile: "/b" } }),
      /spire\.port/,
    );
    refuses(
      params({ spire: { address: "h", port: 1, trustDomain: "hpcs.test", bundleFile: "b.pem" } }),
      /bundleFile/,
    );
    refuses(
      params({ spire: { address: "h", port: 1, trustDomain: "Bad TD", bundleFile: "/b" } }),
      /trustDomain/,
    );
    refuses(
      params({ spire: { address: "h;x", port: 1, trustDomain: "hpcs.test", bundleFile: "/b" } }),
      /spire\.address/,
    );
    refuses(params({ tools: { spireAgent: "spire agent", gocryptfs: "gocryptfs" } }), /tools\.spireAgent/);
    refuses(params({ inputScripts: "/s/a:b" }), /inputScripts.*':'/);
    refuses(params({ workdir: "/s/../etc" }), /workdir/);
    refuses(params({ workdir: "/s/a\nb" }), /workdir.*control/);
    refuses(params({ runtime: "docker" as JobScriptParams["runtime"] }), /runtime/);
    refuses(params({ args: ["a\u0000b"] }), /args\[0\]/);
    refuses(params({ singularityFlags: ["--env"] }), /singularityFlags/);
    refuses(params({ singularityFlags: ["--env", "1A=b"] }), /singularityFlags/);
  });

  it("refuses malformed artifacts", () => {
    refuses(params({ app: art("tar", "x") }), /app\.payload/);
    refuses(params({ data: [art("sif", "x")] }), /data\[0\]\.payload/);
    refuses(params({ data: [art("tar", "a/b")] }), /data\[0\]\.name/);
    refuses(params({ data: [art("tar", "..")] }), /data\[0\]\.name/);
    refuses(params({ data: [art("tar", "a"), art("file", "a")] }), /same name/);
    refuses(params({ data: [art("tar", "d", { sha256: "xyz" })] }), /data\[0\]\.sha256/);
    refuses(
      params({ data: [art("tar", "d", { spiffeId: "spiffe://other.td/c/x" })] }),
      /spiffeId.*hpcs\.test/,
    );
    refuses(params({ data: [art("tar", "d", { secretPath: "kv/data/../x" })] }), /secretPath/);
    refuses(params({ data: [art("tar", "d", { role: "r'x" })] }), /role/);
    refuses(params({ data: [art("tar", "d", { path: "rel/x" })] }), /data\[0\]\.path/);
  });
});

describe("ociEnvFromFlags / ociConfigPieces", () => {
  it("keeps --env/-e/--env= values for runc and lists the rest as ignored", () => {
    assert.deepEqual(ociEnvFromFlags(["--env", "A=1", "-e", "B=x y", "--env=C=", "--nv", "-B", "/x"]), {
      env: ["A=1", "B=x y", "C="],
      ignored: ["--nv", "-B", "/x"],
    });
  });

  it("cuts the config into five pieces around the mounts and ids; filled in it is valid JSON", () => {
    const pieces = ociConfigPieces({
      env: ["A=1"],
      args: ['"@x"', "hpcs-slot"],
      inputScripts: "/in",
      outputScripts: "",
    });
    assert.equal(pieces.length, 5);
    const json = `${pieces[0]}"/m/in"${pieces[1]}"/m/out"${pieces[2]}1001${pieces[3]}1004${pieces[4]}`;
    const c = JSON.parse(json);
    assert.deepEqual(c.process.args.slice(3), ["sh", "A=1", "--", '"@x"', "hpcs-slot"]);
    assert.equal(c.linux.uidMappings[0].hostID, 1001);
    assert.equal(c.linux.gidMappings[0].hostID, 1004);
    const binds = c.mounts.filter((m: { type: string }) => m.type === "bind");
    assert.deepEqual(
      binds.map((m: { destination: string; source: string; options: string[] }) => [
        m.destination,
        m.source,
        m.options[1],
      ]),
      [
        ["/sd-container/encrypted", "/m/in", "rw"],
        ["/sd-container/output", "/m/out", "rw"],
        ["/sd-container/tools/input_logic/jobs", "/in", "ro"],
      ],
    );
    assert.equal(c.root.readonly, true);
    assert.equal(c.process.terminal, false);
  });
});
