import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../../common/logger";
import type { AgentApiClient, WorkloadEntry } from "./ca-client";
import type { CallerIdentity } from "./caller";
import { matchingEntries, selectorsOf } from "./caller";
import { type Callers, grpcError, noIdentity, notAttested } from "./callers";
import type { HeldSvid, SvidCache } from "./svids";

/**
 * The SPIFFE Workload API (SpiffeWorkloadAPI). Every call must carry the
 * `workload.spiffe.io: true` metadata (a proxy forwarding some other request
 * to the socket does not add it); the caller is attested from the kernel on
 * every call and gets the SVIDs of the entries whose selectors it all proves.
 * Streams answer as soon as there is something to send and again whenever it
 * changes; they never resend an identical message.
 */

export type JwtVerifier = (
  token: string,
  opts: { audience: string; bundle: string; trustDomain: string },
) => { spiffeId: string; claims: Record<string, unknown> };

export interface WorkloadApiDeps {
  cache: SvidCache;
  callers: Callers;
  client: AgentApiClient;
  trustDomain: string;
  verifyJwt: JwtVerifier;
  log: Logger;
}

const HEADER = "workload.spiffe.io";
/** A JWT-SVID is handed out again while more than half its life remains. */
const JWT_REUSE_FRACTION = 0.5;

type AnyCall = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

function hasSecurityHeader(call: AnyCall): boolean {
  return call.metadata.get(HEADER).some((v) => String(v) === "true");
}

const missingHeader = () => grpcError(grpc.status.INVALID_ARGUMENT, "security header missing from request");

export function workloadApiHandlers(deps: WorkloadApiDeps): grpc.UntypedServiceImplementation {
  const { cache, callers } = deps;
  const tdId = `spiffe://${deps.trustDomain}`;
  const jwtCache = new Map<string, { token: string; spiffeId: string; reuseUntil: number }>();

  /** Attests and matches; null after failing the call (no header, not attested, no entry once synced). */
  async function admit(call: AnyCall, fail: (err: Error) => void): Promise<CallerIdentity | null> {
    if (!hasSecurityHeader(call)) {
      fail(missingHeader());
      return null;
    }
    try {
      return await callers.identify(call);
    } catch (err) {
      fail(notAttested(err));
      return null;
    }
  }

  const entriesOf = (proven: ReadonlySet<string>): WorkloadEntry[] =>
    matchingEntries(cache.entries.values(), proven);

  /**
   * A server stream that sends `build()` whenever the cache changes and the
   * message differs from the last one sent. `build` returns null while there
   * is nothing to send yet, or an error to end the stream with.
   */
  function follow(
    call: grpc.ServerWritableStream<unknown, unknown>,
    id: CallerIdentity,
    build: (entries: WorkloadEntry[]) => { key: string; message: unknown } | null,
  ): void {
    const proven = selectorsOf(id);
    let last = "";
    let done = false;
    const stop = () => {
      done = true;
      cache.off("changed", send);
    };
    function send() {
      if (done) return;
      const entries = entriesOf(proven);
      if (entries.length === 0) {
        if (!cache.synced) return;
        stop();
        call.emit("error", noIdentity(id));
        return;
      }
      const out = build(entries);
      if (out === null || out.key === last) return;
      last = out.key;
      call.write(out.message);
    }
    cache.on("changed", send);
    call.on("cancelled", stop);
    call.on("close", stop);
    call.on("error", stop);
    send();
  }

  const rootsDer = () => Buffer.concat(cache.roots.der);

  const x509Response = (svids: HeldSvid[]) => ({
    svids: svids.map((s) => ({
      spiffe_id: s.spiffeId,
      x509_svid: Buffer.concat(s.chain),
      x509_svid_key: s.keyDer,
      bundle: rootsDer(),
      hint: "",
    })),
    crl: [],
    federated_bundles: {},
  });

  return {
    FetchX509SVID: async (call: grpc.ServerWritableStream<unknown, unknown>) => {
      const id = await admit(call, (err) => call.emit("error", err));
      if (id === null) return;
      follow(call, id, (entries) => {
        const svids = cache.svidsFor(entries);
        if (svids.length === 0) return null;
        const key = svids.map((s) => s.chainPem).join("") + cache.roots.pem;
        return { key, message: x509Response(svids) };
      });
    },

    FetchX509Bundles: async (call: grpc.ServerWritableStream<unknown, unknown>) => {
      const id = await admit(call, (err) => call.emit("error", err));
      if (id === null) return;
      follow(call, id, () =>
        cache.roots.der.length === 0
          ? null
          : { key: cache.roots.pem, message: { crl: [], bundles: { [tdId]: rootsDer() } } },
      );
    },

    FetchJWTBundles: async (call: grpc.ServerWritableStream<unknown, unknown>) => {
      const id = await admit(call, (err) => call.emit("error", err));
      if (id === null) return;
      follow(call, id, () => {
        if (!cache.synced) return null;
        const jwks = JSON.stringify(cache.jwtKeys);
        return { key: jwks, message: { bundles: { [tdId]: Buffer.from(jwks) } } };
      });
    },

    FetchJWTSVID: async (
      call: grpc.ServerUnaryCall<{ audience: string[]; spiffe_id: string }, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      const id = await admit(call, (err) => callback(err));
      if (id === null) return;
      const audience = (call.request.audience ?? []).filter((a) => a !== "");
      if (audience.length === 0)
        return callback(grpcError(grpc.status.INVALID_ARGUMENT, "audience must be specified"));
      let entries = entriesOf(selectorsOf(id));
      if (call.request.spiffe_id) entries = entries.filter((e) => e.spiffeId === call.request.spiffe_id);
      if (entries.length === 0) return callback(noIdentity(id));
      try {
        const svids = [];
        for (const e of entries) svids.push(await jwtFor(e, audience));
        callback(null, { svids: svids.map((s) => ({ spiffe_id: s.spiffeId, svid: s.token, hint: "" })) });
      } catch (err) {
        deps.log.warn("could not get a JWT-SVID", { error: (err as Error).message });
        callback(grpcError(grpc.status.UNAVAILABLE, `could not get a JWT-SVID: ${(err as Error).message}`));
      }
    },

    ValidateJWTSVID: async (
      call: grpc.ServerUnaryCall<{ audience: string; svid: string }, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      // Validation needs no identity of its own (SPIRE's rule too), only the header.
      if (!hasSecurityHeader(call)) return callback(missingHeader());
      const { audience, svid } = call.request;
      if (!audience) return callback(grpcError(grpc.status.INVALID_ARGUMENT, "audience must be specified"));
      if (!svid) return callback(grpcError(grpc.status.INVALID_ARGUMENT, "svid must be specified"));
      try {
        const { spiffeId, claims } = deps.verifyJwt(svid, {
          audience,
          bundle: JSON.stringify(cache.jwtKeys),
          trustDomain: deps.trustDomain,
        });
        callback(null, { spiffe_id: spiffeId, claims: toStruct(claims) });
      } catch (err) {
        callback(grpcError(grpc.status.INVALID_ARGUMENT, (err as Error).message));
      }
    },
  };

  async function jwtFor(entry: WorkloadEntry, audience: string[]) {
    const key = `${entry.id}\n${[...audience].sort().join("\n")}`;
    const now = Date.now();
    const hit = jwtCache.get(key);
    if (hit && hit.reuseUntil > now) return hit;
    const got = await deps.client.jwtSvid(entry.id, audience);
    const expires = new Date(got.expiresAt).getTime();
    const fresh = {
      token: got.token,
      spiffeId: got.spiffeId ?? entry.spiffeId,
      reuseUntil: now + (expires - now) * JWT_REUSE_FRACTION,
    };
    if (jwtCache.size > 10_000) jwtCache.clear();
    jwtCache.set(key, fresh);
    return fresh;
  }
}

/** google.protobuf.Struct from JSON claims. */
export function toStruct(obj: Record<string, unknown>): { fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = toValue(v);
  return { fields };
}

function toValue(v: unknown): unknown {
  // protobufjs defines the well-known Struct types itself, with camelCase field names even under keepCase.
  if (v === null || v === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}
