/**
 * The composition root: builds the real HpcsService from a ServerConfig — SPIRE through the admin
 * socket (or the CLI behind a pre-command), Vault with the server's own login kept alive — and
 * nothing else. Everything stateful lives in SPIRE and Vault, so two apps built from the same
 * config behave as one (a restart loses nothing).
 */

import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { Logger } from "pino";
import type { ServerConfig } from "../lib/config/server-config.js";
import { SpiffeId } from "../lib/spiffe-id.js";
import { WorkloadClient } from "../lib/spiffe/workload-client.js";
import type { SpireRegistration } from "../lib/spire/registration.js";
import { SpireServerCli } from "../lib/spire/server-cli.js";
import { SpireServerClient } from "../lib/spire/server-client.js";
import { TokenKeeper } from "../lib/vault/token-keeper.js";
import { VaultClient } from "../lib/vault/vault-client.js";
import { AuditLog } from "./service/audit-log.js";
import { auditedService } from "./service/audited-service.js";
import { CallerAuthenticator } from "./service/caller.js";
import { ClientRegistrar } from "./service/clients.js";
import { OidcLogin } from "./service/oidc-login.js";
import { Enrollments } from "./service/enrollment.js";
import { GrantService } from "./service/grants.js";
import { MungeAttestor, NssHostResolver } from "./service/munge-attestor.js";
import { VaultReplayGuard } from "./service/munge-replay.js";
import {
  type NodeAttestor,
  NssGroupResolver,
  NssUidResolver,
  OpenAttestor,
  OperatorAttestor,
} from "./service/node-attestation.js";
import { NodeTokens } from "./service/nodes.js";
import { SlurmJobs } from "./service/slurm-jobs.js";
import { sweepExpiredAliases } from "./service/sweeper.js";
import type { HealthResponse, HpcsService, Selector } from "./service/types.js";
import { Unmunge } from "./service/unmunge.js";

export const VERSION = "0.1.0";

export interface ServerApp {
  service: HpcsService;
  enrollments: Enrollments;
  /** Present in operator node-attestation mode: `hpcs-server node-token` issues through it. */
  operatorTokens?: OperatorAttestor;
  /**
   * Every `intervalMs` (default `[hpcs-server] sweep-interval`): revokes grants past their deadline,
   * with their secrets (GrantService.sweepExpired, audited as grant.expire), and deletes expired
   * per-job aliases this process handed out (service/sweeper.ts) instead of waiting for SPIRE's
   * 5-minute prune. Returns a stop function. Aliases issued before a restart are left to SPIRE's own
   * prune; expired grants are found in Vault, so any replica sweeps them.
   */
  startSweeper(intervalMs?: number): () => void;
  close(): Promise<void>;
}

export interface AppOptions {
  /**
   * How the server gets its Vault token. Default: a JWT-SVID from its spire-agent
   * ([spire-agent] socket-path) for audience [vault] audience, logged in with [vault] server-role.
   */
  vaultLogin?: (vault: VaultClient) => Promise<TokenKeeper>;
  /** Workload selectors given to a registering client that sends none; default [hpcs-server] client-selectors. */
  defaultClientSelectors?: Selector[];
  /** Audience the server accepts on callers' JWT-SVIDs; default [hpcs-server] caller-audience. */
  callerAudience?: string;
  /** Join-token and alias lifetime for jobs (seconds); default [hpcs-server] node-token-ttl. */
  nodeTokenTtlSec?: number;
  /** Where every call and every sweep is audited; default: nowhere (the CLI passes the real one). */
  audit?: AuditLog;
}

export function spireFor(config: ServerConfig): SpireRegistration {
  const s = config.spireServer;
  return s.socketPath
    ? new SpireServerClient({ socketPath: s.socketPath })
    : new SpireServerCli({ preCommand: s.preCommand, serverBin: s.spireServerBin });
}

/**
 * The server's own Vault login: a JWT-SVID from its local agent, renewed or replaced before expiry.
 * The first login is retried with backoff for up to `startupTimeoutMs` (default 60 s): at boot the
 * agent may not have its SVID yet, and a server that exits then only adds a restart loop.
 */
export async function svidVaultLogin(
  config: ServerConfig,
  vault: VaultClient,
  logger: Logger,
  startupTimeoutMs = 60_000,
): Promise<TokenKeeper> {
  const deadline = Date.now() + startupTimeoutMs;
  for (let delay = 500; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await startKeeper(config, vault, logger);
    } catch (err) {
      if (Date.now() + delay > deadline) throw err;
      logger.warn({ error: (err as Error).message, retryInMs: delay }, "first vault login failed; retrying");
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function startKeeper(config: ServerConfig, vault: VaultClient, logger: Logger): Promise<TokenKeeper> {
  const login = async () => {
    const workload = new WorkloadClient(config.spireAgent.socketPath);
    try {
      const [svid] = await workload.fetchJwtSvid({ audience: [config.vault.audience] });
      if (!svid) throw new Error(`spire-agent at ${config.spireAgent.socketPath} issued no JWT-SVID`);
      return await vault.loginJwt(config.vault.serverRole, svid.token);
    } finally {
      workload.close();
    }
  };
  return TokenKeeper.start({
    login,
    renew: (t) => vault.renewSelf(t),
    onEvent: (e) =>
      e.kind === "error"
        ? logger.warn(
            { during: e.during, error: e.error.message, retryInMs: e.retryInMs },
            "vault login failed",
          )
        : logger.info({ vault: e.kind, ttlSec: e.ttlSec }, "vault login kept alive"),
  });
}

export async function createServerApp(
  config: ServerConfig,
  logger: Logger,
  opts: AppOptions = {},
): Promise<ServerApp> {
  const td = config.spireServer.trustDomain;
  const spire = spireFor(config);
  const anonymous = new VaultClient({
    url: config.vault.url,
    caPem: config.vault.caFile ? readFileSync(config.vault.caFile) : undefined,
    timeoutMs: 30_000,
    kvMount: config.vault.kvMount,
    jwtMount: config.vault.jwtMount,
  });
  const keeper = await (opts.vaultLogin ?? ((v) => svidVaultLogin(config, v, logger)))(anonymous);
  const vault = anonymous.withToken(() => keeper.token());

  const enrollments = new Enrollments({ vault });
  const hs = config.hpcsServer;
  const caller = new CallerAuthenticator({
    spire,
    trustDomain: td,
    audience: opts.callerAudience ?? hs.callerAudience,
  });
  const defaultSelectors =
    opts.defaultClientSelectors ?? (hs.clientSelectors.length > 0 ? hs.clientSelectors : undefined);
  const registrar = new ClientRegistrar({
    config,
    spire,
    vault,
    enrollments,
    logger,
    ...(hs.oidc ? { oidc: new OidcLogin({ config: hs.oidc }) } : {}),
    ...(defaultSelectors ? { defaultSelectors } : {}),
  });
  const grants = new GrantService({ config, spire, vault, caller });
  const groups = new NssGroupResolver({ logger });
  let attestor: NodeAttestor;
  let operatorTokens: OperatorAttestor | undefined;
  switch (config.hpcsServer.nodeAttestation) {
    case "operator":
      attestor = operatorTokens = new OperatorAttestor(vault, groups);
      break;
    case "open":
      logger.warn(
        { nodeAttestation: "open" },
        "node-attestation = open: anyone may obtain a node join token",
      );
      attestor = new OpenAttestor(groups, logger);
      break;
    default:
      if (!existsSync(hs.munge.socket)) {
        // A warning, not a refusal: munged may be a sidecar that comes up after the server.
        logger.warn(
          { mungeSocket: hs.munge.socket },
          "node-attestation = munge but munge-socket does not exist (yet): node tokens fail until munged runs",
        );
      }
      attestor = new MungeAttestor({
        decoder: new Unmunge({ socket: hs.munge.socket, unmungeBin: hs.munge.unmungeBin }),
        replay: new VaultReplayGuard(vault),
        // SLURM_CONF is the one piece of the server's environment squeue gets (its env is fixed).
        jobs: new SlurmJobs({
          squeueBin: hs.munge.squeueBin,
          ...(process.env.SLURM_CONF ? { slurmConf: process.env.SLURM_CONF } : {}),
        }),
        users: new NssUidResolver(),
        groups,
        hosts: new NssHostResolver(),
        maxAgeSec: hs.munge.maxAgeSec,
        logger,
      });
  }
  const nodes = new NodeTokens({
    spire,
    attestor,
    trustDomain: td,
    agentModel: config.hpcsServer.agentModel,
    ttlSeconds: opts.nodeTokenTtlSec ?? hs.nodeTokenTtlSec,
  });
  // Alias IDs this process issued, with their expiry, for startSweeper.
  const issuedAliases = new Map<string, number>();

  const health = async (): Promise<HealthResponse> => {
    const [spireOk, vaultOk] = await Promise.all([
      spire.getBundle().then(
        () => true,
        () => false,
      ),
      keeper.fresh().then(
        () => true,
        () => false,
      ),
    ]);
    return {
      status: spireOk && vaultOk ? "serving" : "not_serving",
      spire: spireOk,
      vault: vaultOk,
      version: VERSION,
    };
  };

  const audit = opts.audit ?? AuditLog.discard();
  const inner: HpcsService = {
    registerClient: (ctx, req) => registrar.registerClient(ctx, req),
    grant: (ctx, req) => grants.grant(ctx, req),
    revoke: (ctx, req) => grants.revoke(ctx, req),
    listGrants: (ctx) => grants.listGrants(ctx),
    nodeJoinToken: async (ctx, req) => {
      const r = await nodes.nodeJoinToken(ctx, req);
      if (hs.agentModel === "per-job") {
        for (const id of [r.agentSpiffeId, ...r.aliases]) issuedAliases.set(id, r.expiresAt.getTime());
      }
      return r;
    },
    endJob: (ctx, req) => nodes.endJob(ctx, req),
    health: () => health(),
  };
  const service = auditedService(inner, audit);

  const sweepGrants = async () => {
    for (const g of await grants.sweepExpired()) {
      const target = { clientId: g.clientId, secret: g.secret, expiresAt: g.expiresAt.toISOString() };
      const base = {
        requestId: `sweep-${randomUUID()}`,
        action: "grant.expire" as const,
        caller: "hpcs-server",
      };
      if (g.removed) {
        audit.record({ ...base, callerVerified: true, result: "ok", target: { ...target, ...g.removed } });
        logger.info({ ...target, ...g.removed }, "expired grant revoked");
      } else {
        audit.record({ ...base, callerVerified: true, result: "error", reason: g.error, target });
        logger.warn({ ...target, error: g.error }, "expired grant not revoked; retrying next round");
      }
    }
  };
  const sweepAliases = async () => {
    const now = Date.now();
    const due = [...issuedAliases].filter(([, exp]) => exp <= now).map(([id]) => id);
    if (due.length === 0) return;
    const deleted = await sweepExpiredAliases(
      spire,
      due.map((id) => SpiffeId.parse(id)),
    );
    for (const id of due) issuedAliases.delete(id);
    if (deleted.length > 0) logger.info({ deleted: deleted.length }, "expired job aliases deleted");
  };

  return {
    service,
    enrollments,
    operatorTokens,
    startSweeper(intervalMs = hs.sweepIntervalSec * 1000) {
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        const round = async (what: string, sweep: () => Promise<void>) =>
          sweep().catch((err: unknown) =>
            logger.warn({ error: (err as Error).message }, `${what} sweep failed; retrying next round`),
          );
        void Promise.all([round("grant", sweepGrants), round("alias", sweepAliases)]).finally(() => {
          running = false;
        });
      }, intervalMs);
      timer.unref();
      return () => clearInterval(timer);
    },
    async close() {
      keeper.stop();
      spire.close();
    },
  };
}
