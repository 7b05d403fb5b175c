#!/usr/bin/env node
/** `hpcs-server` entry point: the CLI (server/cli.ts) over the real composition root (server/app.ts). */

import { createServerApp } from "./app.js";
import { runCli } from "./cli.js";

process.exitCode = await runCli(process.argv.slice(2), {
  createService: async (config, logger) => (await createServerApp(config, logger)).service,
  createEnroll: async (config, logger) => {
    const app = await createServerApp(config, logger);
    return async (name, ttlSeconds, opts) => {
      try {
        return await app.enrollments.enroll(name, ttlSeconds, opts);
      } finally {
        await app.close();
      }
    };
  },
});
