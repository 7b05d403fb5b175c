#!/usr/bin/env node
/** `hpcs-server` entry point: the CLI (server/cli.ts) over the real composition root (server/app.ts). */

import { createServerApp } from "./app.js";
import { runCli } from "./cli.js";

process.exitCode = await runCli(process.argv.slice(2), {
  createService: async (config, logger, audit) => {
    const app = await createServerApp(config, logger, { audit });
    // The timer is unref'd: it never keeps the process alive after the transports close.
    app.startSweeper();
    return app.service;
  },
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
  createNodeToken: async (config, logger) => {
    const app = await createServerApp(config, logger);
    const issuer = app.operatorTokens;
    if (!issuer) {
      await app.close();
      throw new Error("node-token: [hpcs-server] node-attestation is not operator");
    }
    return async (node, user, ttlSeconds) => {
      try {
        return await issuer.issue(node, user, ttlSeconds);
      } finally {
        await app.close();
      }
    };
  },
});
