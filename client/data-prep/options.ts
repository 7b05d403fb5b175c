/**
 * `hpcs data-prep` flags → validated options: the shared ones (client/ship-options.ts) plus
 *
 *   -i/--input-data   the dataset: a directory (archived with tar) or a single file
 *   -o/--output-data  a local directory; when given, a local copy of the encrypted artifact and of its
 *                     info file are written there (otherwise nothing touches local disk)
 */

import { accessSync, constants, statSync } from "node:fs";
import { basename, resolve } from "node:path";
import { type RawShipFlags, required, type ShipOptions, shipOptions } from "../ship-options.js";
import { UsageError } from "../usage-error.js";

export interface RawDataPrepFlags extends RawShipFlags {
  inputData?: string;
  outputData?: string;
}

export interface DataPrepOptions extends ShipOptions {
  /** Absolute path of the dataset: a directory or a regular file. */
  input: string;
  inputKind: "directory" | "file";
  /** Absolute local directory for the ciphertext and info-file copies, when asked for. */
  outputDir?: string;
}

export function dataPrepOptions(raw: RawDataPrepFlags, cwd = process.cwd()): DataPrepOptions {
  const input = resolve(cwd, required(raw.inputData, "-i/--input-data", "the dataset to encrypt"));
  const inputKind = checkInput(input);
  const opts: DataPrepOptions = { ...shipOptions(raw, `${basename(input)}.tar.gpg`, cwd), input, inputKind };
  if (raw.outputData !== undefined) opts.outputDir = checkOutputDir(resolve(cwd, raw.outputData));
  return opts;
}

function checkInput(path: string): "directory" | "file" {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new UsageError(`input ${path} does not exist: check -i/--input-data`);
  }
  if (!st.isDirectory() && !st.isFile()) {
    throw new UsageError(`input ${path} is neither a directory nor a regular file: check -i/--input-data`);
  }
  try {
    accessSync(path, st.isDirectory() ? constants.R_OK | constants.X_OK : constants.R_OK);
  } catch {
    throw new UsageError(`input ${path} is not readable by you: fix its permissions`);
  }
  return st.isDirectory() ? "directory" : "file";
}

function checkOutputDir(path: string): string {
  try {
    if (!statSync(path).isDirectory()) throw new Error();
    accessSync(path, constants.W_OK | constants.X_OK);
  } catch {
    throw new UsageError(`-o/--output-data ${path} is not a writable directory: create it or pick another`);
  }
  return path;
}
