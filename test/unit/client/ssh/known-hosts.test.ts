import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import {
  blobKeyType,
  hostFieldMatches,
  knownHostsName,
  parseKnownHosts,
  verifyHostKey,
} from "../../../../client/ssh/known-hosts.js";

/** A syntactically valid SSH public key blob of `type` with random key material. */
function fakeKey(type = "ssh-ed25519"): Buffer {
  const name = Buffer.from(type);
  const material = randomBytes(32);
  const b = Buffer.alloc(4 + name.length + 4 + material.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt32BE(material.length, 4 + name.length);
  material.copy(b, 8 + name.length);
  return b;
}

function line(hosts: string, key: Buffer, type = "ssh-ed25519"): string {
  return `${hosts} ${type} ${key.toString("base64")} comment`;
}

function hashed(name: string): string {
  const salt = randomBytes(20);
  const mac = createHmac("sha1", salt).update(name).digest();
  return `|1|${salt.toString("base64")}|${mac.toString("base64")}`;
}

describe("client/ssh/known-hosts", () => {
  const FILE = "/home/u/.ssh/known_hosts";

  it("names hosts like OpenSSH: bare on 22, [host]:port otherwise", () => {
    assert.equal(knownHostsName("login.example.org", 22), "login.example.org");
    assert.equal(knownHostsName("127.0.0.1", 2222), "[127.0.0.1]:2222");
  });

  it("parses plain lines, skips comments, blanks, corrupt keys and unknown markers, and keeps line numbers", () => {
    const k = fakeKey();
    const text = [
      "# comment",
      "",
      line("a.example,b.example", k),
      "broken-line",
      `c.example ssh-rsa ${k.toString("base64")}`, // blob says ed25519: corrupt
      `@unknown d.example ssh-ed25519 ${k.toString("base64")}`,
      `@revoked e.example ssh-ed25519 ${k.toString("base64")}`,
    ].join("\n");
    const entries = parseKnownHosts(text);
    assert.equal(entries.length, 2);
    assert.deepEqual(entries[0]?.hosts, ["a.example", "b.example"]);
    assert.equal(entries[0]?.line, 3);
    assert.equal(entries[1]?.marker, "@revoked");
    assert.equal(blobKeyType(k), "ssh-ed25519");
  });

  it("accepts the listed key for a [host]:port entry and refuses it on another port", () => {
    const k = fakeKey();
    const entries = parseKnownHosts(line("[127.0.0.1]:2222", k));
    assert.equal(verifyHostKey(entries, "127.0.0.1", 2222, k, FILE).ok, true);
    const other = verifyHostKey(entries, "127.0.0.1", 22, k, FILE);
    assert.equal(other.ok, false);
    assert.equal(!other.ok && other.reason, "unknown");
  });

  it("matches hashed |1| entries, including the [host]:port form", () => {
    const k = fakeKey();
    const entries = parseKnownHosts(
      [line(hashed("login.example.org"), k), line(hashed("[10.0.0.5]:2200"), k)].join("\n"),
    );
    assert.equal(verifyHostKey(entries, "login.example.org", 22, k, FILE).ok, true);
    assert.equal(verifyHostKey(entries, "10.0.0.5", 2200, k, FILE).ok, true);
    assert.equal(verifyHostKey(entries, "10.0.0.5", 22, k, FILE).ok, false);
    assert.equal(verifyHostKey(entries, "other.example.org", 22, k, FILE).ok, false);
  });

  it("supports wildcards and negation", () => {
    assert.equal(hostFieldMatches(["*.example.org"], "login.example.org"), true);
    assert.equal(hostFieldMatches(["*.example.org", "!bad.example.org"], "bad.example.org"), false);
    assert.equal(hostFieldMatches(["login?.example.org"], "login1.example.org"), true);
    assert.equal(hostFieldMatches(["LOGIN.example.org"], "login.example.org"), true);
  });

  it("reports a mismatch with the host, the file, the line and the fix", () => {
    const listed = fakeKey();
    const presented = fakeKey();
    const entries = parseKnownHosts(["# one", "# two", line("[127.0.0.1]:2222", listed)].join("\n"));
    const v = verifyHostKey(entries, "127.0.0.1", 2222, presented, FILE);
    assert.equal(v.ok, false);
    assert.ok(!v.ok);
    assert.equal(v.reason, "mismatch");
    assert.match(
      v.message,
      /^host key for \[127\.0\.0\.1\]:2222 \(ssh-ed25519\) does not match \/home\/u\/\.ssh\/known_hosts line 3: .*check and update the file$/,
    );
    assert.ok(!v.message.includes("\n"));
  });

  it("reports an unknown host with the file and how to add it", () => {
    const v = verifyHostKey([], "127.0.0.1", 2222, fakeKey(), FILE);
    assert.ok(!v.ok);
    assert.equal(v.reason, "unknown");
    assert.match(
      v.message,
      /^host \[127\.0\.0\.1\]:2222 is not in \/home\/u\/\.ssh\/known_hosts: .*ssh-keyscan -p 2222 127\.0\.0\.1/,
    );
  });

  it("refuses a key marked @revoked even when another line lists it", () => {
    const k = fakeKey();
    const entries = parseKnownHosts(
      [line("h.example", k), `@revoked * ssh-ed25519 ${k.toString("base64")}`].join("\n"),
    );
    const v = verifyHostKey(entries, "h.example", 22, k, FILE);
    assert.ok(!v.ok);
    assert.equal(v.reason, "revoked");
  });

  it("never accepts a @cert-authority line as a plain host key", () => {
    const k = fakeKey();
    const entries = parseKnownHosts(`@cert-authority h.example ssh-ed25519 ${k.toString("base64")}`);
    assert.equal(verifyHostKey(entries, "h.example", 22, k, FILE).ok, false);
  });
});
