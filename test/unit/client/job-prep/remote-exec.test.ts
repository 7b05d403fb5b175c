import assert from "node:assert/strict";
import { commandLine } from "../../../../client/job-prep/remote-exec.js";
import { run } from "../../../support/exec.js";

// The line an SSH server hands to the user's login shell: every argv word must arrive unchanged.
describe("client/job-prep/remote-exec commandLine", () => {
  const awkward = [
    "plain",
    "a b",
    "it's",
    '"double"',
    "$(id) `id` ${HOME} $HOME",
    "*",
    "~",
    "-n",
    "; rm -rf /",
    "back\\slash",
    "new\nline",
    "",
    "tab\there",
    "ünïcødé",
  ];

  for (const shell of ["sh", "bash"]) {
    it(`round-trips awkward words through ${shell}`, async () => {
      const line = commandLine(["printf", "%s\\0", ...awkward]);
      const r = await run(shell, ["-c", line]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.split("\0").slice(0, -1), awkward);
    });
  }

  it("refuses NUL bytes and empty commands", () => {
    assert.throws(() => commandLine(["echo", "a\0b"]), /NUL byte/);
    assert.throws(() => commandLine([]), /empty remote command/);
  });
});
