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
  };
}

export const SERVER_KEYS: KnownKeys = {
  "spire-server": ["address", "port", "trust-domain", "pre-command", "spire-server-bin", "socket-path"],
  "spire-agent": ["socket-path", "spire-agent-socket"],
  vault: ["url", "server-role", "ca-file", "audience", "kv-mount", "jwt-mount"],
  "hpcs-server": ["listen", "tls-cert", "tls-key", "agent-model", "node-attestation", "insecure-ip-identity"],
};

export const DEFAULT_AGENT_SOCKET = "/tmp/spire-agent/public/api.sock";
export const DEFAULT_LISTEN = "0.0.0.0:10080";

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
    audience: audience(v, v.optString("audience") ?? "vault"),
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

  const hpcsServer: ServerConfig["hpcsServer"] = {
    listen: listen(hs),
    agentModel: hs.oneOf("agent-model", ["site", "per-job"] as const, "per-job"),
    nodeAttestation: hs.oneOf("node-attestation", ["munge", "operator", "open"] as const, "munge"),
    insecureIpIdentity: hs.bool("insecure-ip-identity", false),
  };
  if (tlsCert !== undefined && tlsKey !== undefined) hpcsServer.tls = { certFile: tlsCert, keyFile: tlsKey };

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

function listen(r: SectionReader): { host: string; port: number } {
  const v = r.optString("listen") ?? DEFAULT_LISTEN;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) {
    throw r.error(
      "listen",
      `${JSON.stringify(v)} is not host:port; set it to e.g. 0.0.0.0:10080 or [::1]:10080`,
    );
  }
  const host = r.checkHost("listen", m[1] ?? m[2] ?? "", "e.g. 0.0.0.0:10080");
  return { host, port };
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

function audience(r: SectionReader, v: string): string {
  if (!/^[A-Za-z0-9._:/-]{1,255}$/.test(v)) {
    throw r.error(
      "audience",
      `${JSON.stringify(v)} is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. vault`,
    );
  }
  return v;
}
