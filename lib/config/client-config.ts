import { InvalidNameError, type NameKind, validateName } from "../names.js";
import { SpiffeId } from "../spiffe-id.js";
import { type IniDocument, parseIni, readIniFile } from "./ini-file.js";
import { checkKnownKeys, type KnownKeys, SectionReader } from "./section-reader.js";

/**
 * The client tools' INI configuration (data-prep, container-prep, job-prep). Sections and keys of the
 * original are kept:
 *
 *   [spire-server]   address, port, trust-domain
 *   [hpcs-server]    url
 *   [vault]          url
 *   [supercomputer]  address, username
 *
 * New keys (all optional):
 *
 *   [spire-server]   trust-bundle             PEM file of the SPIRE trust bundle (`spire-server bundle show`);
 *                                             required to start the client's spire-agent
 *                    agent-bin                the spire-agent program: a name looked up on PATH, or a path
 *                                             (default spire-agent)
 *   [hpcs-server]    ca-file                  PEM CA for the hpcs server's TLS certificate
 *                    enrollment-secret-file   file holding the enrollment secret: the bare secret, or the
 *                                             JSON `hpcs-server enroll --json` prints; each registration
 *                                             replaces it with the next one-time secret the server returns
 *                    client-name              the name the operator enrolled (`hpcs-server enroll <name>`);
 *                                             not needed when the secret file is that JSON
 *                    audience                 audience of the JWT-SVIDs sent to the hpcs server; the
 *                                             server's caller-audience (default hpcs-server)
 *                    oidc-token-file          OIDC login: file holding an id_token of the server's trusted
 *                                             provider (the bare JWT, or a token response with id_token)
 *                    oidc-issuer              OIDC login by device code (RFC 8628): the provider's issuer URL
 *                    oidc-client-id           ... and the CLI's OIDC client id there (required with oidc-issuer)
 *                    oidc-ca-file             ... and the PEM CA of the provider's TLS certificate
 *                    grpc-mtls                host:port of the server's gRPC API over SPIFFE mTLS
 *                                             (its grpc-mtls-listen): grant and revoke go there,
 *                                             authenticated by the client workload's X509-SVID, instead
 *                                             of JSON/HTTP with a JWT-SVID (default unset: HTTP)
 *                    grpc-mtls-server-id      the SPIFFE ID the server must present there (default
 *                                             spiffe://<trust-domain>/hpcs-server)
 *                  OIDC login replaces the enrollment secret: oidc-token-file or oidc-issuer (not both), and
 *                  neither together with enrollment-secret-file or client-name. The environment variable
 *                  HPCS_OIDC_TOKEN (an id_token) wins over all of these for one run.
 *   [vault]          ca-file                  PEM CA for Vault's TLS certificate
 *                    audience                 audience of the JWT-SVIDs for Vault logins; the server's
 *                                             [vault] audience (default vault)
 *   [supercomputer]  port                     SSH port of the login node (default 22)
 *                    ssh-key                  private key file (default: ssh-agent / ssh's own defaults)
 *                    known-hosts              known_hosts file to verify the login node against
 *                    proxy-jump               [user@]host[:port][,...] as in ssh -J
 *                    site-tools               true: job-prep uses the login node's own spire-agent and
 *                                             gocryptfs when they are on its PATH (default false: ship them)
 *
 * File paths: `~/` is the home directory; relative paths are relative to the config file.
 */

export interface ClientConfig {
  source: string;
  spireServer: {
    address: string;
    port: number;
    trustDomain: string;
    /** PEM trust bundle for the client's spire-agent; undefined = not configured (the agent cannot start). */
    trustBundle?: string;
    /** A program name (looked up on PATH) or an absolute path. */
    agentBin: string;
  };
  hpcsServer: {
    url: string;
    caFile?: string;
    enrollmentSecretFile?: string;
    clientName?: string;
    /** JWT-SVID audience for calls to the hpcs server. */
    audience: string;
    /** OIDC login instead of an enrollment secret; undefined = enrollment secret (or HPCS_OIDC_TOKEN). */
    oidc?: ClientOidc;
    /** Grant/revoke over gRPC with SPIFFE mTLS; undefined = JSON/HTTP with a JWT-SVID. */
    grpcMtls?: { host: string; port: number; serverId: string };
  };
  vault: { url: string; caFile?: string; audience: string };
  supercomputer: {
    address: string;
    username: string;
    port: number;
    sshKey?: string;
    knownHosts?: string;
    proxyJump?: ProxyHop[];
    /** job-prep: use the site's spire-agent/gocryptfs when the login node has them (default false). */
    siteTools?: boolean;
  };
}

/** Where the client's OIDC id_token comes from. */
export type ClientOidc =
  | { source: "file"; tokenFile: string }
  | { source: "device-code"; issuer: string; clientId: string; caFile?: string };

export interface ProxyHop {
  user?: string;
  host: string;
  port: number;
}

export const CLIENT_KEYS: KnownKeys = {
  "spire-server": ["address", "port", "trust-domain", "trust-bundle", "agent-bin"],
  "hpcs-server": [
    "url",
    "ca-file",
    "enrollment-secret-file",
    "client-name",
    "audience",
    "oidc-token-file",
    "oidc-issuer",
    "oidc-client-id",
    "oidc-ca-file",
    "grpc-mtls",
    "grpc-mtls-server-id",
  ],
  vault: ["url", "ca-file", "audience"],
  supercomputer: ["address", "username", "port", "ssh-key", "known-hosts", "proxy-jump", "site-tools"],
};

export const DEFAULT_AGENT_BIN = "spire-agent";
export const DEFAULT_SERVER_AUDIENCE = "hpcs-server";
export const DEFAULT_VAULT_AUDIENCE = "vault";

export function loadClientConfig(path: string): ClientConfig {
  return clientConfigFrom(readIniFile(path));
}

export function parseClientConfig(text: string, source: string): ClientConfig {
  return clientConfigFrom(parseIni(text, source));
}

export function clientConfigFrom(doc: IniDocument): ClientConfig {
  checkKnownKeys(doc, CLIENT_KEYS);
  const ss = new SectionReader(doc, "spire-server");
  const hs = new SectionReader(doc, "hpcs-server");
  const v = new SectionReader(doc, "vault");
  const sc = new SectionReader(doc, "supercomputer");

  const hpcsServer: ClientConfig["hpcsServer"] = {
    url: hs.url("url", "the hpcs server's address, e.g. https://hpcs-server:10080"),
    audience: audience(hs, "audience", DEFAULT_SERVER_AUDIENCE),
  };
  const hsCa = hs.optPath("ca-file");
  if (hsCa !== undefined) hpcsServer.caFile = hsCa;
  const secretFile = hs.optPath("enrollment-secret-file");
  if (secretFile !== undefined) hpcsServer.enrollmentSecretFile = secretFile;
  const clientName = hs.optString("client-name");
  if (clientName !== undefined) hpcsServer.clientName = checkName(hs, "client-name", "client", clientName);
  const oidc = oidcKeys(hs);
  if (oidc) {
    const enrollmentKey = ["enrollment-secret-file", "client-name"].find((k) => hs.has(k));
    if (enrollmentKey) {
      throw hs.error(
        enrollmentKey,
        "set together with OIDC login (oidc-token-file / oidc-issuer); keep one login method",
      );
    }
    hpcsServer.oidc = oidc;
  }

  const trustDomain = ss.trustDomain("trust-domain");
  const grpcMtls = grpcMtlsKeys(hs, trustDomain);
  if (grpcMtls) hpcsServer.grpcMtls = grpcMtls;

  const vault: ClientConfig["vault"] = {
    url: v.url("url", "the Vault address, e.g. https://vault:8200"),
    audience: audience(v, "audience", DEFAULT_VAULT_AUDIENCE),
  };
  const vCa = v.optPath("ca-file");
  if (vCa !== undefined) vault.caFile = vCa;

  const username = checkName(
    sc,
    "username",
    "user",
    sc.string("username", "your user name on the supercomputer, e.g. alice"),
  );
  const supercomputer: ClientConfig["supercomputer"] = {
    address: sc.host("address", "the login node's host name, e.g. lumi.csc.fi"),
    username,
    port: sc.port("port", "the login node's SSH port", "22", 22),
  };
  const key = sc.optPath("ssh-key");
  if (key !== undefined) supercomputer.sshKey = key;
  const kh = sc.optPath("known-hosts");
  if (kh !== undefined) supercomputer.knownHosts = kh;
  const pj = sc.optString("proxy-jump");
  if (pj !== undefined) supercomputer.proxyJump = pj.split(",").map((hop) => proxyHop(sc, hop.trim()));
  if (sc.bool("site-tools", false)) supercomputer.siteTools = true;

  const spireServer: ClientConfig["spireServer"] = {
    address: ss.host("address", "the SPIRE server's host name, e.g. spire.example.org"),
    port: ss.port("port", "the SPIRE server's port", "8081"),
    trustDomain,
    agentBin: agentBin(ss, "agent-bin"),
  };
  const bundle = ss.optPath("trust-bundle");
  if (bundle !== undefined) spireServer.trustBundle = bundle;

  return {
    source: doc.source,
    spireServer,
    hpcsServer,
    vault,
    supercomputer,
  };
}

/** [hpcs-server] oidc-*: a token file, or the device-code flow at an issuer; never both. */
function oidcKeys(hs: SectionReader): ClientOidc | undefined {
  const tokenFile = hs.optPath("oidc-token-file");
  const issuer = hs.optUrl("oidc-issuer", "the OpenID Provider's issuer URL, e.g. https://idp.example.org");
  if (tokenFile !== undefined) {
    const other = ["oidc-issuer", "oidc-client-id", "oidc-ca-file"].find((k) => hs.has(k));
    if (other)
      throw hs.error(
        other,
        "set together with oidc-token-file; use either a token file or the device-code login",
      );
    return { source: "file", tokenFile };
  }
  if (issuer === undefined) {
    const stray = ["oidc-client-id", "oidc-ca-file"].find((k) => hs.has(k));
    if (stray)
      throw hs.error(stray, "set without oidc-issuer; set oidc-issuer for device-code login or remove it");
    return undefined;
  }
  if (!issuer.startsWith("https://")) {
    throw hs.error("oidc-issuer", `${issuer} is not https; the login must reach the provider over TLS`);
  }
  const clientId = hs.string("oidc-client-id", "the CLI's OIDC client id at the provider, e.g. hpcs-cli");
  if (!/^[\x21-\x7e]{1,255}$/.test(clientId)) {
    throw hs.error(
      "oidc-client-id",
      `${JSON.stringify(clientId)} is not a client id; use printable ASCII without spaces`,
    );
  }
  const out: ClientOidc = { source: "device-code", issuer, clientId };
  const ca = hs.optPath("oidc-ca-file");
  if (ca !== undefined) out.caFile = ca;
  return out;
}

/** [hpcs-server] grpc-mtls (host:port) and the server's SPIFFE ID there, which must be of our trust domain. */
function grpcMtlsKeys(hs: SectionReader, trustDomain: string): ClientConfig["hpcsServer"]["grpcMtls"] {
  const v = hs.optString("grpc-mtls");
  if (v === undefined) {
    if (hs.has("grpc-mtls-server-id")) {
      throw hs.error(
        "grpc-mtls-server-id",
        "set without grpc-mtls; set grpc-mtls to the server's mTLS host:port or remove it",
      );
    }
    return undefined;
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) {
    throw hs.error("grpc-mtls", `${JSON.stringify(v)} is not host:port; set it to e.g. hpcs-server:10082`);
  }
  const host = hs.checkHost("grpc-mtls", m[1] ?? m[2] ?? "", "e.g. hpcs-server");
  const idText = hs.optString("grpc-mtls-server-id") ?? `spiffe://${trustDomain}/hpcs-server`;
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(idText);
  } catch (err) {
    throw hs.error(
      "grpc-mtls-server-id",
      `${(err as Error).message}; set it to e.g. spiffe://${trustDomain}/hpcs-server`,
    );
  }
  if (id.trustDomain !== trustDomain || id.path === "") {
    throw hs.error(
      "grpc-mtls-server-id",
      `${idText} is not a workload of trust domain ${trustDomain}; set it to the server's SPIFFE ID, e.g. spiffe://${trustDomain}/hpcs-server`,
    );
  }
  return { host, port, serverId: id.toString() };
}

function checkName(r: SectionReader, key: string, kind: NameKind, value: string): string {
  try {
    return validateName(kind, value);
  } catch (err) {
    if (err instanceof InvalidNameError) throw r.error(key, err.message);
    throw err;
  }
}

/** The same rule as the server's audience keys, so a value one side accepts the other does too. */
function audience(r: SectionReader, key: string, fallback: string): string {
  const v = r.optString(key) ?? fallback;
  if (!/^[A-Za-z0-9._:/-]{1,255}$/.test(v)) {
    throw r.error(
      key,
      `${JSON.stringify(v)} is not an audience; use letters, digits, '.', '_', ':', '/' or '-', e.g. ${fallback}`,
    );
  }
  return v;
}

/**
 * A bare program name stays a name (found on PATH when it is run, like ssh or gpg); anything with a '/'
 * is a path, resolved like the other file keys. It is run from an argv array, never by a shell.
 */
function agentBin(r: SectionReader, key: string): string {
  const v = r.optString(key) ?? DEFAULT_AGENT_BIN;
  if (v.includes("/")) return r.optPath(key) ?? v;
  if (!/^[A-Za-z0-9_][A-Za-z0-9._+-]*$/.test(v)) {
    throw r.error(
      key,
      `${JSON.stringify(v)} is not a program name or path; set it to e.g. spire-agent or /usr/local/bin/spire-agent`,
    );
  }
  return v;
}

function proxyHop(r: SectionReader, hop: string): ProxyHop {
  const m = /^(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\])(?::(\d{1,5}))?$/.exec(hop);
  const port = m?.[3] === undefined ? 22 : Number(m[3]);
  if (!m || port < 1 || port > 65535 || m[1]?.startsWith("-") || m[2]?.startsWith("-")) {
    throw r.error(
      "proxy-jump",
      `${JSON.stringify(hop)} is not [user@]host[:port]; set it to e.g. alice@bastion.example.org:22`,
    );
  }
  const host = r.checkHost("proxy-jump", (m[2] ?? "").replace(/^\[|\]$/g, ""), "e.g. bastion.example.org");
  const out: ProxyHop = { host, port };
  if (m[1] !== undefined) out.user = m[1];
  return out;
}
