import { createPublicKey, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { StintError } from "../../common/errors";
import { fileError } from "../../common/files";
import {
  algorithmForKey,
  importJwk,
  isJwsAlgorithm,
  JWS_ALGORITHMS,
  keyFitsAlgorithm,
} from "../../formats/jose";
import { parsePemBlocks } from "../../formats/pem";
import {
  type Attestation,
  type AttestationContext,
  type Attestor,
  evidenceMembers,
  grantedSelectors,
} from "./attestor";
import { type JwtKey, shown, verifyJwt } from "./jwt";

/**
 * k8s_sat: a Kubernetes service account token (a JWT the API server signs),
 * checked against keys from configuration only. Evidence `{"token": "<JWT>"}`;
 * selectors `k8s:ns:<namespace>`, `k8s:sa:<service account>`, and
 * `k8s:pod:<pod>` for projected tokens bound to a pod.
 */

export interface K8sSatConfig {
  /** The cluster's service account issuer (`--service-account-issuer`), compared exactly. */
  issuer: string;
  /** Accepted `aud` values; a token must carry at least one of them. */
  audiences: string[];
  /** Public keys (from PEM files); tried in turn. */
  keys?: KeyObject[];
  /** A parsed JWKS document (`{"keys": [...]}`, as the cluster serves at /openid/v1/jwks). */
  jwks?: unknown;
  /** Tolerance for clocks out of step, on exp, nbf and iat; default 30 s. */
  clockSkewMs?: number;
}

export interface K8sSatFiles {
  issuer: string;
  audiences: string[];
  publicKeyFiles?: string[];
  jwksFile?: string;
  clockSkewMs?: number;
}

export const K8S_SAT_DEFAULT_SKEW_MS = 30_000;
const MAX_SKEW_MS = 10 * 60_000;
const WHAT = "service account token";

const configError = (msg: string) => new StintError("ERR_CONFIG", `k8s_sat attestor: ${msg}`);

/** Reads the key files and the JWKS file named in configuration; every problem is one ERR_CONFIG line. */
export async function loadK8sSatConfig(files: K8sSatFiles): Promise<K8sSatConfig> {
  const keys: KeyObject[] = [];
  for (const path of files.publicKeyFiles ?? []) keys.push(...publicKeysFromPem(await readText(path), path));
  let jwks: unknown;
  if (files.jwksFile !== undefined) {
    const text = await readText(files.jwksFile);
    try {
      jwks = JSON.parse(text);
    } catch {
      throw configError(`JWKS file ${files.jwksFile} is not JSON`);
    }
  }
  const config: K8sSatConfig = { issuer: files.issuer, audiences: files.audiences, keys, jwks };
  if (files.clockSkewMs !== undefined) config.clockSkewMs = files.clockSkewMs;
  verificationKeys(config); // fail at load, not at the first request
  return config;
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw fileError(err, path, "read a k8s_sat attestor key file");
  }
}

/** Public keys from PEM text; private keys are refused so they are never copied onto the CA host. */
function publicKeysFromPem(text: string, path: string): KeyObject[] {
  const blocks = parsePemBlocks(text);
  if (blocks.some((b) => b.label.includes("PRIVATE KEY"))) {
    throw configError(`${path} holds a private key; give the public key only (openssl pkey -pubout)`);
  }
  const keys = blocks.filter((b) => b.label === "PUBLIC KEY" || b.label === "RSA PUBLIC KEY");
  if (keys.length === 0) throw configError(`${path} holds no "PUBLIC KEY" PEM block`);
  return keys.map((b, i) => {
    try {
      const type = b.label === "PUBLIC KEY" ? "spki" : "pkcs1";
      return usableKey(createPublicKey({ key: b.der, format: "der", type }), `${path} key ${i + 1}`);
    } catch (err) {
      throw err instanceof StintError ? err : configError(`${path} key ${i + 1} is not a valid public key`);
    }
  });
}

function usableKey(key: KeyObject, what: string): KeyObject {
  if (key.type !== "public") throw configError(`${what} is not a public key`);
  if (algorithmForKey(key) === null) {
    throw configError(
      `${what} cannot verify any accepted algorithm (${JWS_ALGORITHMS.join(", ")}; RSA ≥ 2048 bits)`,
    );
  }
  return key;
}

/** The keys of a JWKS document, each refused clearly if it is not a public signing key Stint can use. */
function jwksKeys(jwks: unknown): JwtKey[] {
  const list = (jwks as { keys?: unknown } | null)?.keys;
  if (typeof jwks !== "object" || !Array.isArray(list)) {
    throw configError('JWKS must be an object {"keys": [...]}');
  }
  const kids = new Set<string>();
  return list.map((jwk: unknown, i): JwtKey => {
    const j = (typeof jwk === "object" && jwk !== null ? jwk : {}) as Record<string, unknown>;
    const what = `JWKS key ${i + 1}${typeof j.kid === "string" ? ` (kid ${shown(j.kid)})` : ""}`;
    if (j.use !== undefined && j.use !== "sig") {
      throw configError(`${what} is for use ${shown(j.use)}, not "sig"`);
    }
    if (j.alg !== undefined && !isJwsAlgorithm(j.alg)) {
      throw configError(`${what} has alg ${shown(j.alg)}; accepted: ${JWS_ALGORITHMS.join(", ")}`);
    }
    if (j.kid !== undefined && typeof j.kid !== "string") {
      throw configError(`${what} has a kid that is not a string`);
    }
    if (typeof j.kid === "string") {
      if (kids.has(j.kid)) throw configError(`${what}: kid ${shown(j.kid)} appears twice`);
      kids.add(j.kid);
    }
    let key: KeyObject;
    try {
      key = usableKey(importJwk(jwk), what);
    } catch (err) {
      throw err instanceof StintError && err.code === "ERR_CONFIG"
        ? err
        : configError(`${what}: ${(err as Error).message}`);
    }
    const out: JwtKey = { key };
    if (typeof j.kid === "string") out.kid = j.kid;
    if (isJwsAlgorithm(j.alg)) {
      if (!keyFitsAlgorithm(key, j.alg)) throw configError(`${what}: its key does not fit its alg ${j.alg}`);
      out.alg = j.alg;
    }
    return out;
  });
}

function verificationKeys(config: K8sSatConfig): JwtKey[] {
  if (typeof config.issuer !== "string" || config.issuer === "") throw configError("issuer must be set");
  const audiences = config.audiences;
  if (
    !Array.isArray(audiences) ||
    audiences.length === 0 ||
    !audiences.every((a) => typeof a === "string" && a)
  ) {
    throw configError("audiences must list at least one non-empty audience");
  }
  const skew = config.clockSkewMs ?? K8S_SAT_DEFAULT_SKEW_MS;
  if (!Number.isInteger(skew) || skew < 0 || skew > MAX_SKEW_MS) {
    throw configError(`clock skew must be between 0 and ${MAX_SKEW_MS / 60_000} min`);
  }
  const keys: JwtKey[] = (config.keys ?? []).map((key, i) => ({
    key: usableKey(key, `public key ${i + 1}`),
  }));
  if (config.jwks !== undefined) keys.push(...jwksKeys(config.jwks));
  if (keys.length === 0) throw configError("no verification keys: give public key files or a JWKS file");
  return keys;
}

export class K8sSatAttestor implements Attestor {
  readonly name = "k8s_sat";
  private readonly keys: JwtKey[];
  private readonly issuer: string;
  private readonly audiences: readonly string[];
  private readonly skewMs: number;

  constructor(config: K8sSatConfig) {
    this.keys = verificationKeys(config);
    this.issuer = config.issuer;
    this.audiences = [...config.audiences];
    this.skewMs = config.clockSkewMs ?? K8S_SAT_DEFAULT_SKEW_MS;
  }

  async attest(evidence: unknown, ctx: AttestationContext): Promise<Attestation> {
    const { token } = evidenceMembers(evidence, this.name, ["token"]);
    const claims = verifyJwt(
      token,
      this.keys,
      { issuer: this.issuer, audiences: this.audiences, clockSkewMs: this.skewMs, now: ctx.now },
      WHAT,
    );
    const who = workloadClaims(claims);
    const selectors = [`k8s:ns:${who.namespace}`, `k8s:sa:${who.serviceAccount}`];
    if (who.pod !== undefined) selectors.push(`k8s:pod:${who.pod}`);
    const granted = grantedSelectors(this.name, selectors);
    return { selectors: granted, reusable: true, evidence: evidenceReference(who, claims.jti) };
  }
}

const JTI = /^[\x21-\x7e]{1,128}$/;

/**
 * The service account (and pod) the token proved, and its `jti` when it has
 * one: enough to find the token in the cluster's audit log, nothing to reuse.
 * Only called once the token verified, so the names are the API server's word.
 */
function evidenceReference(who: WorkloadClaims, jti: unknown): string {
  const parts = [`ns=${who.namespace}`, `sa=${who.serviceAccount}`];
  if (who.pod !== undefined) parts.push(`pod=${who.pod}`);
  if (typeof jti === "string" && JTI.test(jti)) parts.push(`jti=${jti}`);
  return `k8s_sat:${parts.join(",")}`;
}

interface WorkloadClaims {
  namespace: string;
  serviceAccount: string;
  pod?: string;
}

/** Projected tokens nest the names under "kubernetes.io"; legacy secret-based tokens use flat claims. */
function workloadClaims(claims: Record<string, unknown>): WorkloadClaims {
  const k8s = claims["kubernetes.io"];
  if (k8s !== undefined) {
    const projected = asObject(k8s, "kubernetes.io");
    const sa = asObject(projected.serviceaccount, "kubernetes.io.serviceaccount");
    const out: WorkloadClaims = {
      namespace: claimString(projected.namespace, "kubernetes.io.namespace"),
      serviceAccount: claimString(sa.name, "kubernetes.io.serviceaccount.name"),
    };
    if (projected.pod !== undefined) {
      out.pod = claimString(asObject(projected.pod, "kubernetes.io.pod").name, "kubernetes.io.pod.name");
    }
    return out;
  }
  return {
    namespace: claimString(
      claims["kubernetes.io/serviceaccount/namespace"],
      "kubernetes.io/serviceaccount/namespace",
    ),
    serviceAccount: claimString(
      claims["kubernetes.io/serviceaccount/service-account.name"],
      "kubernetes.io/serviceaccount/service-account.name",
    ),
  };
}

function asObject(value: unknown, claim: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new StintError(
      "ERR_ATTESTATION",
      `${WHAT} has no ${claim} claim object; is it a Kubernetes token?`,
    );
  }
  return value as Record<string, unknown>;
}

function claimString(value: unknown, claim: string): string {
  if (typeof value !== "string" || value === "") {
    throw new StintError("ERR_ATTESTATION", `${WHAT} has no ${claim} claim; is it a Kubernetes token?`);
  }
  return value;
}
