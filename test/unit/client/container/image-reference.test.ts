import assert from "node:assert/strict";
import { checkImageReference } from "../../../../client/container/image-reference.js";

describe("client/container/image-reference", () => {
  it("accepts what the Docker daemon accepts", () => {
    for (const ref of [
      "busybox",
      "hpcs-bench/busybox:1",
      "registry.example.org:5000/group/app:1.2.3-rc_1",
      "localhost/a__b/c-d:latest",
      `app@sha256:${"a".repeat(64)}`,
      `sha256:${"b".repeat(64)}`,
      "2d9dd1741fb8",
    ]) {
      assert.equal(checkImageReference(ref), ref);
    }
  });

  it("refuses anything else with one line", () => {
    for (const ref of [
      "",
      "Upper",
      "app/Upper",
      "a b",
      "app:",
      "app:-x",
      "../x",
      "app;rm",
      "-rf",
      "a//b",
      "app:t\n",
    ]) {
      assert.throws(() => checkImageReference(ref), /is not a Docker image reference: use name\[:tag\]/, ref);
    }
  });
});
