import assert from "node:assert/strict";
import { dataName, jobDirName } from "../../../../client/job-prep/job-prep-command.js";
import { checkRemoteName } from "../../../../client/ssh/remote-name.js";

describe("client/job-prep/job-prep-command naming", () => {
  it("names a dataset by payload_name, else by the artifact without .tar.gpg/.gpg", () => {
    assert.equal(dataName({ path_at_rest: "/s/a/encrypted_input.tar.gpg" }), "encrypted_input");
    assert.equal(dataName({ path_at_rest: "/s/a/notes.txt.gpg" }), "notes.txt");
    assert.equal(dataName({ path_at_rest: "/s/a/blob" }), "blob");
    assert.equal(dataName({ path_at_rest: "/s/a/x.tar.gpg", payload_name: "image.png" }), "image.png");
  });

  it("makes unique, sortable job directory names that are valid remote names", () => {
    const at = new Date("2026-11-22T10:15:07.123Z");
    const a = jobDirName("jp2a-run", at);
    assert.match(a, /^jp2a-run-20261122T101507Z-[0-9a-f]{8}$/);
    assert.equal(checkRemoteName(a), a);
    assert.notEqual(jobDirName("jp2a-run", at), a);
  });
});
