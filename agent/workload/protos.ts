import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as protobuf from "protobufjs";
import { packageFile } from "./package-files";

/**
 * The gRPC services the node agent serves, loaded from proto/ (written from
 * the public SPIFFE and Envoy definitions). keepCase: handlers read and write
 * the protos' own snake_case field names, as clients built from them see them.
 */

const PROTO_DIR = () => packageFile("proto");
export const WORKLOAD_PROTO = "spiffe/workload.proto";
export const SDS_PROTO = "envoy/sds.proto";
export const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

export interface Services {
  workload: grpc.ServiceDefinition;
  sds: grpc.ServiceDefinition;
  /** Encodes an Envoy Secret for a DiscoveryResponse's Any (SDS resources are opaque bytes to gRPC). */
  encodeSecret(secret: Record<string, unknown>): Buffer;
}

let loaded: Services | null = null;

export function services(): Services {
  if (loaded) return loaded;
  const dir = PROTO_DIR();
  const def = protoLoader.loadSync([WORKLOAD_PROTO, SDS_PROTO], {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [dir],
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    SpiffeWorkloadAPI: grpc.ServiceClientConstructor;
    envoy: { service: { secret: { v3: { SecretDiscoveryService: grpc.ServiceClientConstructor } } } };
  };
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(dir, target);
  root.loadSync("envoy/secret.proto");
  const Secret = root.lookupType("envoy.extensions.transport_sockets.tls.v3.Secret");
  loaded = {
    workload: pkg.SpiffeWorkloadAPI.service,
    sds: pkg.envoy.service.secret.v3.SecretDiscoveryService.service,
    encodeSecret: (secret) => Buffer.from(Secret.encode(Secret.fromObject(secret)).finish()),
  };
  return loaded;
}
