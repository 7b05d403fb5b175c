/**
 * OCI/Docker image → prepared image → SIF, the container half of `hpcs container-prep` before
 * encryption. Stages (each reported through `onStage`):
 *
 *   export    the image from the Docker daemon or a tar file into a private layer store (image-source)
 *   flatten   the layers into a root filesystem directory (rootfs)
 *   prepare   the sd-container layout, wrapper and runners added (prepare)
 *   squashfs  mksquashfs of the prepared tree (squashfs)
 *   sif       the SIF file around the squashfs (sif)
 *
 * Everything lives in one private directory `<workDir>/hpcs-container-XXXXXX` (0700): layers are
 * deleted once flattened, the tree once squashed, the squashfs once wrapped, so the peak disk use is
 * about twice the image. On failure or abort the directory is removed before the error is thrown;
 * on success the caller streams `sifPath` into encryption and then calls `cleanup()`.
 */

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { basename, join } from "node:path";
import { openImage, type DockerConnection, type ImageConfig, type ImageSourceSpec } from "./image-source.js";
import { addSdContainerLayout, ENTRYPOINT_PATH, type PreparedImageConfig } from "./prepare.js";
import { applyLayers, emptyRootfs, type Rootfs } from "./rootfs.js";
import { rootfsDigest } from "./rootfs-manifest.js";
import { makeSquashfs } from "./squashfs.js";
import { writeSif } from "./sif.js";

export type PrepareStage = "export" | "flatten" | "prepare" | "squashfs" | "sif";

export interface PrepareContainerOptions {
  source: ImageSourceSpec;
  docker?: DockerConnection;
  /** Local directory with room for about twice the image (never shared storage: plaintext). */
  workDir: string;
  signal: AbortSignal;
  /** Also compute the prepared tree's manifest digest (reads every file once more). */
  digest?: boolean;
  /** Keep the prepared tree (`rootfs`) until cleanup(), for inspection and tests. */
  keepRootfs?: boolean;
  mksquashfs?: string;
  processors?: number;
  onStage?: (stage: PrepareStage, event: "start" | "end") => void;
}

export interface PreparedContainer {
  sifPath: string;
  sifSize: number;
  /** The original image's configuration. */
  config: ImageConfig;
  /** What /sd-container/image-config.json says. */
  prepared: PreparedImageConfig;
  /** `sha256:` of the prepared tree's manifest (rootfs-manifest.ts), when `digest` was asked for. */
  rootfsDigest?: string;
  /** The prepared tree, when `keepRootfs` was asked for. */
  rootfs?: Rootfs;
  /** Removes everything this made (the SIF included). Idempotent. */
  cleanup(): Promise<void>;
}

/** Bumped when the layout or the scripts change: part of the SIF ID, so IDs differ when contents do. */
const PREPARE_VERSION = "hpcs-sd-container/1";

export async function prepareContainer(opts: PrepareContainerOptions): Promise<PreparedContainer> {
  opts.signal.throwIfAborted();
  const stage = async <T>(name: PrepareStage, fn: () => Promise<T> | T): Promise<T> => {
    opts.onStage?.(name, "start");
    const r = await fn();
    opts.signal.throwIfAborted();
    opts.onStage?.(name, "end");
    return r;
  };

  const image = await stage("export", () =>
    openImage(opts.source, {
      workDir: opts.workDir,
      signal: opts.signal,
      ...(opts.docker ? { docker: opts.docker } : {}),
    }),
  );
  let dir: string | undefined;
  try {
    dir = await mkdtemp(join(opts.workDir, "hpcs-container-"));
    const work = dir;
    const rootfs = emptyRootfs(join(work, "rootfs"));
    await mkdir(rootfs.dir, { mode: 0o700 });
    await stage("flatten", () => applyLayers(rootfs, image.layers, opts.signal));
    await image.dispose();

    const created = image.config.created ? Math.max(0, Math.floor(image.config.created.getTime() / 1000)) : 0;
    const source = sourceName(opts.source);
    const prepared = await stage("prepare", () =>
      addSdContainerLayout(rootfs, {
        config: image.config,
        configDigest: image.configDigest,
        mtime: created,
      }),
    );
    const digest = opts.digest ? await rootfsDigest(rootfs) : undefined;

    const squashPath = join(work, "rootfs.squashfs");
    await stage("squashfs", () =>
      makeSquashfs({
        rootfs,
        outPath: squashPath,
        pseudoPath: join(work, "pseudo"),
        mkfsTime: created,
        signal: opts.signal,
        ...(opts.mksquashfs ? { mksquashfs: opts.mksquashfs } : {}),
        ...(opts.processors ? { processors: opts.processors } : {}),
      }),
    );
    if (!opts.keepRootfs) await rm(rootfs.dir, { recursive: true, force: true });

    const sifPath = join(work, "image.sif");
    const { size } = await stage("sif", () =>
      writeSif(
        sifPath,
        {
          partitionPath: squashPath,
          deffile: Buffer.from(definitionFile(source, image.configDigest)),
          arch: image.config.architecture,
          id: sifId(image.configDigest),
          createdAt: created,
        },
        opts.signal,
      ),
    );
    await rm(squashPath, { force: true });
    return {
      sifPath,
      sifSize: size,
      config: image.config,
      prepared,
      ...(digest ? { rootfsDigest: digest } : {}),
      ...(opts.keepRootfs ? { rootfs } : {}),
      cleanup: () => rm(work, { recursive: true, force: true }),
    };
  } catch (err) {
    await image.dispose();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The image's name as recorded inside the SIF: a tag, or an archive's base name (never a local path). */
function sourceName(source: ImageSourceSpec): string {
  if ("tarPath" in source) {
    return `docker-archive:${basename(source.tarPath)}${source.tag ? `:${source.tag}` : ""}`;
  }
  return `docker-daemon:${source.tag}`;
}

function definitionFile(source: string, configDigest: string): string {
  return [
    `# Prepared by hpcs container-prep (${PREPARE_VERSION}) from ${source}, image ${configDigest}:`,
    "# the image's root filesystem plus the sd-container layout, runners and entrypoint wrapper.",
    "Bootstrap: scratch",
    "",
    "%runscript",
    `    exec ${ENTRYPOINT_PATH} "$@"`,
    "",
  ].join("\n");
}

/** Deterministic: the same image prepared by the same version gets the same ID (an RFC 9562 v8 UUID). */
function sifId(configDigest: string): Buffer {
  const id = createHash("sha256").update(`${PREPARE_VERSION}\0${configDigest}`).digest().subarray(0, 16);
  id[6] = ((id[6] ?? 0) & 0x0f) | 0x80;
  id[8] = ((id[8] ?? 0) & 0x3f) | 0x80;
  return Buffer.from(id);
}
