/**
 * `hpcs-server`: the server's command line.
 *
 *   hpcs-server serve --config <ini> [--log-level <level>] [--insecure] [--grpc-port <port>]
 *   hpcs-server enroll <client-name> --config <ini> [--ttl <duration>] [--json] [--force]
 *   hpcs-server node-token <node> <user> --config <ini> [--ttl <duration>] [--json]
 *
 * The service and the enrollment function are injected (the composition root builds them from the
 * config), so this file only parses, loads the config, starts/stops the transports and prints.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error; errors are one line on stderr.
 * `serve` opens the audit log (`[hpcs-server] audit-log`) and hands it to the service and the
 * transports; `enroll` and `node-token` audit what they issued (on stderr when the audit log is stdout,
 * which carries their output).
 */

import { randomUUID } from "node:crypto";

import { InvalidDurationError, parseDuration as parseDurationSec } from "../lib/duration.js";
import { Command, CommanderError, Option } from "commander";
import { ConfigError } from "../lib/config/ini-file.js";
import { loadServerConfig, type ServerConfig } from "../lib/config/server-config.js";
import { createLogger, LOG_LEVELS, type Logger } from "../lib/log.js";
import { InvalidNameError, validateName } from "../lib/names.js";
import { type DestinationStream, type Level, pino } from "pino";
import { type AuditAction, AuditLog, type AuditSink, openAuditSink } from "./service/audit-log.js";
import { type HpcsService, ServiceError } from "./service/types.js";
import { InsecureNotAllowedError, type ServerHandle, startServer } from "./transport/start-server.js";

export { startServer } from "./transport/start-server.js";
export type { ServerHandle, StartOptions } from "./transport/start-server.js";

/**
 * What `hpcs-server enroll` prints: the one-time secret the client registers with. Structurally the
 * EnrollResult of server/service/enrollment.ts (`Enrollments.enroll`), so its bound method fits EnrollFn.
 */
export interface EnrollmentResult {
  clientName: string;
  secret: string;
  expiresAt: Date;
}

/**
 * Issues (or replaces) the enrollment secret of `clientName`, valid for `ttlSeconds`; `force` re-enrolls
 * an already registered client.
 */
export type EnrollFn = (
  clientName: string,
  ttlSeconds: number,
  opts: { force?: boolean },
) => Promise<EnrollmentResult>;

/** Issues a single-use operator node token for exactly (node, user), valid for ttlSeconds. */
export type NodeTokenFn = (
  node: string,
  user: string,
  ttlSeconds: number,
) => Promise<{ token: string; expiresAt: Date }>;

export interface CliDeps {
  createService(config: ServerConfig, logger: Logger, audit: AuditLog): HpcsService | Promise<HpcsService>;
  createEnroll(config: ServerConfig, logger: Logger): EnrollFn | Promise<EnrollFn>;
  /** For `node-token` (node-attestation = operator only). */
  createNodeToken?(config: ServerConfig, logger: Logger): NodeTokenFn | Promise<NodeTokenFn>;
  stdout?: (text: string) => void;
  stderr?: (text: string) => void;
  /** Where server logs go (default stdout). */
  logDestination?: DestinationStream;
  /** Where audit lines go (default: `[hpcs-server] audit-log`). */
  auditSink?: AuditSink;
  /** Resolves when `serve` should stop; default: SIGINT or SIGTERM. */
  waitForShutdown?: (handle: ServerHandle) => Promise<void>;
}

export const DEFAULT_ENROLL_TTL = "24h";
export const DEFAULT_NODE_TOKEN_TTL = "24h";
const MIN_TTL_SECONDS = 60;
const MAX_TTL_SECONDS = 30 * 24 * 3600;

class UsageError extends Error {}

/** "90s", "15m", "24h", "7d" or plain seconds → seconds (60 s … 30 d). */
export function parseDuration(text: string, field = "--ttl"): number {
  try {
    return parseDurationSec(text, MIN_TTL_SECONDS, MAX_TTL_SECONDS);
  } catch (err) {
    if (err instanceof InvalidDurationError) throw new UsageError(`${field}: ${err.message}`);
    throw err;
  }
}

function oneLine(text: string): string {
  return (text.split("\n").find((l) => l.trim() !== "") ?? "error").trim();
}

/** The audit log of one command; `stdout` is where `audit-log = stdout` lines go for it. */
function openAudit(
  deps: CliDeps,
  config: ServerConfig,
  stdout: AuditSink,
): { audit: AuditLog; close(): void } {
  if (deps.auditSink) return { audit: new AuditLog(deps.auditSink), close: () => undefined };
  const out = openAuditSink(config.hpcsServer.auditLog, stdout);
  return { audit: new AuditLog(out.sink), close: out.close };
}

// One-shot commands print their result on stdout; their audit line goes to stderr (synchronous on
// Linux for pipes and files, so the line is out before the process exits).
const toStderr: AuditSink = (line) => void process.stderr.write(line);

/** Runs an operator command's issuing step and audits it (never the issued secret). */
async function issueAudited<T extends { expiresAt: Date }>(
  audit: AuditLog,
  action: AuditAction,
  target: Record<string, string | boolean>,
  issue: () => Promise<T>,
  secretOf: (r: T) => string,
): Promise<T> {
  const base = {
    requestId: `cli-${randomUUID()}`,
    action,
    caller: `operator:uid ${process.getuid?.() ?? "?"}`,
    callerVerified: false,
    target,
  };
  try {
    const r = await issue();
    audit.record({ ...base, result: "ok", target: { ...target, expiresAt: r.expiresAt.toISOString() } }, [
      secretOf(r),
    ]);
    return r;
  } catch (err) {
    audit.recordFailure(base, err);
    throw err;
  }
}

function defaultShutdown(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

export function buildProgram(deps: CliDeps, out: (t: string) => void, err: (t: string) => void): Command {
  const program = new Command("hpcs-server")
    .description("hpcs server: SPIRE identities and Vault roles for confidential HPC jobs")
    .exitOverride()
    .showSuggestionAfterError(false)
    .configureOutput({ writeOut: out, writeErr: err });

  program
    .command("serve")
    .description("serve the gRPC API, the JSON/HTTP API and the original's /api routes")
    .requiredOption("--config <ini>", "server configuration (INI)")
    .addOption(new Option("--log-level <level>", "log level").choices([...LOG_LEVELS]).default("info"))
    .option("--insecure", "allow plaintext when tls-cert/tls-key are unset (test benches only)", false)
    .option("--grpc-port <port>", "gRPC port (default: [hpcs-server] grpc-listen, else the listen port + 1)")
    .action(async (opts: { config: string; logLevel: Level; insecure: boolean; grpcPort?: string }) => {
      const config = loadServerConfig(opts.config);
      let grpcPort: number | undefined;
      if (opts.grpcPort !== undefined) {
        grpcPort = Number(opts.grpcPort);
        if (!/^\d{1,5}$/.test(opts.grpcPort) || grpcPort > 65535) {
          throw new UsageError(`--grpc-port: ${JSON.stringify(opts.grpcPort)} is not a port; use 0-65535`);
        }
      }
      // One synchronous writer on stdout for pino and the audit lines: two writers on fd 1 could
      // interleave inside a line when a pipe is full, and a sync one retries instead of dropping.
      const stdout = deps.logDestination ?? pino.destination({ dest: 1, sync: true });
      const logger = createLogger({ level: opts.logLevel, destination: stdout });
      if (!config.hpcsServer.tls && !opts.insecure) throw new InsecureNotAllowedError();
      const { audit, close } = openAudit(deps, config, (line) => void stdout.write(line));
      try {
        const service = await deps.createService(config, logger, audit);
        const handle = await startServer(config, service, logger, {
          insecure: opts.insecure,
          audit,
          ...(grpcPort !== undefined
            ? { grpc: { host: config.hpcsServer.grpcListen.host, port: grpcPort } }
            : {}),
        });
        await (deps.waitForShutdown ?? defaultShutdown)(handle);
        logger.info("shutting down");
        await handle.close();
      } finally {
        close();
      }
    });

  program
    .command("enroll")
    .description("issue a one-time enrollment secret for a client (prints it once)")
    .argument("<client-name>", "the client's name; becomes its client id")
    .requiredOption("--config <ini>", "server configuration (INI)")
    .option("--ttl <duration>", "how long the secret stays valid (e.g. 15m, 24h, 7d)", DEFAULT_ENROLL_TTL)
    .option("--json", "print one JSON object", false)
    .option("--force", "re-enroll a client that is already registered", false)
    .action(async (name: string, opts: { config: string; ttl: string; json: boolean; force: boolean }) => {
      validateName("client", name);
      const ttl = parseDuration(opts.ttl);
      const config = loadServerConfig(opts.config);
      const logger = createLogger({
        level: "warn",
        ...(deps.logDestination ? { destination: deps.logDestination } : {}),
      });
      const enroll = await deps.createEnroll(config, logger);
      const { audit, close } = openAudit(deps, config, toStderr);
      let r;
      try {
        r = await issueAudited(
          audit,
          "enrollment.issue",
          { clientName: name, force: opts.force },
          () => enroll(name, ttl, opts.force ? { force: true } : {}),
          (x) => x.secret,
        );
      } finally {
        close();
      }
      if (opts.json) {
        out(
          `${JSON.stringify({ clientName: r.clientName, enrollmentSecret: r.secret, expiresAt: r.expiresAt.toISOString() })}\n`,
        );
      } else {
        out(
          `client:            ${r.clientName}\n` +
            `enrollment secret: ${r.secret}\n` +
            `expires:           ${r.expiresAt.toISOString()}\n` +
            "Shown once: hand it to the client over a trusted channel; it registers with it once.\n",
        );
      }
    });

  program
    .command("node-token")
    .description(
      "issue a single-use node token for one compute node and one user (node-attestation = operator); prints it once",
    )
    .argument("<node>", "the compute node's host name")
    .argument("<user>", "the UNIX user the job runs as")
    .requiredOption("--config <ini>", "server configuration (INI)")
    .option("--ttl <duration>", "how long the token stays valid (e.g. 15m, 24h, 7d)", DEFAULT_NODE_TOKEN_TTL)
    .option("--json", "print one JSON object", false)
    .action(async (node: string, user: string, opts: { config: string; ttl: string; json: boolean }) => {
      validateName("node", node);
      validateName("user", user);
      const ttl = parseDuration(opts.ttl);
      const config = loadServerConfig(opts.config);
      if (config.hpcsServer.nodeAttestation !== "operator") {
        throw new UsageError(
          `node-token: [hpcs-server] node-attestation is ${config.hpcsServer.nodeAttestation} in ${config.source}; operator node tokens exist only with node-attestation = operator`,
        );
      }
      if (!deps.createNodeToken) throw new UsageError("node-token: not available in this build");
      const logger = createLogger({
        level: "warn",
        ...(deps.logDestination ? { destination: deps.logDestination } : {}),
      });
      const issue = await deps.createNodeToken(config, logger);
      const { audit, close } = openAudit(deps, config, toStderr);
      let r;
      try {
        r = await issueAudited(
          audit,
          "node-token.issue",
          { node, user },
          () => issue(node, user, ttl),
          (x) => x.token,
        );
      } finally {
        close();
      }
      if (opts.json) {
        out(
          `${JSON.stringify({ node, user, operatorToken: r.token, expiresAt: r.expiresAt.toISOString() })}\n`,
        );
      } else {
        out(
          `node:           ${node}\n` +
            `user:           ${user}\n` +
            `operator token: ${r.token}\n` +
            `expires:        ${r.expiresAt.toISOString()}\n` +
            "Shown once and valid once: the job on that node, as that user, passes it as operatorToken.\n",
        );
      }
    });

  return program;
}

/** Runs the CLI on `argv` (without node and script) and returns the exit code. */
export async function runCli(argv: string[], deps: CliDeps): Promise<number> {
  const out = deps.stdout ?? ((t: string) => void process.stdout.write(t));
  const err = deps.stderr ?? ((t: string) => void process.stderr.write(t));
  // Commander prints its own (one-line) usage errors through writeErr.
  const program = buildProgram(deps, out, (t) => err(`${oneLine(t)}\n`));
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" ? 0 : 2;
    }
    const usage =
      e instanceof ConfigError ||
      e instanceof UsageError ||
      e instanceof InvalidNameError ||
      e instanceof InsecureNotAllowedError ||
      (e instanceof ServiceError && e.code === "invalid_argument");
    const msg = e instanceof Error ? e.message : String(e);
    err(`hpcs-server: ${oneLine(msg)}\n`);
    return usage ? 2 : 1;
  }
}
