import { createHash, randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../../common/logger";
import { type CallerIdentity, matchingEntries, selectorsOf } from "./caller";
import { type Callers, noIdentity, notAttested } from "./callers";
import { SECRET_TYPE_URL } from "./protos";
import type { SvidCache } from "./svids";

/**
 * Envoy's Secret Discovery Service (state-of-the-world xDS) on the same
 * socket. Secrets: a `tls_certificate` named by each of the caller's SPIFFE
 * IDs and `default` (its first), and a `validation_context` named by the
 * trust domain (`spiffe://TD` or `TD`) and `ROOTCA`. Envoy's protocol: the
 * first request has no nonce; each response carries a version and a fresh
 * nonce; Envoy answers with the nonce and either the new version (ACK) or
 * the old one plus error_detail (NACK). A request naming a nonce other than
 * the last one sent is stale and ignored. New secrets are pushed on the same
 * stream when an SVID is renewed or the roots change.
 */

interface DiscoveryRequest {
  version_info: string;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail: { code: number; message: string } | null;
}

export interface SdsDeps {
  cache: SvidCache;
  callers: Callers;
  trustDomain: string;
  encodeSecret(secret: Record<string, unknown>): Buffer;
  log: Logger;
}

export const ROOT_CA_NAME = "ROOTCA";
export const DEFAULT_NAME = "default";

export function sdsHandlers(deps: SdsDeps): grpc.UntypedServiceImplementation {
  const { cache, callers } = deps;
  const rootNames = new Set([ROOT_CA_NAME, deps.trustDomain, `spiffe://${deps.trustDomain}`]);

  /** The secrets `names` asks for that the caller may have and the agent holds; null when a named one is still missing. */
  function secretsFor(id: CallerIdentity, names: readonly string[]): Record<string, unknown>[] | null {
    const svids = cache.svidsFor(matchingEntries(cache.entries.values(), selectorsOf(id)));
    const wanted =
      names.length > 0
        ? names
        : [...svids.map((s) => s.spiffeId), DEFAULT_NAME, ROOT_CA_NAME, `spiffe://${deps.trustDomain}`];
    const out: Record<string, unknown>[] = [];
    for (const name of wanted) {
      if (rootNames.has(name)) {
        if (cache.roots.pem === "") return null;
        out.push({ name, validationContext: { trustedCa: { inlineBytes: Buffer.from(cache.roots.pem) } } });
        continue;
      }
      const svid = name === DEFAULT_NAME ? svids[0] : svids.find((s) => s.spiffeId === name);
      if (!svid) {
        // Not (yet) held: wait for it rather than answer without it, unless it can never come.
        if (
          name === DEFAULT_NAME ||
          matchingEntries(cache.entries.values(), selectorsOf(id)).some((e) => e.spiffeId === name)
        )
          return null;
        continue;
      }
      out.push({
        name,
        tlsCertificate: {
          certificateChain: { inlineBytes: Buffer.from(svid.chainPem) },
          privateKey: { inlineBytes: Buffer.from(svid.keyPem) },
        },
      });
    }
    return out;
  }

  function response(secrets: Record<string, unknown>[]): {
    version: string;
    message: Record<string, unknown>;
  } {
    const resources = secrets.map((s) => ({ type_url: SECRET_TYPE_URL, value: deps.encodeSecret(s) }));
    const hash = createHash("sha256");
    for (const r of resources) hash.update(r.value);
    const version = hash.digest("hex").slice(0, 16);
    return {
      version,
      message: { version_info: version, resources, type_url: SECRET_TYPE_URL, canary: false },
    };
  }

  const admits = (id: CallerIdentity) => matchingEntries(cache.entries.values(), selectorsOf(id)).length > 0;

  return {
    StreamSecrets: (call: grpc.ServerDuplexStream<DiscoveryRequest, unknown>) => {
      let id: CallerIdentity | null = null;
      let names: string[] = [];
      let sentVersion = "";
      let sentNonce = "";
      let subscribed = false;
      let ended = false;
      const end = (err: Error) => {
        if (ended) return;
        ended = true;
        cache.off("changed", push);
        call.emit("error", err);
      };
      function push() {
        if (ended || id === null || !subscribed) return;
        if (!admits(id)) {
          if (cache.synced) end(noIdentity(id));
          return;
        }
        const secrets = secretsFor(id, names);
        if (secrets === null) return;
        const { version, message } = response(secrets);
        if (version === sentVersion) return;
        sentVersion = version;
        sentNonce = randomBytes(8).toString("hex");
        call.write({ ...message, nonce: sentNonce });
      }
      const stop = () => {
        ended = true;
        cache.off("changed", push);
      };
      call.on("cancelled", stop);
      call.on("close", stop);
      call.on("end", () => {
        stop();
        call.end();
      });
      // Requests are handled one after another: attestation is async and the order of ACKs matters.
      let queue = Promise.resolve();
      call.on("data", (req: DiscoveryRequest) => {
        queue = queue.then(async () => {
          if (ended) return;
          if (id === null) {
            try {
              id = await callers.identify(call);
            } catch (err) {
              return end(notAttested(err));
            }
          }
          if (req.response_nonce !== "" && req.response_nonce !== sentNonce) return; // stale
          if (req.error_detail) {
            // NACK: Envoy keeps the previous secrets; sending the same ones again would be refused again.
            deps.log.warn("an SDS client refused the secrets sent", {
              version: sentVersion,
              uid: id.uid,
              error: String(req.error_detail.message ?? "").slice(0, 200),
            });
          }
          const newNames = [...req.resource_names];
          const namesChanged = [...newNames].sort().join("\n") !== [...names].sort().join("\n");
          names = newNames;
          subscribed = true;
          // An ACK of what was sent needs no answer; a first request or a new set of names does.
          if (req.response_nonce === "" || namesChanged) sentVersion = "";
          push();
        });
      });
      cache.on("changed", push);
    },

    FetchSecrets: async (
      call: grpc.ServerUnaryCall<DiscoveryRequest, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      let id: CallerIdentity;
      try {
        id = await callers.identify(call);
      } catch (err) {
        return callback(notAttested(err));
      }
      if (!admits(id)) return callback(noIdentity(id));
      const secrets = secretsFor(id, call.request.resource_names ?? []);
      if (secrets === null)
        return callback(
          Object.assign(new Error("the secrets are not issued yet"), {
            code: grpc.status.UNAVAILABLE,
            details: "the secrets are not issued yet",
          }),
        );
      const { message } = response(secrets);
      callback(null, { ...message, nonce: randomBytes(8).toString("hex") });
    },
  };
}
