/**
 * [supercomputer] configuration → SshSession options, with OpenSSH's defaults where a key is absent:
 * the key files ssh itself tries, ssh-agent through SSH_AUTH_SOCK, and ~/.ssh/known_hosts.
 */

import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { ClientConfig } from "../../lib/config/client-config.js";
import type { SshSessionOptions } from "./ssh-session.js";

const DEFAULT_KEYS = ["id_ed25519", "id_ecdsa", "id_rsa"];

export interface SessionEnvironment {
  home?: string;
  sshAuthSock?: string;
}

export function sessionOptions(
  sc: ClientConfig["supercomputer"],
  username: string,
  env: SessionEnvironment = {
    home: homedir(),
    ...(process.env.SSH_AUTH_SOCK ? { sshAuthSock: process.env.SSH_AUTH_SOCK } : {}),
  },
): SshSessionOptions {
  const home = env.home ?? homedir();
  const opts: SshSessionOptions = {
    host: sc.address,
    port: sc.port,
    username,
    knownHostsPath: sc.knownHosts ?? join(home, ".ssh", "known_hosts"),
  };
  const key = sc.sshKey ?? DEFAULT_KEYS.map((k) => join(home, ".ssh", k)).find((p) => existsSync(p));
  if (key !== undefined) opts.privateKeyPath = key;
  if (env.sshAuthSock) opts.agentSocket = env.sshAuthSock;
  if (sc.proxyJump && sc.proxyJump.length > 0) {
    if (sc.proxyJump.length > 1) {
      throw new Error(
        "[supercomputer] proxy-jump: only one jump host is supported; give a single [user@]host[:port]",
      );
    }
    const hop = sc.proxyJump[0];
    if (hop) opts.proxyJump = { host: hop.host, port: hop.port, username: hop.user ?? username };
  }
  return opts;
}
