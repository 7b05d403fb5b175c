/**
 * `hpcs container-prep` flags → validated options: the shared ones (client/ship-options.ts) plus the
 * original's
 *
 *   -b/--base-oci-image  the image: a tag in the local Docker daemon (`myapp:1`), or a `docker save` /
 *                        OCI-layout tar file (`docker-archive:<path>`, `oci-archive:<path>`, or a path
 *                        to an existing file), which needs no daemon
 *   -s/--sif-path        also keep the (unencrypted) SIF here, on your own machine
 *   -e/--encrypted       accepted for compatibility: the container is always encrypted
 *   -d/--docker-path     the Docker daemon's socket (default: DOCKER_HOST, else /var/run/docker.sock)
 */

import { existsSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, resolve } from "node:path";
import { checkImageReference } from "../container/image-reference.js";
import type { ImageSourceSpec } from "../container/image-source.js";
import { type RawShipFlags, required, type ShipOptions, shipOptions } from "../ship-options.js";
import { UsageError } from "../usage-error.js";

export interface RawContainerPrepFlags extends RawShipFlags {
  baseOciImage?: string;
  sifPath?: string;
  encrypted?: boolean;
  dockerPath?: string;
  workDir?: string;
}

export interface ContainerPrepOptions extends ShipOptions {
  source: ImageSourceSpec;
  /** Docker socket, only when the source is a daemon tag. */
  dockerSocket?: string;
  sifPath?: string;
  /** Local directory for the unpacked image and the SIF while they are built (plaintext: never shared storage). */
  workDir: string;
}

const ARCHIVE = /^(docker-archive|oci-archive):(.+)$/;

export function containerPrepOptions(raw: RawContainerPrepFlags, cwd = process.cwd()): ContainerPrepOptions {
  const image = required(
    raw.baseOciImage,
    "-b/--base-oci-image",
    "an image tag or a docker save / OCI tar file",
  );
  const source = imageSource(image, cwd);
  const defaultName = `${("tarPath" in source ? basename(source.tarPath).replace(/\.tar$/, "") : source.tag)
    .replace(/^.*\//, "")
    .replace(/[^A-Za-z0-9._-]/g, "_")
    .replace(/^[._-]+/, "")}.sif.gpg`;
  const opts: ContainerPrepOptions = {
    ...shipOptions(raw, defaultName, cwd),
    source,
    workDir: resolve(cwd, raw.workDir ?? tmpdir()),
  };
  if (!isWritableDir(opts.workDir)) {
    throw new UsageError(
      `--work-dir ${opts.workDir} is not a directory: create it or pick another local disk`,
    );
  }
  if (!("tarPath" in source)) {
    const socket = raw.dockerPath ?? dockerHostSocket(process.env.DOCKER_HOST) ?? "/var/run/docker.sock";
    if (!existsSync(socket)) {
      throw new UsageError(
        `no Docker daemon socket at ${socket}: start Docker, give -d/--docker-path, or pass a docker save tar as -b`,
      );
    }
    opts.dockerSocket = socket;
  }
  if (raw.sifPath !== undefined) {
    const sif = resolve(cwd, raw.sifPath);
    if (!isWritableDir(dirname(sif)))
      throw new UsageError(`-s/--sif-path: ${dirname(sif)} is not a directory`);
    opts.sifPath = sif;
  }
  return opts;
}

function imageSource(image: string, cwd: string): ImageSourceSpec {
  const m = ARCHIVE.exec(image);
  const path = m
    ? resolve(cwd, m[2] ?? "")
    : image.includes("/") || image.endsWith(".tar")
      ? resolve(cwd, image)
      : "";
  if (m || (path && existsSync(path))) {
    try {
      if (!statSync(path).isFile()) throw new Error();
    } catch {
      throw new UsageError(`-b/--base-oci-image: ${path} is not a readable image tar file`);
    }
    return { tarPath: path };
  }
  try {
    return { tag: checkImageReference(image) };
  } catch (err) {
    throw new UsageError(`-b/--base-oci-image: ${(err as Error).message}`);
  }
}

function dockerHostSocket(host: string | undefined): string | undefined {
  return host?.startsWith("unix://") ? host.slice("unix://".length) : undefined;
}

function isWritableDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
