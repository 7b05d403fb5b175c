/**
 * SPIFFE mutual TLS for gRPC, from the process's own X509-SVID and trust bundle (X509Source over the
 * Workload API), as go-spiffe's tlsconfig does it:
 *
 * - chain verification is Node's (OpenSSL) with `ca` = the bundle of the SVID's own trust domain only
 *   (federated bundles are not trusted); hostnames are not checked, SPIFFE IDs are;
 * - the peer's leaf must be an X509-SVID (spiffeIdOfLeaf): no CA, exactly one URI SAN, a SPIFFE ID with
 *   a path; authorizePeer then requires the expected trust domain (and, for the server, its exact ID);
 * - rotation: the credentials are grpc-js certificate-provider credentials fed from the source, so every
 *   new SVID or bundle reaches the next TLS handshake on both sides (the server swaps its secure context,
 *   the channel builds each connection's context from the latest); open connections keep theirs.
 */

import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { SpiffeId } from "../spiffe-id.js";
import { X509Source } from "./x509-source.js";
import { uriSans, type X509Svid } from "./x509-svid.js";
import type { WorkloadApiError, WorkloadClient } from "./workload-client.js";

type CertificateProvider = grpc.experimental.CertificateProvider;
type CaUpdate = grpc.experimental.CaCertificateUpdate;
type IdentityUpdate = grpc.experimental.IdentityCertificateUpdate;
type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/** A peer certificate that is no valid or no acceptable X509-SVID; one line. */
export class SpiffeTlsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SpiffeTlsError";
  }
}

/** The SPIFFE ID an X509-SVID leaf (DER or parsed) names, or SpiffeTlsError saying why it is none. */
export function spiffeIdOfLeaf(leaf: Buffer | X509Certificate): SpiffeId {
  let cert: X509Certificate;
  try {
    cert = leaf instanceof X509Certificate ? leaf : new X509Certificate(leaf);
  } catch {
    throw new SpiffeTlsError("the peer certificate does not parse as X.509");
  }
  if (cert.ca) throw new SpiffeTlsError("the peer certificate is a CA certificate, not an X509-SVID");
  const uris = uriSans(cert);
  if (uris.length !== 1) {
    throw new SpiffeTlsError(
      `the peer certificate has ${uris.length} URI SANs; an X509-SVID has exactly one, its SPIFFE ID`,
    );
  }
  let id: SpiffeId;
  try {
    id = SpiffeId.parse(uris[0] as string);
  } catch {
    throw new SpiffeTlsError(`the peer certificate's URI SAN ${JSON.stringify(uris[0])} is not a SPIFFE ID`);
  }
  if (id.path === "")
    throw new SpiffeTlsError(`the peer certificate names trust domain ${id} without a path`);
  return id;
}

/** Who may be on the other end: any ID of `trustDomain`, or exactly `id` when given. */
export interface PeerPolicy {
  trustDomain: string;
  id?: SpiffeId;
}

/** The peer's SPIFFE ID when its leaf is an X509-SVID the policy accepts; SpiffeTlsError otherwise. */
export function authorizePeer(leaf: Buffer | X509Certificate, policy: PeerPolicy): SpiffeId {
  const id = spiffeIdOfLeaf(leaf);
  if (id.trustDomain !== policy.trustDomain) {
    throw new SpiffeTlsError(`the peer ${id} is not of trust domain ${policy.trustDomain}`);
  }
  if (policy.id && !id.equals(policy.id)) {
    throw new SpiffeTlsError(`the peer is ${id}, not the expected ${policy.id}`);
  }
  return id;
}

/**
 * A grpc-js certificate provider fed with X509-SVIDs: identity = the SVID's chain and key, CA = its
 * trust domain's bundle. Listeners get the latest update on the next tick after they subscribe, as
 * grpc-js's own file watcher does (its credentials subscribe before they install their watcher).
 */
class SvidCertificateProvider implements CertificateProvider {
  private ca: CaUpdate | undefined;
  private identity: IdentityUpdate | undefined;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();

  update(svid: X509Svid): void {
    const ca: CaUpdate = { caCertificate: Buffer.from(svid.bundlePem) };
    const identity: IdentityUpdate = {
      certificate: Buffer.from(svid.chainPem),
      privateKey: Buffer.from(svid.keyPem),
    };
    this.ca = ca;
    this.identity = identity;
    for (const l of this.caListeners) l(ca);
    for (const l of this.identityListeners) l(identity);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    const ca = this.ca;
    if (ca) process.nextTick(() => this.caListeners.has(listener) && listener(ca));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    const identity = this.identity;
    if (identity) process.nextTick(() => this.identityListeners.has(listener) && listener(identity));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

export interface SpiffeTlsOptions {
  /** The SVID to present when the workload has several; default the first. */
  spiffeId?: SpiffeId;
  /** How long to wait for the first SVID. */
  timeoutMs: number;
  /** Every new SVID (rotation), e.g. for logging. */
  onUpdate?: (svid: X509Svid) => void;
  /** Every Workload API stream failure; the source retries by itself. */
  onError?: (err: WorkloadApiError) => void;
}

/** gRPC credentials that present this workload's X509-SVID and verify the peer's, kept current. */
export class SpiffeTls {
  private constructor(
    private readonly source: X509Source,
    private readonly provider: SvidCertificateProvider,
  ) {}

  /** Watches the Workload API and resolves once the first SVID is there; close() stops watching. */
  static async start(client: WorkloadClient, opts: SpiffeTlsOptions): Promise<SpiffeTls> {
    const provider = new SvidCertificateProvider();
    const wanted = opts.spiffeId;
    const source = new X509Source(client, {
      ...(wanted ? { pick: (svids: X509Svid[]) => svids.find((s) => s.spiffeId.equals(wanted)) } : {}),
      onUpdate: (svid) => {
        provider.update(svid);
        opts.onUpdate?.(svid);
      },
      ...(opts.onError ? { onError: opts.onError } : {}),
    });
    try {
      await source.waitReady(opts.timeoutMs);
    } catch (err) {
      source.close();
      throw err;
    }
    return new SpiffeTls(source, provider);
  }

  /** The SVID presented to the next peer. */
  current(): X509Svid {
    return this.source.current();
  }

  /**
   * Server credentials that require a client certificate chaining to the bundle (the handshake fails
   * otherwise); each call must still check the peer's SPIFFE ID (peerSpiffeId).
   */
  serverCredentials(): grpc.ServerCredentials {
    // grpc-js names its parameters (ca, identity) but passes them on as (identity, ca): one provider
    // serves both, so the order cannot matter.
    return grpc.experimental.createCertificateProviderServerCredentials(this.provider, this.provider, true);
  }

  /** Channel credentials that present the SVID and accept only a server the policy accepts. */
  channelCredentials(server: PeerPolicy): grpc.ChannelCredentials {
    return grpc.experimental.createCertificateProviderChannelCredentials(this.provider, this.provider, {
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        try {
          authorizePeer(cert.raw, server);
          return undefined;
        } catch (err) {
          return err as Error;
        }
      },
    });
  }

  close(): void {
    this.source.close();
  }
}

/**
 * The verified SPIFFE ID of the caller of a gRPC call on a SpiffeTls server: grpc-js hands out the peer
 * certificate only when the handshake verified its chain; this adds the X509-SVID and trust-domain checks.
 */
export function peerSpiffeId(
  call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null },
  trustDomain: string,
): SpiffeId {
  const cert = call.getAuthContext()?.sslPeerCertificate;
  if (!cert?.raw) throw new SpiffeTlsError("no verified client certificate on this connection");
  return authorizePeer(cert.raw, { trustDomain });
}
