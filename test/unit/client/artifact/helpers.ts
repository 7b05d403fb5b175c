// Shared by the artifact tests: temp dirs, random trees, tree comparison, and the real `gpg`.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, readlink, lstat, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ArtifactSecret } from "../../../../client/artifact/secret.js";

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `hpcs-artifact-${prefix}-`));
}

/** A tree with an empty file, nested dirs, names with spaces and a file larger than any stream chunk. */
export async function makeRandomTree(root: string): Promise<void> {
  await mkdir(join(root, "nested dir/deeper/deepest"), { recursive: true });
  await mkdir(join(root, "empty dir"));
  await writeFile(join(root, "empty file"), "");
  await writeFile(join(root, "top.bin"), randomBytes(3 * 1024 * 1024 + 17));
  await writeFile(join(root, "nested dir/with space.txt"), randomBytes(1000).toString("base64"));
  await writeFile(join(root, "nested dir/deeper/deepest/x"), randomBytes(65537));
  for (let i = 0; i < 20; i++) {
    await writeFile(
      join(root, "nested dir/deeper", `f ${i}.dat`),
      randomBytes(Math.floor(Math.random() * 5000)),
    );
  }
}

/** path → "dir" | "link:<target>" | file content (base64), recursively, for deep equality. */
export async function snapshot(root: string, rel = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(join(root, rel))).sort()) {
    const p = rel === "" ? name : `${rel}/${name}`;
    const st = await lstat(join(root, p));
    if (st.isSymbolicLink()) out[p] = `link:${await readlink(join(root, p))}`;
    else if (st.isDirectory()) Object.assign(out, { [p]: "dir" }, await snapshot(root, p));
    else out[p] = (await readFile(join(root, p))).toString("base64");
  }
  return out;
}

export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export interface GpgResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/**
 * A throwaway GnuPG home (0700) with the passphrase in a 0600 file: the secret never goes into argv,
 * where `ps` would show it.
 */
export class Gpg {
  private constructor(
    readonly home: string,
    private readonly passFile: string,
  ) {}

  static async create(secret: ArtifactSecret): Promise<Gpg> {
    const home = await tempDir("gnupg");
    const passFile = join(home, "passphrase");
    await writeFile(passFile, secret.passphrase(), { mode: 0o600 });
    return new Gpg(home, passFile);
  }

  run(args: string[], stdin?: Buffer): Promise<GpgResult> {
    const argv = [
      "--homedir",
      this.home,
      "--batch",
      "--no-tty",
      "--pinentry-mode",
      "loopback",
      "--passphrase-file",
      this.passFile,
      // No agent-side cache: every call really uses the file (the wrong-passphrase test relies on it).
      "--no-symkey-cache",
      ...args,
    ];
    return new Promise((resolve, reject) => {
      const child = spawn("gpg", argv, { stdio: ["pipe", "pipe", "pipe"] });
      const out: Buffer[] = [];
      let err = "";
      child.stdout.on("data", (c: Buffer) => out.push(c));
      child.stderr.on("data", (c: Buffer) => (err += c.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
      child.stdin.end(stdin ?? Buffer.alloc(0));
    });
  }

  async dispose(): Promise<void> {
    await new Promise<void>((resolve) => {
      const k = spawn("gpgconf", ["--homedir", this.home, "--kill", "gpg-agent"], { stdio: "ignore" });
      k.on("close", () => resolve());
      k.on("error", () => resolve());
    });
    await rm(this.home, { recursive: true, force: true });
  }
}
