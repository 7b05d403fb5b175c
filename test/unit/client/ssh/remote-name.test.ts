import assert from "node:assert/strict";
import { checkRemoteDir, checkRemoteName, remotePath } from "../../../../client/ssh/remote-name.js";

describe("client/ssh/remote-name", () => {
  it("accepts plain artifact names", () => {
    for (const n of ["data.tar.gpg", "dataset-1_v2.part", "A", "x".repeat(200)])
      assert.equal(checkRemoteName(n), n);
  });

  it("refuses names that could escape the directory or surprise a shell", () => {
    const bad = [
      "",
      ".",
      "..",
      "a/b",
      "../x",
      "a..b",
      ".hidden",
      "-rf",
      "a b",
      "a;b",
      "a'b",
      "$(x)",
      "a\nb",
      "x".repeat(201),
      "é",
    ];
    for (const n of bad) assert.throws(() => checkRemoteName(n), /^Error: invalid remote file name/, n);
  });

  it("accepts absolute normalised directories and refuses the rest", () => {
    for (const d of ["/", "/scratch/alice", "/scratch/alice/"]) assert.equal(checkRemoteDir(d), d);
    for (const d of ["scratch", "/a/../b", "/a//b", "/a/./b", "/a\nb", ""]) {
      assert.throws(() => checkRemoteDir(d), /^Error: invalid remote directory/, d);
    }
  });

  it("joins directory and name", () => {
    assert.equal(remotePath("/scratch/alice/", "f.gpg"), "/scratch/alice/f.gpg");
    assert.throws(() => remotePath("/scratch", "../etc/passwd"));
  });
});
