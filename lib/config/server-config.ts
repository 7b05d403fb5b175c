import { InvalidDurationError, parseDuration } from "../duration.js";
import { InvalidNameError, validateName } from "../names.js";
import { InvalidRegistrationError, validateSelector } from "../spire/registration.js";
import { ArgvError, parseArgv } from "./command-argv.js";
import { type IniDocument, parseIni, readIniFile } from "./ini-file.js";
import { checkKnownKeys, type KnownKeys, SectionReader } from "./section-reader.js";

/**
 * The hpcs server's INI configuration. Sections and keys of the original are kept:
 *
 *   [spire-server]  address, port, trust-domain, pre-command, spire-server-bin
 *   [spire-agent]   (socket of the server's own agent)
 *   [vault]         url, server-role
 *
 * New keys (all optional):
 *
 *   [spire-server] socket-path    SPIRE server admin API socket; when set the server talks gRPC to it and
 *                                 pre-command / spire-server-bin (the CLI mode) must stay empty
 *   [spire-agent]  socket-path    Workload API socket of the server's own agent
 *                                 (default /tmp/spire-agent/public/api.sock; `spire-agent-socket` is accepted
 *                                 as an alias)
 *   [vault]        ca-file        PEM CA for Vault's TLS certificate (system CAs when absent)
 *                  audience       JWT-SVID audience for Vault logins and in the roles it writes (default vault;
 *                                 the original's roles used TESTING)
 *                  kv-mount       kv-v2 mount (default kv)
 *                  jwt-mount      jwt auth mount (default jwt)
 *   [hpcs-server]  listen         host:port (default 0.0.0.0:10080, the original's port)
 *                  tls-cert, tls-key   PEM files; both or neither
 *                  agent-model    site | per-job (default per-job)
 *                  node-attestation    munge | operator | open (default munge; open is the original's
 *                                 insecure "join token for anyone")
 *                  insecure-ip-identity  true | false (default false): the original's client identity by IP
 *                  grpc-listen    host:port of the gRPC API (default: listen's host, listen's port + 1)
 *                  grpc-mtls-listen    host:port of the gRPC API over SPIFFE mTLS: the server's X509-SVID and
 *                                 trust bundle from its spire-agent, callers authenticated by theirs
 *                                 (default unset: no such listener)
 *                  caller-audience     audience callers' JWT-SVIDs must carry (default hpcs-server)
 *                  client-selectors    space-separated type:value workload selectors given to a registering
 *                                 client that sends none, e.g. "unix:uid:1000 docker:image_id:sha256:…"
 *                                 (default empty: the client must send its selectors)
 *                  node-token-ttl      lifetime of a job's join token and its aliases; must cover the
 *                                 job's walltime (default 1h; 60s … 30d)
 *                  munge-socket   munged socket of the site's realm for node-attestation = munge
 *                                 (default /run/munge/munge.socket.2)
 *                  unmunge-bin, squeue-bin   the programs (default unmunge, squeue; one word each)
 *                  munge-max-age  oldest MUNGE credential accepted, by its ENCODE_TIME (default 5m; 1s … 1h)
 *                  audit-log      stdout | <file>: one JSON line per security-relevant call (default stdout;
 *                                 a file is appended to and created 0600)
 *                  sweep-interval how often expired grants and job aliases are removed (default 30s; 1s … 1h)
 *                  rate-limit-register     registrations per client address, e.g. 10/min (default; 0 or
 *                                 off disables); counts /v1/clients/register, /api/client/register, RegisterClient
 *                  rate-limit-node-token   node token and end-job calls per address (default 120/min; 0 or off
 *                                 disables); counts /v1/nodes/*, /api/agents/token, NodeJoinToken, EndJob
 *                  oidc-issuer    https URL of a trusted OpenID Provider: clients may register with an id_token
 *                                 it issued instead of an enrollment secret (default unset: OIDC login off)
 *                  oidc-audience  the `aud` the id_token must carry: the OIDC client id the CLI uses at the
 *                                 provider (default hpcs-server)
 *                  oidc-client-claim   claim whose value becomes the client id (default sub); it must be a
 *                                 valid client name (lib/names.ts) or the token is refused
 *                  oidc-ca-file   PEM CA of the provider's TLS certificate (system CAs when absent)
 *                  oidc-allowed-clients  space-separated client ids OIDC may register (default empty: any)
 *
 * `pre-command` becomes an argv array (see command-argv.ts), never a shell string.
 */

export interface ServerConfig {
  source: string;
  spireServer: {
    address: string;
    port: number;
    trustDomain: string;
    /** Admin API socket; undefined = CLI mode through preCommand + spireServerBin. */
    socketPath?: string;
    preCommand: string[];
    spireServerBin: string;
  };
  spireAgent: { socketPath: string };
  vault: {
    url: string;
    serverRole: string;
    caFile?: string;
    audience: string;
    kvMount: string;
    jwtMount: string;
  };
  hpcsServer: {
    listen: { host: string; port: number };
    tls?: { certFile: string; keyFile: string };
    agentModel: "site" | "per-job";
    nodeAttestation: "munge" | "operator" | "open";
    insecureIpIdentity: boolean;
    /** gRPC listen address; default listen's host and port + 1. */
    grpcListen: { host: string; port: number };
    /** gRPC over SPIFFE mTLS (server/transport/grpc-mtls.ts); undefined = off. */
    grpcMtlsListen?: { host: string; port: number };
    callerAudience: string;
    /** Selectors for a registering client that sends none; empty = the client must send them. */
    clientSelectors: { type: string; value: string }[];
    /** Join-token and alias lifetime for jobs, in seconds. */
    nodeTokenTtlSec: number;
    /** node-attestation = munge: how credentials are verified and jobs looked up. */
    munge: { socket: string; unmungeBin: string; squeueBin: string; maxAgeSec: number };
    /** Where audit lines go (see server/service/audit-log.ts). */
    auditLog: { to: "stdout" } | { to: "file"; path: string };
    /** How often expired grants and per-job aliases are swept, in seconds. */
    sweepIntervalSec: number;
    /** Token buckets per client address; an absent limit is off. */
    rateLimits: { register?: RateLimit; nodeToken?: RateLimit };
    /** OIDC client login; undefined = off (oidc-issuer unset). */
    oidc?: OidcConfig;
  };
}

/** [hpcs-server] oidc-*: the trusted OpenID Provider and how its id_tokens map to client ids. */
export interface OidcConfig {
  /** The issuer URL exactly as the provider's tokens and discovery document name it. */
  issuer: string;
  audience: string;
  clientClaim: string;
  caFile?: string;
  /** Client ids OIDC may register; empty = any valid client name. */
  allowedClients: string[];
}

/** `count` calls per `periodSec`, refilled continuously (a token bucket of size count). */
export interface RateLimit {
  count: number;
  periodSec: number;
}

export const SERVER_KEYS: KnownKeys = {
  "spire-server": ["address", "port", "trust-domain", "pre-command", "spire-server-bin", "socket-path"],
  "spire-agent": ["socket-path", "spire-agent-socket"],
  vault: ["url", "server-role", "ca-file", "audience", "kv-mount", "jwt-mount"],
  "hpcs-server": [
    "listen",
    "tls-cert",
    "tls-key",
    "agent-model",
    "node-attestation",
    "insecure-ip-identity",
    "grpc-listen",
    "grpc-mtls-listen",
    "caller-audience",
    "client-selectors",
    "node-token-ttl",
    "munge-socket",
    "unmunge-bin",
    "squeue-bin",
    "munge-max-age",
    "audit-log",
    "sweep-interval",
    "rate-limit-register",
    "rate-limit-node-token",
    "oidc-issuer",
    "oidc-audience",
    "oidc-client-claim",
    "oidc-ca-file",
    "oidc-allowed-clients",
  ],
};

export const DEFAULT_AGENT_SOCKET = "/tmp/spire-agent/public/api.sock";
export const DEFAULT_LISTEN = "0.0.0.0:10080";
export const DEFAULT_CALLER_AUDIENCE = "hpcs-server";
export const DEFAULT_NODE_TOKEN_TTL = "1h";
export const DEFAULT_MUNGE_SOCKET = "/run/munge/munge.socket.2";
export const DEFAULT_MUNGE_MAX_AGE = "5m";
export const DEFAULT_SWEEP_INTERVAL = "30s";
export const DEFAULT_RATE_LIMIT_REGISTER = "10/min";
export const DEFAULT_RATE_LIMIT_NODE_TOKEN = "120/min";

export function loadServerConfig(path: string): ServerConfig {
  return serverConfigFrom(readIniFile(path));
}

export function parseServerConfig(text: string, source: string): ServerConfig {
  return serverConfigFrom(parseIni(text, source));
}

export function serverConfigFrom(doc: IniDocument): ServerConfig {
  checkKnownKeys(doc, SERVER_KEYS);
  const ss = new SectionReader(doc, "spire-server");
  const sa = new SectionReader(doc, "spire-agent");
  const v = new SectionReader(doc, "vault");
  const hs = new SectionReader(doc, "hpcs-server");

  const socketPath = ss.optPath("socket-path");
  const preCommand = commandArgv(ss, "pre-command");
  const binWords = commandArgv(ss, "spire-server-bin");
  if (binWords.length > 1) {
    throw ss.error("spire-server-bin", "one program, no arguments; put arguments in pre-command");
  }
  if (socketPath !== undefined && (preCommand.length > 0 || ss.has("spire-server-bin"))) {
    throw ss.error(
      "socket-path",
      "set either socket-path (admin API) or pre-command/spire-server-bin (CLI), not both",
    );
  }

  if (sa.has("socket-path") && sa.has("spire-agent-socket")) {
    throw sa.error("spire-agent-socket", "same as socket-path; keep only socket-path");
  }

  const tlsCert = hs.optPath("tls-cert");
  const tlsKey = hs.optPath("tls-key");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw hs.error(tlsCert === undefined ? "tls-cert" : "tls-key", "set tls-cert and tls-key together");
  }

  const vaultUrl = v.url("url", "the Vault address, e.g. https://vault:8200");
  const caFile = v.optPath("ca-file");
  const vault: ServerConfig["vault"] = {
    url: vaultUrl,
    serverRole: vaultName(v, "server-role", v.optString("server-role") ?? "hpcs-server"),
    audience: audience(v, "audience", v.optString("audience") ?? "vault"),
    kvMount: mount(v, "kv-mount", v.optString("kv-mount") ?? "kv"),
    jwtMount: mount(v, "jwt-mount", v.optString("jwt-mount") ?? "jwt"),
  };
  if (caFile !== undefined) vault.caFile = caFile;

  const spireServer: ServerConfig["spireServer"] = {
    address: ss.host("address", "the SPIRE server's host name, e.g. spire.example.org"),
    port: ss.port("port", "the SPIRE server's port", "8081"),
    trustDomain: ss.trustDomain("trust-domain"),
    preCommand,
    spireServerBin: binWords[0] ?? "spire-server",
  };
  if (socketPath !== undefined) spireServer.socketPath = socketPath;

  const httpListen = listen(hs, "listen", DEFAULT_LISTEN);
  const hpcsServer: ServerConfig["hpcsServer"] = {
    listen: httpListen,
    agentModel: hs.oneOf("agent-model", ["site", "per-job"] as const, "per-job"),
    nodeAttestation: hs.oneOf("node-attestation", ["munge", "operator", "open"] as const, "munge"),
    insecureIpIdentity: hs.bool("insecure-ip-identity", false),
    grpcListen: hs.has("grpc-listen")
      ? listen(hs, "grpc-listen", "")
      : { host: httpListen.host, port: httpListen.port === 65535 ? 65534 : httpListen.port + 1 },
    callerAudience: audience(
      hs,
      "caller-audience",
      hs.optString("caller-audience") ?? DEFAULT_CALLER_AUDIENCE,
    ),
    clientSelectors: selectorList(hs, "client-selectors"),
    nodeTokenTtlSec: duration(hs, "node-token-ttl", hs.optString("node-token-ttl") ?? DEFAULT_NODE_TOKEN_TTL),
    munge: mungeKeys(hs),
    auditLog: auditLog(hs),
    sweepIntervalSec: duration(
      hs,
      "sweep-interval",
      hs.optString("sweep-interval") ?? DEFAULT_SWEEP_INTERVAL,
      1,
      3600,
    ),
    rateLimits: rateLimits(hs),
  };
  if (hpcsServer.grpcListen.port === httpListen.port && hpcsServer.grpcListen.host === httpListen.host) {
    throw hs.error("grpc-listen", "same address as listen; give gRPC its own port, e.g. listen's port + 1");
  }
  // Empty counts as unset, so a template can carry the key switched off.
  if (hs.optString("grpc-mtls-listen") !== undefined) {
    const mtls = listen(hs, "grpc-mtls-listen", "");
    const same = (a: { host: string; port: number }) => a.host === mtls.host && a.port === mtls.port;
    if (same(httpListen) || same(hpcsServer.grpcListen)) {
      throw hs.error("grpc-mtls-listen", "same address as listen or grpc-listen; give mTLS its own port");
    }
    hpcsServer.grpcMtlsListen = mtls;
  }
  if (tlsCert !== undefined && tlsKey !== undefined) hpcsServer.tls = { certFile: tlsCert, keyFile: tlsKey };
  const oidc = oidcKeys(hs);
  if (oidc) hpcsServer.oidc = oidc;

  return {
    source: doc.source,
    spireServer,
    spireAgent: {
      socketPath: sa.optPath("socket-path") ?? sa.optPath("spire-agent-socket") ?? DEFAULT_AGENT_SOCKET,
    },
    vault,
    hpcsServer,
  };
}

/** [hpcs-server] munge-*: read in every mode, so a typo fails at start-up, not at the first job. */
function mungeKeys(hs: SectionReader): ServerConfig["hpcsServer"]["munge"] {
  const program = (key: string, fallback: string): string => {
    const words = commandArgv(hs, key);
    if (words.length > 1) throw hs.error(key, `one program, no arguments, e.g. /usr/bin/${fallback}`);
    return words[0] ?? fallback;
  };
  const maxAge = hs.optString("munge-max-age") ?? DEFAULT_MUNGE_MAX_AGE;
  let maxAgeSec: number;
  try {
    maxAgeSec = parseDuration(maxAge, 1, 3600);
  } catch (err) {
    if (err instanceof InvalidDurationError) throw hs.error("munge-max-age", err.message);
    throw err;
  }
  return {
    socket: hs.optPath("munge-socket") ?? DEFAULT_MUNGE_SOCKET,
    unmungeBin: program("unmunge-bin", "unmunge"),
    squeueBin: program("squeue-bin", "squeue"),
    maxAgeSec,
  };
}

const OIDC_DEPENDENT_KEYS = ["oidc-audience", "oidc-client-claim", "oidc-ca-file", "oidc-allowed-clients"];

/** [hpcs-server] oidc-*: all or nothing, so a half-configured OIDC login fails at start-up. */
function oidcKeys(hs: SectionReader): OidcConfig | undefined {
  const issuer = hs.optUrl(
    "oidc-issuer",
    "the OpenID Provider's issuer URL, e.g. https://idp.example.org/realms/hpc",
  );
  if (issuer === undefined) {
    const stray = OIDC_DEPENDENT_KEYS.find((k) => hs.has(k));
    if (stray)
      throw hs.error(stray, "set without oidc-issuer; set oidc-issuer to enable OIDC login or remove it");
    return undefined;
  }
  if (!issuer.startsWith("https://")) {
    throw hs.error("oidc-issuer", `${issuer} is not https; the provider's keys must be fetched over TLS`);
  }
  const clientClaim = hs.optString("oidc-client-claim") ?? "sub";
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(clientClaim)) {
    throw hs.error(
      "oidc-client-claim",
      `${JSON.stringify(clientClaim)} is not a claim name; use letters, digits, '_', '.', ':' or '-', e.g. sub or preferred_username`,
    );
  }
  const allowed = (hs.optString("oidc-allowed-clients") ?? "").split(/\s+/).filter((w) => w !== "");
  for (const name of allowed) {
    try {
      validateName("client", name);
    } catch (err) {
      if (err instanceof InvalidNameError) throw hs.error("oidc-allowed-clients", err.message);
      throw err;
    }
  }
  const out: OidcConfig = {
    issuer,
    audience: audience(hs, "oidc-audience", hs.optString("oidc-audience") ?? DEFAULT_CALLER_AUDIENCE),
    clientClaim,
    allowedClients: allowed,
  };
  const ca = hs.optPath("oidc-ca-file");
  if (ca !== undefined) out.caFile = ca;
  return out;
}

function auditLog(hs: SectionReader): ServerConfig["hpcsServer"]["auditLog"] {
  const v = hs.optString("audit-log");
  if (v === undefined || v === "stdout") return { to: "stdout" };
  if (v === "")
    throw hs.error("audit-log", "empty; set it to stdout or a file path, e.g. /var/log/hpcs/audit.log");
  return { to: "file", path: hs.optPath("audit-log") as string };
}

function rateLimits(hs: SectionReader): ServerConfig["hpcsServer"]["rateLimits"] {
  const out: ServerConfig["hpcsServer"]["rateLimits"] = {};
  const register = rateLimit(hs, "rate-limit-register", DEFAULT_RATE_LIMIT_REGISTER);
  const nodeToken = rateLimit(hs, "rate-limit-node-token", DEFAULT_RATE_LIMIT_NODE_TOKEN);
  if (register) out.register = register;
  if (nodeToken) out.nodeToken = nodeToken;
  return out;
}

const RATE_UNITS: Record<string, number> = { s: 1, sec: 1, m: 60, min: 60, h: 3600, hour: 3600 };

/** "10/min", "5/s", "300/h"; "0" or "off" = no limit. */
export function parseRateLimit(v: string): RateLimit | undefined {
  const t = v.trim().toLowerCase();
  if (t === "0" || t === "off") return undefined;
  const m = /^(\d{1,6})\s*\/\s*([a-z]+)$/.exec(t);
  const periodSec = RATE_UNITS[m?.[2] ?? ""];
  const count = Number(m?.[1]);
  if (!m || periodSec === undefined || !(count >= 1)) {
    throw new Error(
      `${JSON.stringify(v)} is not a rate; use <count>/<s|min|h>, e.g. 10/min, or 0 / off for no limit`,
    );
  }
  return { count, periodSec };
}

function rateLimit(hs: SectionReader, key: string, fallback: string): RateLimit | undefined {
  try {
    return parseRateLimit(hs.optString(key) ?? fallback);
  } catch (err) {
    throw hs.error(key, (err as Error).message);
  }
}

function commandArgv(r: SectionReader, key: string): string[] {
  const v = r.optString(key);
  if (v === undefined) return [];
  try {
    return parseArgv(v);
  } catch (err) {
    if (err instanceof ArgvError) throw r.error(key, err.message);
    throw err;
  }
}

function listen(r: SectionReader, key: string, fallback: string): { host: string; port: number } {
  const v = r.optString(key) ?? fallback;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  const examplePort = ({ listen: 10080, "grpc-listen": 10081 } as Record<string, number>)[key] ?? 10082;
  const example = `0.0.0.0:${examplePort} or [::1]:${examplePort}`;
  if (!m || port < 1 || port > 65535) {
    throw r.error(key, `${JSON.stringify(v)} is not host:port; set it to e.g. ${example}`);
  }
  const host = r.checkHost(key, m[1] ?? m[2] ?? "", `e.g. ${example.split(" ")[0]}`);
  return { host, port };
}

/** Space-separated `type:value` selectors (the type ends at the first ':'). */
function selectorList(r: SectionReader, key: string): { type: string; value: string }[] {
  const v = r.optString(key);
  if (v === undefined || v.trim() === "") return [];
  return v
    .trim()
    .split(/\s+/)
    .map((word) => {
      const i = word.indexOf(":");
      if (i <= 0 || i === word.length - 1) {
        throw r.error(
          key,
          `${JSON.stringify(word)} is not type:value; write space-separated selectors, e.g. unix:uid:1000 docker:image_id:sha256:…`,
        );
      }
      try {
        return { ...validateSelector({ type: word.slice(0, i), value: word.slice(i + 1) }) };
      } catch (err) {
        if (err instanceof InvalidRegistrationError) throw r.error(key, err.message);
        throw err;
      }
    });
}

const MIN_DURATION_SEC = 60;
const MAX_DURATION_SEC = 30 * 24 * 3600;

/** "90s", "15m", "1h", "7d" or plain seconds, 60 s … 30 d unless other bounds are given. */
function duration(
  r: SectionReader,
  key: string,
  v: string,
  min = MIN_DURATION_SEC,
  max = MAX_DURATION_SEC,
): number {
  try {
    return parseDuration(v, min, max);
  } catch (err) {
    if (err instanceof InvalidDurationError) throw r.error(key, err.message);
    throw err;
  }
}

function vaultName(r: SectionReader, key: string, v: string): string {
  if (!/^[a-z0-9](?:[a-z0-9_.-]{0,61}[a-z0-9])?$/.test(v)) {
    throw r.error(
      key,
      `${JSON.stringify(v)} is not a Vault role name; use lower-case letters, digits, '.', '_' or '-', e.g. hpcs-server`,
    );
  }
  return v;
}

function mount(r: SectionReader, key: string, v: string): string {
  if (!/^[a-z0-9][a-z0-9_-]{0,62}(?:\/[a-z0-9][a-z0-9_-]{0,62})*$/.test(v)) {
    throw r.error(
      key,
      `${JSON.stringify(v)} is not a mount path; use lower-case letters, digits, '_' or '-', e.g. kv`,
    );
  }
  return v;
}

function audience(r: SectionReader, key: string, v: string): string {
  if (!/^[A-Za-z0-9._:/-]{1,255}$/.test(v)) {
    throw r.error(
      key,
      `${JSON.stringify(v)} is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. vault`,
    );
  }
  return v;
}
