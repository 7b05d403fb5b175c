import { readFileSync } from "node:fs";

/** The bench's addresses, sockets, keys and users, as written by `stack/stack.sh up`. */
export interface StackEnv {
  state_dir: string;
  bin_dir: string;
  trust_domain: string;
  hostname: string;
  ca_cert: string;
  tls: { cert: string; key: string };
  spire: {
    server_address: string;
    server_port: number;
    admin_socket: string;
    bundle: string;
    server_bin: string;
    agent_bin: string;
    jwt_issuer: string;
  };
  oidc: { url: string };
  vault: { url: string; root_token: string; kv_mount: string; jwt_mount: string; bin: string };
  ssh: {
    host: string;
    port: number;
    known_hosts: string;
    users: Record<string, { name: string; key: string; scratch: string }>;
  };
  slurm: { conf: string; partition: string; node: string };
  munge: { socket: string };
  docker: { socket: string; test_image: string };
  /** helm: absent from an env.json written before the bench built it. */
  tools: { siftool: string; helm?: string };
}

export const DEFAULT_STACK_ENV = "/var/lib/hpcs-stack/env.json";

export function loadStackEnv(path = process.env.HPCS_STACK_ENV ?? DEFAULT_STACK_ENV): StackEnv {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read the bench's ${path} (${(err as Error).message}): run 'npm run stack -- up'`);
  }
  return JSON.parse(text) as StackEnv;
}

/** The user's ssh test identity; throws if the bench has no such user. */
export function sshUser(env: StackEnv, name: string): { name: string; key: string; scratch: string } {
  const u = env.ssh.users[name];
  if (!u) throw new Error(`the bench has no test user ${name}`);
  return u;
}
