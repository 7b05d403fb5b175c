import { InvalidNameError, validateName } from "../names.js";
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
 *   [hpcs-server]    ca-file                  PEM CA for the hpcs server's TLS certificate
 *                    enrollment-secret-file   file holding the enrollment secret the operator issued
 *   [vault]          ca-file                  PEM CA for Vault's TLS certificate
 *   [supercomputer]  port                     SSH port of the login node (default 22)
 *                    ssh-key                  private key file (default: ssh-agent / ssh's own defaults)
 *                    known-hosts              known_hosts file to verify the login node against
 *                    proxy-jump               [user@]host[:port][,...] as in ssh -J
 *
 * File paths: `~/` is the home directory; relative paths are relative to the config file.
 */

export interface ClientConfig {
  source: string;
  spireServer: { address: string; port: number; trustDomain: string };
  hpcsServer: { url: string; caFile?: string; enrollmentSecretFile?: string };
  vault: { url: string; caFile?: string };
  supercomputer: {
    address: string;
    username: string;
    port: number;
    sshKey?: string;
    knownHosts?: string;
    proxyJump?: ProxyHop[];
  };
}

export interface ProxyHop {
  user?: string;
  host: string;
  port: number;
}

export const CLIENT_KEYS: KnownKeys = {
  "spire-server": ["address", "port", "trust-domain"],
  "hpcs-server": ["url", "ca-file", "enrollment-secret-file"],
  vault: ["url", "ca-file"],
  supercomputer: ["address", "username", "port", "ssh-key", "known-hosts", "proxy-jump"],
};

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
  };
  const hsCa = hs.optPath("ca-file");
  if (hsCa !== undefined) hpcsServer.caFile = hsCa;
  const secretFile = hs.optPath("enrollment-secret-file");
  if (secretFile !== undefined) hpcsServer.enrollmentSecretFile = secretFile;

  const vault: ClientConfig["vault"] = { url: v.url("url", "the Vault address, e.g. https://vault:8200") };
  const vCa = v.optPath("ca-file");
  if (vCa !== undefined) vault.caFile = vCa;

  const username = sc.string("username", "your user name on the supercomputer, e.g. alice");
  try {
    validateName("user", username);
  } catch (err) {
    if (err instanceof InvalidNameError) throw sc.error("username", err.message);
    throw err;
  }
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

  return {
    source: doc.source,
    spireServer: {
      address: ss.host("address", "the SPIRE server's host name, e.g. spire.example.org"),
      port: ss.port("port", "the SPIRE server's port", "8081"),
      trustDomain: ss.trustDomain("trust-domain"),
    },
    hpcsServer,
    vault,
    supercomputer,
  };
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
