/**
 * The SPIFFE Workload API's gRPC definition (proto/spiffe/workload/workload.proto), loaded at run time,
 * and the shapes of its messages as @grpc/proto-loader hands them over (keepCase: proto field names).
 */

import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

// This file runs from dist/lib/spiffe/ (or another out dir at the same depth): three levels up is the
// repository root, which holds proto/. Loaded by absolute path and without includeDirs so that the
// google/protobuf/struct.proto import resolves to the copy bundled with protobufjs.
const PROTO_FILE = fileURLToPath(new URL("../../../proto/spiffe/workload/workload.proto", import.meta.url));

/** The security header every Workload API call must carry; agents refuse calls without it. */
export const SECURITY_HEADER = "workload.spiffe.io";

export interface RawX509Svid {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface RawX509SvidResponse {
  svids: RawX509Svid[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface RawJwtSvidRequest {
  audience: string[];
  spiffe_id: string;
}

export interface RawJwtSvid {
  spiffe_id: string;
  svid: string;
  hint: string;
}

export interface RawJwtSvidResponse {
  svids: RawJwtSvid[];
}

export interface RawJwtBundlesResponse {
  bundles: Record<string, Buffer>;
}

export interface RawValidateJwtSvidRequest {
  audience: string;
  svid: string;
}

/**
 * google.protobuf.Value; `kind` names the member of the oneof that is set. Camel-case despite keepCase:
 * protobufjs defines the well-known types from its own bundled descriptors, in their JSON names.
 */
export interface RawValue {
  kind?: string;
  nullValue?: unknown;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: RawStruct;
  listValue?: { values?: RawValue[] };
}

export interface RawStruct {
  fields?: Record<string, RawValue>;
}

export interface RawValidateJwtSvidResponse {
  spiffe_id: string;
  claims: RawStruct | null;
}

/** The generated client, typed for the four methods we call. */
export interface WorkloadStub extends grpc.Client {
  FetchJWTSVID(
    req: RawJwtSvidRequest,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: grpc.requestCallback<RawJwtSvidResponse>,
  ): grpc.ClientUnaryCall;
  ValidateJWTSVID(
    req: RawValidateJwtSvidRequest,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: grpc.requestCallback<RawValidateJwtSvidResponse>,
  ): grpc.ClientUnaryCall;
  FetchX509SVID(
    req: Record<string, never>,
    md: grpc.Metadata,
    opts?: grpc.CallOptions,
  ): grpc.ClientReadableStream<RawX509SvidResponse>;
  FetchJWTBundles(
    req: Record<string, never>,
    md: grpc.Metadata,
    opts?: grpc.CallOptions,
  ): grpc.ClientReadableStream<RawJwtBundlesResponse>;
}

export interface WorkloadApiDefinition {
  /** For grpc.Server#addService (fakes in tests). */
  service: grpc.ServiceDefinition;
  Client: grpc.ServiceClientConstructor;
}

export function loadWorkloadApi(): WorkloadApiDefinition {
  let def: protoLoader.PackageDefinition;
  try {
    def = protoLoader.loadSync(PROTO_FILE, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
  } catch (err) {
    throw new Error(`cannot load the Workload API definition ${PROTO_FILE}: ${(err as Error).message}`);
  }
  // The specification's proto has no package, so the service sits at the root.
  const Client = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI as grpc.ServiceClientConstructor;
  return { service: Client.service, Client };
}
