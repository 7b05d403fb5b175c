/**
 * One authenticated SSH connection to the supercomputer's login node, optionally through a jump host
 * (OpenSSH ProxyJump: a first connection opens a direct-tcpip channel to the target, and the second
 * connection runs its handshake over that channel). Host keys are checked strictly against
 * known_hosts for every hop; failures become one line naming the host and the fix.
 */

import { readFileSync } from "node:fs";
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from "ssh2";
import { loadKnownHosts, verifyHostKey, type KnownHostEntry } from "./known-hosts.js";

export interface SshHop {
  host: string;
  port: number;
  username: string;
}

export interface SshSessionOptions extends SshHop {
  /** Private key file (OpenSSH or PEM). One of this or `agentSocket` is required. */
  privateKeyPath?: string;
  passphrase?: string;
  /** ssh-agent socket (SSH_AUTH_SOCK); tried after the key file when both are given. */
  agentSocket?: string;
  knownHostsPath: string;
  /** ProxyJump host; authenticated with the same key/agent, verified against the same known_hosts. */
  proxyJump?: SshHop;
  /** Handshake + authentication deadline per hop. */
  readyTimeoutMs?: number;
}

const DEFAULT_READY_TIMEOUT_MS = 20_000;

export class SshSession {
  private constructor(
    /** The connection to the target host; its `sftp`/`exec` carry all the work. */
    readonly client: Client,
    /** The jump connection, closed after the target's. */
    private readonly jump: Client | undefined,
    readonly host: string,
    readonly port: number,
    readonly username: string,
  ) {}

  /** Connects (through `proxyJump` when given), verifies host keys and authenticates; one-line errors. */
  static async connect(opts: SshSessionOptions): Promise<SshSession> {
    if (!opts.privateKeyPath && !opts.agentSocket) {
      throw new Error(
        `no SSH identity for ${opts.username}@${opts.host}: set a private key file or an ssh-agent socket in [supercomputer]`,
      );
    }
    const knownHosts = loadKnownHosts(opts.knownHostsPath);
    const privateKey = opts.privateKeyPath ? readKey(opts.privateKeyPath) : undefined;
    const auth = { privateKey, passphrase: opts.passphrase, agent: opts.agentSocket };
    const timeout = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;

    let jump: Client | undefined;
    let sock: ClientChannel | undefined;
    if (opts.proxyJump) {
      jump = await connectHop(opts.proxyJump, auth, knownHosts, opts.knownHostsPath, timeout);
      try {
        sock = await forwardOut(jump, opts);
      } catch (err) {
        jump.end();
        throw err;
      }
    }
    try {
      const client = await connectHop(opts, auth, knownHosts, opts.knownHostsPath, timeout, sock);
      return new SshSession(client, jump, opts.host, opts.port, opts.username);
    } catch (err) {
      jump?.end();
      throw err;
    }
  }

  /** `user@host:port`, for messages. */
  get label(): string {
    return `${this.username}@${this.host}:${this.port}`;
  }

  /** Opens a new SFTP channel; callers end it when done. */
  sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => {
      this.client.sftp((err, sftp) => {
        if (err)
          reject(
            new Error(`cannot start SFTP on ${this.label}: ${err.message} (is the sftp subsystem enabled?)`),
          );
        else resolve(sftp);
      });
    });
  }

  /** Closes the target connection, then the jump connection. Safe to call twice. */
  close(): void {
    this.client.end();
    this.jump?.end();
  }
}

interface Auth {
  privateKey: Buffer | undefined;
  passphrase: string | undefined;
  agent: string | undefined;
}

function readKey(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(
      `cannot read SSH private key ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
}

/** Opens the jump host's direct-tcpip channel to the target, the socket for the second handshake. */
function forwardOut(jump: Client, target: SshHop): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    jump.forwardOut("127.0.0.1", 0, target.host, target.port, (err, channel) => {
      if (err) {
        reject(
          new Error(
            `jump host cannot open a connection to ${target.host}:${target.port}: ${err.message} (is AllowTcpForwarding enabled there, and is the target reachable from it?)`,
          ),
        );
      } else resolve(channel);
    });
  });
}

/** One handshake: resolves when authenticated, rejects with one line. */
function connectHop(
  hop: SshHop,
  auth: Auth,
  knownHosts: KnownHostEntry[],
  knownHostsPath: string,
  readyTimeoutMs: number,
  sock?: ClientChannel,
): Promise<Client> {
  return new Promise((resolve, reject) => {
    const client = new Client();
    // ssh2 reports a refused host key only as "Host denied"; remember our own reason for the message.
    let hostKeyProblem: string | undefined;
    const config: ConnectConfig = {
      host: hop.host,
      port: hop.port,
      username: hop.username,
      readyTimeout: readyTimeoutMs,
      hostVerifier: (key: Buffer): boolean => {
        const verdict = verifyHostKey(knownHosts, hop.host, hop.port, key, knownHostsPath);
        if (!verdict.ok) hostKeyProblem = verdict.message;
        return verdict.ok;
      },
    };
    if (auth.privateKey) config.privateKey = auth.privateKey;
    if (auth.passphrase !== undefined) config.passphrase = auth.passphrase;
    if (auth.agent) config.agent = auth.agent;
    if (sock) config.sock = sock;

    let settled = false;
    const fail = (err: Error & { code?: string; level?: string }): void => {
      if (settled) return;
      settled = true;
      client.end();
      reject(new Error(hostKeyProblem ?? describeConnectError(err, hop)));
    };
    client.once("ready", () => {
      if (settled) return;
      settled = true;
      client.removeListener("error", fail);
      // Later errors (connection dropped mid-transfer) surface through the channels' own callbacks;
      // this listener only keeps an unhandled 'error' from crashing the process.
      client.on("error", () => undefined);
      resolve(client);
    });
    client.on("error", fail);
    client.once("close", () => fail(new Error("connection closed during handshake")));
    try {
      client.connect(config);
    } catch (err) {
      // ssh2 throws synchronously for an unusable key (encrypted without passphrase, bad format).
      fail(err as Error);
    }
  });
}

/** ssh2/socket errors to one line with the likely fix. */
export function describeConnectError(err: Error & { code?: string; level?: string }, hop: SshHop): string {
  const where = `${hop.host}:${hop.port}`;
  switch (err.code) {
    case "ECONNREFUSED":
      return `cannot reach ${where}: connection refused (is sshd running there, and is the port right?)`;
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `cannot reach ${where}: ${err.code} (check the address, the network/VPN, or set a ProxyJump host)`;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `cannot reach ${where}: host name ${hop.host} does not resolve (check [supercomputer] address)`;
    case "ECONNRESET":
      return `cannot reach ${where}: connection reset during the handshake (a firewall, or not an SSH server?)`;
  }
  if (err.level === "client-timeout") {
    return `cannot reach ${where}: no SSH handshake within the timeout (firewall dropping packets, or not an SSH server?)`;
  }
  if (err.level === "client-authentication") {
    return `permission denied for ${hop.username}@${hop.host} (publickey): the server refused the key; check the username and that the public key is in ~/.ssh/authorized_keys there`;
  }
  if (/passphrase/i.test(err.message)) {
    return `the SSH private key is encrypted: give its passphrase or use an ssh-agent (${err.message})`;
  }
  if (/Cannot parse privateKey|Unsupported key format/i.test(err.message)) {
    return `cannot use the SSH private key: ${err.message}`;
  }
  return `SSH connection to ${hop.username}@${where} failed: ${err.message}`;
}
