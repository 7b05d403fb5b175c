import assert from "node:assert/strict";
import { run } from "../../support/exec.js";
import { loadStackEnv, type StackEnv } from "../../support/stack-env.js";

describe("stack: Docker engine", () => {
  let env: StackEnv;
  before(() => {
    env = loadStackEnv();
  });
  const docker = (args: string[]) => run("docker", ["-H", `unix://${env.docker.socket}`, ...args]);

  it("runs a container from the locally made base image (no registry)", async () => {
    const r = await docker([
      "run",
      "--rm",
      "--network",
      "none",
      env.docker.test_image,
      "sh",
      "-c",
      "echo $((6 * 7)) $(id -u)",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "42 0");
  });

  it("fails clearly for an image that is not there (nothing is pulled)", async () => {
    const r = await docker(["run", "--rm", "--pull", "never", "hpcs-bench/no-such-image:0", "true"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /No such image/i);
  });
});
