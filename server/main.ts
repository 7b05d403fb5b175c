#!/usr/bin/env node
/**
 * `hpcs-server` entry point. The composition root that builds the real HpcsService and enrollment from
 * the config (lib/spire + lib/vault + server/service) is not wired here yet: until it is, `serve` and
 * `enroll` stop with a one-line error (exit 1) after the config has been loaded and checked.
 */

import type { ServerConfig } from "../lib/config/server-config.js";
import { runCli } from "./cli.js";

function notWired(what: string): (config: ServerConfig) => never {
  return () => {
    throw new Error(`${what} is not wired into this build yet (server/main.ts composition root)`);
  };
}

process.exitCode = await runCli(process.argv.slice(2), {
  createService: notWired("the hpcs service"),
  createEnroll: notWired("client enrollment"),
});
