import assert from "node:assert/strict";
import {
  type ArtifactInfo,
  formatInfo,
  infoFileName,
  parseInfo,
} from "../../../../client/data-prep/info-file.js";

const INFO: ArtifactInfo = {
  version: 1,
  kind: "data",
  payload: "tar",
  path_at_rest: "/scratch/p1/alice/input.tar.gpg",
  secret_path: "kv/data/hpcs/lab-42/data-0123456789abcdef",
  access_role: "hpcs-grant-lab-42-data-0123456789abcdef",
  checksum: "sha256:" + "a".repeat(64),
  spiffeID: "spiffe://hpcs.test/c/lab-42/s/data-0123456789abcdef",
  cipher: "openpgp-seipd1-aes256",
  sha256: "a".repeat(64),
  size: 1234,
  created: "2026-11-22T08:00:00.000Z",
  trust_domain: "hpcs.test",
  vault_url: "https://vault:8200",
  grant: { nodes: ["nid001"], users: ["alice"], groups: [] },
};

describe("client/data-prep/info-file", () => {
  it("round-trips and keeps the original's keys at the top level", () => {
    const text = formatInfo(INFO);
    for (const key of ["path_at_rest", "secret_path", "access_role", "checksum", "spiffeID"]) {
      assert.match(text, new RegExp(`^${key}: `, "m"));
    }
    assert.deepEqual(parseInfo(text, "x.info.yaml"), INFO);
    assert.equal(infoFileName("input.tar.gpg"), "input.tar.gpg.info.yaml");
  });

  it("names the missing key and the source", () => {
    const { access_role: _drop, ...rest } = INFO;
    assert.throws(() => parseInfo(formatInfo(rest as ArtifactInfo), "f.yaml"), /f\.yaml has no access_role/);
    assert.throws(() => parseInfo("- a\n", "g.yaml"), /g\.yaml has no path_at_rest/);
    assert.throws(() => parseInfo("", "h.yaml"), /h\.yaml is not an info file/);
    assert.throws(() => parseInfo(formatInfo({ ...INFO, version: 2 }), "v.yaml"), /info version 2/);
  });
});
