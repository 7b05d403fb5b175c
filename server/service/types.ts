/**
 * The hpcs server's service, independent of transport: the gRPC service `hpcs.v1.Hpcs`, the
 * JSON/HTTP routes and the original's three compatibility routes all call this interface.
 * The server is stateless: everything it knows lives in SPIRE (entries, agents) and Vault
 * (policies, roles, enrollment records), so a restart loses nothing.
 */

export type ServiceErrorCode =
  | "invalid_argument" // bad name, bad field: the message names the field and the fix
  | "unauthenticated" // no/invalid JWT-SVID, enrollment secret or node credential
  | "permission_denied" // authenticated, but not allowed (another client's secret, wrong node)
  | "not_found"
  | "already_exists"
  | "failed_precondition" // e.g. a mode switched off in config
  | "resource_exhausted" // rate limits
  | "unavailable" // SPIRE or Vault unreachable
  | "internal";

/** One line naming the problem and the fix; never carries a secret or a token. */
export class ServiceError extends Error {
  constructor(
    readonly code: ServiceErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "ServiceError";
  }
}

/** Who is calling, as the transport saw it (for audit and the insecure IP mode only). */
export interface CallContext {
  requestId: string;
  /** Remote address as the transport saw it; identity is never derived from it unless insecure-ip-identity is on. */
  peerAddress?: string;
  /** The bearer JWT-SVID (HTTP Authorization header / gRPC metadata), when one was sent. */
  bearerJwt?: string;
  /**
   * The SPIFFE ID of the caller's X509-SVID, set only by the mTLS transport after the handshake verified
   * the chain against the trust bundle and the leaf as an X509-SVID (lib/spiffe/spiffe-tls.ts). When set
   * it is the caller's identity and bearerJwt is absent.
   */
  peerSpiffeId?: string;
}

export interface Selector {
  type: string;
  value: string;
}

export interface RegisterClientRequest {
  /** The name the operator enrolled (`hpcs-server enroll <client-name>`); becomes the client id. */
  clientName: string;
  /** The one-time enrollment secret printed by `hpcs-server enroll`. */
  enrollmentSecret: string;
  /**
   * OIDC login instead ([hpcs-server] oidc-issuer): an id_token of the trusted provider; clientName and
   * enrollmentSecret must then be empty (the client id comes from the token's oidc-client-claim).
   */
  idToken?: string;
  /** Workload selectors for `…/c/<id>/workload`; default from config (e.g. unix:uid:<uid>). */
  selectors?: Selector[];
}

export interface RegisterClientResponse {
  clientId: string;
  /** spiffe://<td>/c/<id>: the client agent's ID (alias of its join-token node ID). */
  agentSpiffeId: string;
  /** spiffe://<td>/c/<id>/workload: the ID the client's processes get. */
  workloadSpiffeId: string;
  joinToken: string;
  joinTokenExpiresAt: Date;
  /** Vault jwt role the workload logs in with; its policy is create-only on kv/data/hpcs/<id>/*. */
  vaultRole: string;
  /** kv path prefix the client may create secrets under, e.g. "hpcs/<id>/". */
  secretPathPrefix: string;
  trustDomain: string;
  /**
   * A fresh one-time enrollment secret for this client's next registration, issued only once everything
   * above succeeded; the client stores it in place of the one it just used. Absent in insecure IP mode
   * and when the rotation itself failed (the registration stands; the next one needs the operator).
   */
  nextEnrollmentSecret?: string;
  nextEnrollmentExpiresAt?: Date;
}

export interface GrantRequest {
  /** Secret name (lib/names "secret"); the secret lives at kv/data/hpcs/<client-id>/<secret>. */
  secret: string;
  nodes: string[];
  users: string[];
  groups: string[];
  /** Optional deadline carried by entries, role and secret metadata. */
  expiresAt?: Date;
}

export interface GrantResponse {
  clientId: string;
  secret: string;
  /** spiffe://<td>/c/<id>/s/<secret>: the identity a granted job fetches its JWT-SVID for. */
  spiffeId: string;
  /** Vault jwt role (read-only on exactly the secret's path). */
  vaultRole: string;
  /** kv v2 data path, e.g. kv/data/hpcs/<id>/<secret>. */
  secretPath: string;
  entriesCreated: number;
  entriesExisting: number;
  expiresAt?: Date;
}

export interface RevokeRequest {
  secret: string;
  /** Also delete the secret (all versions and metadata). */
  deleteSecret?: boolean;
}

export interface RevokeResponse {
  entriesDeleted: number;
  roleDeleted: boolean;
  policyDeleted: boolean;
  secretDeleted: boolean;
}

export interface GrantSummary {
  secret: string;
  spiffeId: string;
  vaultRole: string;
  nodes: string[];
  users: string[];
  groups: string[];
  expiresAt?: Date;
}

export interface NodeTokenRequest {
  /** The compute node's host name (lib/names "node"). */
  node: string;
  /** The UNIX user the job runs as. */
  user: string;
  /** operator mode: the token an operator pre-issued for exactly this node and user. */
  operatorToken?: string;
  /** munge mode (the default): the MUNGE credential `munge -s <payload>` created on the node. */
  mungeCredential?: string;
}

export interface NodeTokenResponse {
  joinToken: string;
  expiresAt: Date;
  /** spiffe://<td>/h/<node>/u/<user> (per-job model) or spiffe://<td>/h/<node> (site model). */
  agentSpiffeId: string;
  /** Group aliases created for the agent (per-job model). */
  aliases: string[];
}

export interface EndJobRequest {
  node: string;
  user: string;
  joinToken: string;
}

export interface HealthResponse {
  status: "serving" | "not_serving";
  spire: boolean;
  vault: boolean;
  version: string;
}

export interface HpcsService {
  registerClient(ctx: CallContext, req: RegisterClientRequest): Promise<RegisterClientResponse>;
  /** The caller is the client whose JWT-SVID (ctx.bearerJwt) names spiffe://<td>/c/<id>/workload. */
  grant(ctx: CallContext, req: GrantRequest): Promise<GrantResponse>;
  revoke(ctx: CallContext, req: RevokeRequest): Promise<RevokeResponse>;
  listGrants(ctx: CallContext): Promise<GrantSummary[]>;
  nodeJoinToken(ctx: CallContext, req: NodeTokenRequest): Promise<NodeTokenResponse>;
  endJob(ctx: CallContext, req: EndJobRequest): Promise<void>;
  health(ctx: CallContext): Promise<HealthResponse>;
}
