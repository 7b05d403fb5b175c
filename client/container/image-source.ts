/**
 * Opens an OCI/Docker image for flattening, from one of two sources:
 *
 *   - `{ tag }`: an image in the local Docker daemon, exported through its `docker save` API
 *     (dockerode `getImage(tag).get()`), streamed;
 *   - `{ tarPath, tag? }`: a `docker save` tar or an OCI image-layout tar on disk; no daemon needed.
 *
 * Both go through the same code: the archive is walked once, in order, and every file in it is written
 * to a private temporary directory (the layer order is only known from manifest.json / index.json,
 * which `docker save` writes last, so layers cannot be applied while the archive streams past). Small
 * JSON documents are then read back from there with a size cap. Nothing the size of a layer is ever
 * held in memory. `dispose()` removes the directory, and every failure path removes it before the
 * error leaves this module.
 *
 * Integrity: a blob stored under `blobs/<algorithm>/<hex>` (OCI layout, and Docker ≥ 25 saves) must
 * hash to its name, and a config named `<64 hex>.json` (older `docker save`) to its image ID. Layers are
 * checked against the config's `rootfs.diff_ids` while they are flattened (rootfs.ts), which covers
 * both formats and compressed layers.
 */

import { createHash, type Hash } from "node:crypto";
import { closeSync, openSync, writeSync } from "node:fs";
import { mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { arch as hostArch } from "node:os";
import { join, posix } from "node:path";
import { addAbortSignal, type Readable } from "node:stream";
import Dockerode from "dockerode";
import { describeFsError, firstLine } from "./errors.js";
import { checkImageReference } from "./image-reference.js";
import { walkTar } from "./tar-walk.js";

export type ImageSourceSpec = { tag: string } | { tarPath: string; tag?: string };

/** A dockerode client, or the path of the daemon's unix socket. */
export type DockerConnection = Dockerode | string;

/** The parts of the image configuration a runtime needs (OCI image spec "config" + platform). */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  /** `NAME=value` strings, as in the image. */
  env: string[];
  workingDir: string;
  user: string;
  labels: Record<string, string>;
  architecture: string;
  os: string;
  /** The image's creation time, when it records one: the reproducible timestamp of what we build. */
  created?: Date;
}

export interface ImageLayer {
  /** Local file holding the layer as stored in the archive (tar, possibly gzip-compressed). */
  path: string;
  /** `sha256:<hex>` of the uncompressed layer tar, from the config's rootfs.diff_ids. */
  diffId: string;
}

export interface OpenedImage {
  /** What the image was opened from, for messages (`docker daemon image "x"`, `image archive "/p"`). */
  description: string;
  config: ImageConfig;
  /** `sha256:<hex>` of the image config blob (the image ID). */
  configDigest: string;
  /** Bottom layer first. */
  layers: ImageLayer[];
  /** Removes the temporary directory holding the layers. Idempotent. */
  dispose(): Promise<void>;
}

export interface OpenImageOptions {
  /** Used for `{ tag }` sources; default: dockerode's default (DOCKER_HOST, else /var/run/docker.sock). */
  docker?: DockerConnection;
  /** Directory for the temporary layer store (local disk with room for the image). */
  workDir: string;
  signal: AbortSignal;
}

/** JSON documents (manifests, index, config) are small; anything bigger is refused, not parsed. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;
const BLOB_PATH = /^blobs\/([a-z0-9]+)\/([a-f0-9]{32,128})$/;
const LEGACY_CONFIG_PATH = /^([a-f0-9]{64})\.json$/;

interface StoredFile {
  file: string;
  size: number;
  /** Hex digest, computed only for content-addressed paths. */
  sha256?: string;
}

/** The archive's files by their (normalized) path; links map a path to the path they stand for. */
interface ArchiveIndex {
  files: Map<string, StoredFile>;
  links: Map<string, string>;
}

export async function openImage(source: ImageSourceSpec, opts: OpenImageOptions): Promise<OpenedImage> {
  opts.signal.throwIfAborted();
  const wanted = source.tag === undefined ? undefined : checkImageReference(source.tag);
  const fromDaemon = !("tarPath" in source);
  const description = fromDaemon
    ? `docker daemon image ${JSON.stringify(wanted)}`
    : `image archive ${JSON.stringify(source.tarPath)}`;
  await checkWorkDir(opts.workDir);

  // Open the input before creating anything, so a missing image or file leaves nothing behind.
  const stream = fromDaemon
    ? await daemonSaveStream(wanted as string, opts.docker)
    : await archiveFileStream(source.tarPath);
  addAbortSignal(opts.signal, stream);

  let tmp: string | undefined;
  try {
    tmp = await mkdtemp(join(opts.workDir, "hpcs-image-"));
    const index = await storeArchive(stream, tmp, description, fromDaemon, opts.signal);
    const resolved = await resolveImage(index, description, wanted, fromDaemon);
    const dir = tmp;
    return {
      description,
      config: resolved.config,
      configDigest: resolved.configDigest,
      layers: resolved.layers,
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    stream.destroy();
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

async function checkWorkDir(dir: string): Promise<void> {
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (err) {
    throw new Error(`work directory ${JSON.stringify(dir)}: ${describeFsError(err)}`);
  }
  if (!isDir) throw new Error(`work directory ${JSON.stringify(dir)}: not a directory`);
}

// ------------------------------------------------------------------------------------------ sources

export function dockerClient(conn: DockerConnection | undefined): { docker: Dockerode; where: string } {
  if (conn instanceof Dockerode) return { docker: conn, where: "the configured Docker daemon" };
  if (typeof conn === "string") {
    if (!posix.isAbsolute(conn)) {
      throw new Error(
        `docker socket ${JSON.stringify(conn)}: give an absolute path (e.g. /var/run/docker.sock)`,
      );
    }
    return { docker: new Dockerode({ socketPath: conn }), where: conn };
  }
  return { docker: new Dockerode(), where: process.env.DOCKER_HOST ?? "/var/run/docker.sock" };
}

async function daemonSaveStream(tag: string, conn: DockerConnection | undefined): Promise<Readable> {
  const { docker, where } = dockerClient(conn);
  const image = docker.getImage(tag);
  try {
    // Inspect first: a missing image is a 404 with a clear meaning, where a failed save is a broken stream.
    await image.inspect();
    return (await image.get()) as Readable;
  } catch (err) {
    throw dockerError(err, tag, where);
  }
}

function dockerError(err: unknown, tag: string, where: string): Error {
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (e.statusCode === 404) {
    return new Error(
      `image ${JSON.stringify(tag)} is not in the local Docker daemon: build or pull it first, or pass a \`docker save\` tar`,
    );
  }
  if (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EACCES" || e.code === "EPERM") {
    return new Error(
      `cannot reach the Docker daemon at ${where} (${e.code}): start Docker or mount its socket ` +
        `(-d/--docker-path), or pass the image as a \`docker save\` tar`,
    );
  }
  const first = String(e.message ?? err).split("\n")[0];
  return new Error(`Docker daemon at ${where}: ${first}`);
}

async function archiveFileStream(path: string): Promise<Readable> {
  const shown = JSON.stringify(path);
  let handle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw new Error(`image archive ${shown}: ${describeFsError(err)}`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`image archive ${shown}: not a regular file`);
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle.createReadStream({ highWaterMark: 1024 * 1024 });
}

// ------------------------------------------------------------------------------------- archive walk

async function storeArchive(
  stream: Readable,
  tmp: string,
  description: string,
  fromDaemon: boolean,
  signal: AbortSignal,
): Promise<ArchiveIndex> {
  const files = new Map<string, StoredFile>();
  const links = new Map<string, string>();
  // Descriptors of files still being written: closed here if the walk stops half-way.
  const writing = new Set<number>();
  let n = 0;
  try {
    await walkTar(
      stream,
      (entry) => {
        const path = archivePath(entry.path, description);
        if (path === "") return undefined;
        switch (entry.type) {
          case "Directory":
            return undefined;
          case "SymbolicLink":
            // `docker save` links a layer that appears twice to its first copy (../<id>/layer.tar).
            links.set(path, archivePath(posix.join(posix.dirname(path), entry.linkpath ?? ""), description));
            return undefined;
          case "Link":
            links.set(path, archivePath(entry.linkpath ?? "", description));
            return undefined;
          case "File":
          case "OldFile":
          case "ContiguousFile": {
            const file = join(tmp, `f${n++}`);
            const hash: Hash | undefined =
              BLOB_PATH.test(path) || path.endsWith(".json") ? createHash("sha256") : undefined;
            const fd = openSync(file, "wx", 0o600);
            writing.add(fd);
            let size = 0;
            let closed = false;
            const record: StoredFile = { file, size: 0 };
            files.set(path, record);
            return {
              data(chunk) {
                for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off);
                size += chunk.length;
                hash?.update(chunk);
              },
              end() {
                if (closed) return;
                closed = true;
                writing.delete(fd);
                closeSync(fd);
                record.size = size;
                if (hash) record.sha256 = hash.digest("hex");
              },
            };
          }
          default:
            return undefined;
        }
      },
      signal,
    );
  } catch (err) {
    signal.throwIfAborted();
    const why = firstLine(err);
    if (why.startsWith("image archive entry")) throw err;
    throw new Error(
      fromDaemon
        ? `${description}: docker save failed: ${why}`
        : `${description} is not a readable tar archive (${why}): pass a \`docker save\` or OCI layout tar`,
    );
  } finally {
    for (const fd of writing) closeSync(fd);
  }
  return { files, links };
}

/** Archive paths are relative and stay inside the archive; anything else is refused, not rewritten. */
function archivePath(raw: string, description: string): string {
  const trimmed = raw.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  if (raw.startsWith("/") || trimmed.split("/").includes("..")) {
    throw new Error(
      `image archive entry ${JSON.stringify(raw)} in ${description} points outside the archive`,
    );
  }
  return posix.normalize(trimmed === "" ? "." : trimmed).replace(/^\.$/, "");
}

// --------------------------------------------------------------------------------------- resolution

interface ResolvedImage {
  config: ImageConfig;
  configDigest: string;
  layers: ImageLayer[];
}

async function resolveImage(
  index: ArchiveIndex,
  description: string,
  wanted: string | undefined,
  fromDaemon: boolean,
): Promise<ResolvedImage> {
  verifyBlobs(index, description);
  // A daemon export holds exactly the image asked for; its tag selects nothing.
  const select = fromDaemon ? undefined : wanted;
  if (lookup(index, "manifest.json")) return resolveDockerSave(index, description, select);
  if (lookup(index, "index.json")) return resolveOciLayout(index, description, select);
  throw new Error(
    `${description} is neither a \`docker save\` archive nor an OCI image layout (no manifest.json or index.json)`,
  );
}

function verifyBlobs(index: ArchiveIndex, description: string): void {
  for (const [path, f] of index.files) {
    const blob = BLOB_PATH.exec(path);
    const legacy = LEGACY_CONFIG_PATH.exec(path);
    const expected = blob ? (blob[1] === "sha256" ? blob[2] : undefined) : legacy?.[1];
    if (expected !== undefined && f.sha256 !== expected) {
      throw new Error(
        `${description}: ${path} does not match its digest: the archive is corrupt, save it again`,
      );
    }
  }
}

function lookup(index: ArchiveIndex, path: string): StoredFile | undefined {
  let p = path;
  for (let hops = 0; hops < 16; hops++) {
    const f = index.files.get(p);
    if (f) return f;
    const next = index.links.get(p);
    if (next === undefined) return undefined;
    p = next;
  }
  return undefined;
}

function need(index: ArchiveIndex, path: string, description: string, what: string): StoredFile {
  const f = lookup(index, path);
  if (!f) throw new Error(`${description}: ${what} ${JSON.stringify(path)} is missing from the archive`);
  return f;
}

async function readJson(f: StoredFile, path: string, description: string): Promise<unknown> {
  if (f.size > MAX_JSON_BYTES) {
    throw new Error(`${description}: ${path} is ${f.size} bytes, too large for a manifest or config`);
  }
  try {
    return JSON.parse(await readFile(f.file, "utf8"));
  } catch {
    throw new Error(`${description}: ${path} is not valid JSON`);
  }
}

interface DockerSaveManifest {
  Config?: unknown;
  RepoTags?: unknown;
  Layers?: unknown;
}

async function resolveDockerSave(
  index: ArchiveIndex,
  description: string,
  wanted: string | undefined,
): Promise<ResolvedImage> {
  const doc = await readJson(need(index, "manifest.json", description, "file"), "manifest.json", description);
  if (!Array.isArray(doc) || doc.length === 0) {
    throw new Error(`${description}: manifest.json lists no image`);
  }
  const entries = doc as DockerSaveManifest[];
  let chosen: DockerSaveManifest | undefined;
  if (wanted !== undefined) {
    const full = withDefaultTag(wanted);
    chosen = entries.find((e) => stringArray(e.RepoTags).some((t) => t === wanted || t === full));
    if (!chosen) {
      throw new Error(
        `${description} has no image tagged ${JSON.stringify(wanted)} (it has: ${tagList(entries)})`,
      );
    }
  } else if (entries.length === 1) {
    chosen = entries[0];
  } else {
    throw new Error(
      `${description} holds ${entries.length} images (${tagList(entries)}): name the one to use with its tag`,
    );
  }
  const configPath = typeof chosen?.Config === "string" ? chosen.Config : "";
  const layerPaths = stringArray(chosen?.Layers);
  if (configPath === "" || !Array.isArray(chosen?.Layers)) {
    throw new Error(`${description}: manifest.json entry has no Config or Layers`);
  }
  const cfgPath = archivePath(configPath, description);
  const cfgFile = need(index, cfgPath, description, "image config");
  const raw = await readJson(cfgFile, cfgPath, description);
  const configDigest = `sha256:${cfgFile.sha256 ?? ""}`;
  return assemble(
    raw,
    configDigest,
    layerPaths.map((p) => need(index, archivePath(p, description), description, "layer").file),
    description,
  );
}

interface OciDescriptor {
  mediaType?: string;
  digest?: string;
  platform?: { architecture?: string; os?: string; variant?: string };
  annotations?: Record<string, string>;
}

const OCI_INDEX = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
];

async function resolveOciLayout(
  index: ArchiveIndex,
  description: string,
  wanted: string | undefined,
): Promise<ResolvedImage> {
  const top = (await readJson(need(index, "index.json", description, "file"), "index.json", description)) as {
    manifests?: OciDescriptor[];
  };
  let candidates = Array.isArray(top.manifests) ? top.manifests : [];
  if (wanted !== undefined) {
    const full = withDefaultTag(wanted);
    const tagOnly = full.slice(full.lastIndexOf(":") + 1);
    candidates = candidates.filter((d) => {
      const names = [
        d.annotations?.["io.containerd.image.name"],
        d.annotations?.["org.opencontainers.image.ref.name"],
      ];
      return names.some((n) => n === wanted || n === full || n === tagOnly);
    });
    if (candidates.length === 0) {
      throw new Error(`${description} has no image named ${JSON.stringify(wanted)} in index.json`);
    }
  }
  let manifest: OciDescriptor | undefined;
  for (let depth = 0; depth < 4 && manifest === undefined; depth++) {
    const d = pickPlatform(candidates, description);
    if (OCI_INDEX.includes(d.mediaType ?? "")) {
      const nested = (await readBlob(index, d, description)) as { manifests?: OciDescriptor[] };
      candidates = Array.isArray(nested.manifests) ? nested.manifests : [];
    } else {
      manifest = d;
    }
  }
  if (!manifest) throw new Error(`${description}: index.json nests image indexes too deeply`);
  const m = (await readBlob(index, manifest, description)) as {
    config?: OciDescriptor;
    layers?: OciDescriptor[];
  };
  if (!m.config || !Array.isArray(m.layers)) {
    throw new Error(`${description}: manifest ${manifest.digest ?? "?"} has no config or layers`);
  }
  for (const l of m.layers) {
    if ((l.mediaType ?? "").includes("zstd")) {
      throw new Error(
        `${description}: layer ${l.digest ?? "?"} is zstd-compressed, which this client cannot read: ` +
          `export the image with gzip or uncompressed layers`,
      );
    }
  }
  const raw = await readBlob(index, m.config, description);
  return assemble(
    raw,
    m.config.digest ?? "",
    m.layers.map((l) => blobFile(index, l, description).file),
    description,
  );
}

/** A single candidate is taken as is; among several, the one for this machine's platform. */
function pickPlatform(candidates: OciDescriptor[], description: string): OciDescriptor {
  if (candidates.length === 1 && candidates[0]) return candidates[0];
  const want = goArch(hostArch());
  const match = candidates.find((d) => d.platform?.os === "linux" && d.platform?.architecture === want);
  if (!match) {
    throw new Error(
      `${description}: index.json has ${candidates.length} manifests and none for linux/${want}: ` +
        `export a single-platform image`,
    );
  }
  return match;
}

function blobFile(index: ArchiveIndex, d: OciDescriptor, description: string): StoredFile {
  const m = /^([a-z0-9]+):([a-f0-9]{32,128})$/.exec(d.digest ?? "");
  if (!m) throw new Error(`${description}: descriptor has an invalid digest ${JSON.stringify(d.digest)}`);
  return need(index, `blobs/${m[1]}/${m[2]}`, description, "blob");
}

async function readBlob(index: ArchiveIndex, d: OciDescriptor, description: string): Promise<unknown> {
  return readJson(blobFile(index, d, description), d.digest ?? "", description);
}

interface RawConfig {
  architecture?: unknown;
  os?: unknown;
  created?: unknown;
  config?: {
    Entrypoint?: unknown;
    Cmd?: unknown;
    Env?: unknown;
    WorkingDir?: unknown;
    User?: unknown;
    Labels?: unknown;
  };
  rootfs?: { type?: unknown; diff_ids?: unknown };
}

function assemble(
  raw: unknown,
  configDigest: string,
  layerFiles: string[],
  description: string,
): ResolvedImage {
  const cfg = (raw ?? {}) as RawConfig;
  const diffIds = stringArray(cfg.rootfs?.diff_ids);
  if (diffIds.length !== layerFiles.length) {
    throw new Error(
      `${description}: the config lists ${diffIds.length} layer digests but the manifest ${layerFiles.length} layers`,
    );
  }
  for (const d of diffIds) {
    if (!/^sha256:[a-f0-9]{64}$/.test(d)) throw new Error(`${description}: unsupported layer digest ${d}`);
  }
  const c = cfg.config ?? {};
  const created = typeof cfg.created === "string" ? new Date(cfg.created) : undefined;
  const labels: Record<string, string> = {};
  if (c.Labels && typeof c.Labels === "object") {
    for (const [k, v] of Object.entries(c.Labels as Record<string, unknown>)) {
      if (typeof v === "string") labels[k] = v;
    }
  }
  const os = typeof cfg.os === "string" ? cfg.os : "linux";
  if (os !== "linux")
    throw new Error(`${description} is a ${os} image: only linux images can run on the cluster`);
  return {
    configDigest,
    config: {
      entrypoint: stringArray(c.Entrypoint),
      cmd: stringArray(c.Cmd),
      env: stringArray(c.Env),
      workingDir: typeof c.WorkingDir === "string" ? c.WorkingDir : "",
      user: typeof c.User === "string" ? c.User : "",
      labels,
      architecture: typeof cfg.architecture === "string" ? cfg.architecture : goArch(hostArch()),
      os,
      ...(created && !Number.isNaN(created.getTime()) ? { created } : {}),
    },
    layers: layerFiles.map((path, i) => ({ path, diffId: diffIds[i] as string })),
  };
}

function stringArray(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
}

function tagList(entries: DockerSaveManifest[]): string {
  const tags = entries.flatMap((e) => stringArray(e.RepoTags));
  return tags.length ? tags.join(", ") : "untagged images only";
}

/** `name` means `name:latest`, as for the Docker CLI. */
function withDefaultTag(ref: string): string {
  if (ref.includes("@")) return ref;
  const lastSlash = ref.lastIndexOf("/");
  return ref.slice(lastSlash + 1).includes(":") ? ref : `${ref}:latest`;
}

/** Node's process.arch names → the Go/OCI names images use. */
export function goArch(nodeArch: string): string {
  const map: Record<string, string> = { x64: "amd64", ia32: "386", arm: "arm", arm64: "arm64" };
  return map[nodeArch] ?? nodeArch;
}
