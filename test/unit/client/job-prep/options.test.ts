import assert from "node:assert/strict";
import {
  jobPrepOptions,
  prepareJobPrepArgv,
  type RawJobPrepFlags,
  splitWords,
  stripQuotes,
} from "../../../../client/job-prep/options.js";
import { UsageError } from "../../../../client/usage-error.js";

const NODE = ["node", "cli.js"];

const BASE: RawJobPrepFlags = {
  config: "/home/alice/work/hpcs-client.conf",
  workdir: "/scratch/p1/alice",
  applicationInfo: "/scratch/p1/alice/app.sif.gpg.info.yaml",
};

function usage(raw: RawJobPrepFlags, re: RegExp): void {
  assert.throws(
    () => jobPrepOptions(raw, "/work"),
    (err: unknown) => {
      assert.ok(err instanceof UsageError, `UsageError expected, got ${String(err)}`);
      assert.match(err.message, re);
      assert.doesNotMatch(err.message, /\n/, "one line");
      return true;
    },
  );
}

describe("client/job-prep/options", () => {
  describe("prepareJobPrepArgv", () => {
    it("rewrites the original's multi-letter short flags to long ones, as whole tokens", () => {
      const r = prepareJobPrepArgv([
        ...NODE,
        "job-prep",
        "-ai",
        "/s/app.info.yaml",
        "-di",
        "/s/a.info.yaml",
        "-di",
        "/s/b.info.yaml",
        "-flags",
        "--env TERM=xterm-256color",
        "-args",
        '"\\" /sd-container/encrypted/x/image.png --width=100 \\""',
        "-f",
        "-aix",
      ]);
      assert.deepEqual(r.argv, [
        ...NODE,
        "job-prep",
        "--application-info",
        "/s/app.info.yaml",
        "--data-info",
        "/s/a.info.yaml",
        "--data-info",
        "/s/b.info.yaml",
        "--singularity-supplementary-flags",
        "--env TERM=xterm-256color",
        "--arguments",
        '"\\" /sd-container/encrypted/x/image.png --width=100 \\""',
        "-f",
        "-aix",
      ]);
      assert.equal(r.literalArgs, undefined);
    });

    it("never rewrites an option's value", () => {
      const r = prepareJobPrepArgv([
        ...NODE,
        "job-prep",
        "-J",
        "-ai",
        "-flags",
        "-args",
        "--arguments",
        "-di",
      ]);
      assert.deepEqual(r.argv, [
        ...NODE,
        "job-prep",
        "-J",
        "-ai",
        "--singularity-supplementary-flags",
        "-args",
        "--arguments",
        "-di",
      ]);
    });

    it("keeps everything after -- verbatim as the app's arguments, one argv each", () => {
      const r = prepareJobPrepArgv([
        ...NODE,
        "job-prep",
        "-s",
        "/w",
        "--",
        "-ai",
        "a b",
        'it\'s "quoted"',
        "--",
        "$(rm -rf /)",
      ]);
      assert.deepEqual(r.argv, [...NODE, "job-prep", "-s", "/w"]);
      assert.deepEqual(r.literalArgs, ["-ai", "a b", 'it\'s "quoted"', "--", "$(rm -rf /)"]);
      assert.deepEqual(prepareJobPrepArgv([...NODE, "job-prep", "--"]).literalArgs, []);
    });

    it("leaves other subcommands alone", () => {
      const argv = [...NODE, "data-prep", "-i", "/x", "--", "-ai"];
      assert.deepEqual(prepareJobPrepArgv(argv), { argv });
      const results = [...NODE, "job-prep", "results", "12", "--output-dir", "/o"];
      assert.deepEqual(prepareJobPrepArgv(results).argv, results);
    });
  });

  describe("-args and -flags splitting", () => {
    it("strips the original's surrounding quotes, layer by layer, then splits on whitespace", () => {
      const original = '"\\" /sd-container/encrypted/x/image.png --width=100 \\""';
      assert.equal(stripQuotes(original), "/sd-container/encrypted/x/image.png --width=100");
      assert.deepEqual(splitWords(stripQuotes(original)), [
        "/sd-container/encrypted/x/image.png",
        "--width=100",
      ]);
      assert.equal(stripQuotes('"00:60:00"'), "00:60:00");
      assert.equal(stripQuotes("'a b'"), "a b");
      assert.equal(stripQuotes('a"'), 'a"', "an unpaired quote is kept");
      assert.deepEqual(splitWords("  --env   TERM=x\t-B /a:/b \n"), ["--env", "TERM=x", "-B", "/a:/b"]);
      assert.deepEqual(splitWords(""), []);
    });

    it("never interprets shell syntax", () => {
      const o = jobPrepOptions({ ...BASE, arguments: "$(id) `id` ;rm *" }, "/work");
      assert.deepEqual(o.args, ["$(id)", "`id`", ";rm", "*"]);
    });
  });

  describe("jobPrepOptions", () => {
    it("fills defaults: job name, runtime auto, waiting, keys dir = the config's directory", () => {
      const o = jobPrepOptions(BASE, "/work");
      assert.equal(o.jobName, "hpcs-job");
      assert.equal(o.runtime, "auto");
      assert.equal(o.wait, true);
      assert.equal(o.follow, false);
      assert.equal(o.keysDir, "/home/alice/work");
      assert.deepEqual(o.dataInfo, []);
      assert.deepEqual(o.args, []);
      assert.deepEqual(o.singularityFlags, []);
    });

    it("takes the original's compose example", () => {
      const o = jobPrepOptions(
        {
          ...BASE,
          nodes: "1",
          partition: "standard",
          time: '"00:60:00"',
          account: "project_462000031",
          nodelist: "nid003044",
          workdir: "/scratch/project_462000031/etellier/",
          dataInfo: ["/scratch/p/e/in.tgz.info.yaml", "/scratch/p/e/in2.tgz.info.yaml"],
          arguments:
            '"\\" /sd-container/encrypted/jp2a_input/image.png --width=100 --output=/sd-container/output/result \\""',
          supplementaryInputScripts: "/pfs/lustrep4/scratch/v",
          supplementaryOutputScripts: "/pfs/lustrep4/scratch/v",
          singularitySupplementaryFlags: "--env TERM=xterm-256color",
          follow: true,
          runtime: "runc",
          json: true,
        },
        "/work",
      );
      assert.equal(o.nodes, 1);
      assert.equal(o.time, "00:60:00");
      assert.equal(o.workdir, "/scratch/project_462000031/etellier");
      assert.deepEqual(o.args, [
        "/sd-container/encrypted/jp2a_input/image.png",
        "--width=100",
        "--output=/sd-container/output/result",
      ]);
      assert.deepEqual(o.singularityFlags, ["--env", "TERM=xterm-256color"]);
      assert.equal(o.dataInfo.length, 2);
      assert.equal(o.runtime, "runc");
      assert.equal(o.follow, true);
    });

    it("passes literal arguments (after --) through unchanged", () => {
      const o = jobPrepOptions({ ...BASE, literalArgs: ["a b", "", "it's"] }, "/work");
      assert.deepEqual(o.args, ["a b", "", "it's"]);
    });

    it("refuses bad values with one line naming the flag and the fix", () => {
      usage({ ...BASE, workdir: undefined }, /missing -s\/--workdir/);
      usage({ ...BASE, workdir: "scratch/rel" }, /-s\/--workdir: invalid remote directory/);
      usage({ ...BASE, applicationInfo: undefined }, /missing -ai\/--application-info/);
      usage({ ...BASE, dataInfo: ["/a/../b"] }, /-di\/--data-info: invalid remote directory/);
      usage({ ...BASE, dataInfo: ["/a/x.yaml", "/a/x.yaml"] }, /same info file is given twice/);
      usage({ ...BASE, jobName: "a b" }, /-J\/--job-name "a b"/);
      usage({ ...BASE, jobName: "../x" }, /-J\/--job-name/);
      usage({ ...BASE, nodes: "0" }, /-N\/--nodes/);
      usage({ ...BASE, nodes: "two" }, /-N\/--nodes/);
      usage({ ...BASE, partition: "debug;id" }, /-p\/--partition/);
      usage({ ...BASE, account: "-x" }, /-A\/--account/);
      usage({ ...BASE, nodelist: "nid1 nid2" }, /-w\/--nodelist/);
      usage({ ...BASE, nodelist: "nid[1-2" }, /-w\/--nodelist/);
      usage({ ...BASE, time: "1h" }, /-t\/--time "1h"/);
      usage({ ...BASE, runtime: "docker" }, /--runtime "docker": use one of auto, apptainer/);
      usage({ ...BASE, supplementaryInputScripts: "rel" }, /-i\/--supplementary-input-scripts/);
      usage({ ...BASE, follow: true, wait: false }, /--follow and --no-wait/);
      usage({ ...BASE, arguments: "x", literalArgs: ["y"] }, /-args STRING or put them after --, not both/);
    });

    it("accepts Slurm's time formats and host lists", () => {
      for (const t of ["30", "30:00", "01:00:00", "1-12", "1-12:30", "2-00:00:00", "UNLIMITED"]) {
        assert.equal(jobPrepOptions({ ...BASE, time: t }, "/work").time, t);
      }
      for (const w of ["vm", "nid003044", "nid[001-004]", "nid[001-004,010],gpu1", "a.b.c"]) {
        assert.equal(jobPrepOptions({ ...BASE, nodelist: w }, "/work").nodelist, w);
      }
    });
  });
});
