import { createHmac, generateKeyPairSync, type KeyObject } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  type AccountKey,
  JWS_CHECKS,
  type JwsCheck,
  type JwsVerifierDeps,
  type KeySource,
  VerifiedRequest,
  verifyJwsRequest,
} from "../../acme/jws";
import { MemoryNonceLedger, NonceService } from "../../acme/nonce";
import { problemFor } from "../../acme/problem";
import { type ErrorCode, StintError } from "../../common/errors";
import { b64u, exportJwk, flattenedJws, type JwsAlgorithm, jwkThumbprint, signJws } from "../../formats/jose";
import { openssl, tempDir } from "../helpers/openssl";

const URL_ = "https://ca.test/acme/new-order";
const ALGS: JwsAlgorithm[] = ["ES256", "ES384", "EdDSA", "RS256"];
const RETRY = "retry with the nonce from this response's Replay-Nonce header";

const keys: Record<JwsAlgorithm, { privateKey: KeyObject; publicKey: KeyObject }> = {
  ES256: generateKeyPairSync("ec", { namedCurve: "P-256" }),
  ES384: generateKeyPairSync("ec", { namedCurve: "P-384" }),
  EdDSA: generateKeyPairSync("ed25519"),
  RS256: generateKeyPairSync("rsa", { modulusLength: 2048 }),
};
const otherP256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const rsa1024 = generateKeyPairSync("rsa", { modulusLength: 1024 });
const p521 = generateKeyPairSync("ec", { namedCurve: "P-521" });

const acctUrl = (name: string) => `https://ca.test/acme/acct/${name}`;
const accounts = new Map<string, AccountKey>(
  ALGS.map((alg) => [acctUrl(alg), { accountUrl: acctUrl(alg), key: keys[alg].publicKey, status: "valid" }]),
);
accounts.set(acctUrl("gone"), {
  accountUrl: acctUrl("gone"),
  key: keys.ES256.publicKey,
  status: "deactivated",
});

/** A self-signed leaf per algorithm, made by OpenSSL, as x5c carries it (DER). */
const leaves = {} as Record<JwsAlgorithm, Buffer>;
beforeAll(() => {
  const dir = tempDir();
  for (const alg of ALGS) {
    const keyPath = join(dir, `${alg}.key`);
    const certPath = join(dir, `${alg}.der`);
    writeFileSync(keyPath, keys[alg].privateKey.export({ type: "pkcs8", format: "pem" }));
    openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      keyPath,
      "-subj",
      "/CN=leaf",
      "-days",
      "1",
      "-outform",
      "DER",
      "-out",
      certPath,
    ]);
    leaves[alg] = readFileSync(certPath);
  }
});

let nonces: NonceService;
let deps: JwsVerifierDeps;
beforeEach(() => {
  nonces = new NonceService({ ledger: new MemoryNonceLedger() });
  deps = { nonces, lookupAccount: async (kid) => accounts.get(kid) ?? null, maxBodyBytes: 64 * 1024 };
});

interface SendOptions {
  allow?: KeySource[];
  contentType?: string | undefined;
  url?: string;
  deps?: JwsVerifierDeps;
}

function send(jws: unknown, o: SendOptions = {}): Promise<VerifiedRequest> {
  const body = Buffer.isBuffer(jws) ? jws : Buffer.from(JSON.stringify(jws));
  const contentType = "contentType" in o ? o.contentType : "application/jose+json";
  return verifyJwsRequest({ contentType, body, url: o.url ?? URL_ }, o.deps ?? deps, {
    allow: o.allow ?? ["kid"],
  });
}

/** A good ES256 request for the ES256 account, with header overrides (flattenedJws puts our members last). */
function signed(over: Record<string, unknown> = {}, payload: unknown = { ok: true }) {
  return flattenedJws(
    keys.ES256.privateKey,
    { kid: acctUrl("ES256"), nonce: nonces.issue(), url: URL_, ...over },
    payload,
  );
}

/** Any header (or raw protected text), signed with any key under any alg: for requests flattenedJws refuses to make. */
function raw(opts: {
  header?: object;
  protectedText?: string;
  payloadB64?: string;
  key?: KeyObject;
  alg?: JwsAlgorithm;
}) {
  const protectedB64 = b64u(opts.protectedText ?? JSON.stringify(opts.header));
  const payloadB64 = opts.payloadB64 ?? b64u("{}");
  const input = `${protectedB64}.${payloadB64}`;
  return {
    protected: protectedB64,
    payload: payloadB64,
    signature: signJws(opts.alg ?? "ES256", opts.key ?? keys.ES256.privateKey, input),
  };
}

const fresh = () => ({ kid: acctUrl("ES256"), nonce: nonces.issue(), url: URL_ });

async function refusal(p: Promise<unknown>): Promise<StintError> {
  try {
    await p;
  } catch (err) {
    return err as StintError;
  }
  throw new Error("the request was accepted");
}

describe("accepts good requests", () => {
  const cases = ALGS.flatMap((alg) =>
    (["jwk", "kid", "x5c"] as KeySource[]).map((kind) => [alg, kind] as const),
  );
  it.each(cases)("%s with %s, and POST-as-GET", async (alg, kind) => {
    const { privateKey, publicKey } = keys[alg];
    const keyHeader =
      kind === "jwk"
        ? { jwk: exportJwk(publicKey) }
        : kind === "kid"
          ? { kid: acctUrl(alg) }
          : { x5c: [leaves[alg].toString("base64"), leaves.ES256.toString("base64")] };
    const nonce = nonces.issue();
    const v = await send(flattenedJws(privateKey, { ...keyHeader, nonce, url: URL_ }, { hello: "world" }), {
      allow: [kind],
    });
    expect(v).toBeInstanceOf(VerifiedRequest);
    expect(VerifiedRequest.is(v)).toBe(true);
    expect(v).toMatchObject({ url: URL_, alg, nonce, payload: { hello: "world" } });
    expect(v.protectedHeader).toMatchObject({ alg, nonce, url: URL_ });
    const s = v.source;
    if (s.kind === "jwk") {
      expect(s.key.equals(publicKey)).toBe(true);
      expect(s.jwk).toEqual(exportJwk(publicKey));
      expect(s.thumbprint).toBe(jwkThumbprint(publicKey));
    } else if (s.kind === "kid") {
      expect(s.account.accountUrl).toBe(acctUrl(alg));
    } else {
      expect(s.key.equals(publicKey)).toBe(true);
      expect(s.chain).toEqual([leaves[alg], leaves.ES256]);
    }
    expect(s.kind).toBe(kind);

    const get = await send(
      flattenedJws(privateKey, { ...keyHeader, nonce: nonces.issue(), url: URL_ }, null),
      { allow: [kind] },
    );
    expect(get.payload).toBeNull();
  });

  it("tolerates media type parameters and case", async () => {
    for (const contentType of ["application/jose+json; charset=utf-8", "Application/JOSE+JSON"]) {
      await expect(send(signed(), { contentType })).resolves.toBeInstanceOf(VerifiedRequest);
    }
  });

  it("lets an endpoint allow several key sources", async () => {
    const v = await send(signed({ kid: undefined, jwk: exportJwk(keys.ES256.publicKey) }), {
      allow: ["jwk", "kid"],
    });
    expect(v.source.kind).toBe("jwk");
  });
});

interface Refusal {
  name: string;
  code: ErrorCode;
  check: JwsCheck;
  message: string;
  send: () => Promise<unknown>;
}

const SHAPE = (m: string) => `JWS "${m}" is not base64url (RFC 7515 2: URL-safe alphabet, no padding)`;
const ALG_LIST = "sign with one of ES256, ES384, EdDSA, RS256";
const KEY_SIZES =
  "which is not accepted; use P-256, P-384, Ed25519 or RSA of 2048 to 4096 bits with public exponent 65537";

const refusals: Refusal[] = [
  {
    name: "wrong content type",
    code: "ERR_UNSUPPORTED_MEDIA_TYPE",
    check: "content_type",
    message: 'Content-Type must be application/jose+json (got "application/json")',
    send: () => send(signed(), { contentType: "application/json" }),
  },
  {
    name: "no content type",
    code: "ERR_UNSUPPORTED_MEDIA_TYPE",
    check: "content_type",
    message: "Content-Type must be application/jose+json (got none)",
    send: () => send(signed(), { contentType: undefined }),
  },
  {
    name: "oversized body",
    code: "ERR_PAYLOAD_TOO_LARGE",
    check: "body_size",
    message: "request body is 101 bytes; the limit is 100",
    send: () => send(Buffer.alloc(101, "{"), { deps: { ...deps, maxBodyBytes: 100 } }),
  },
  {
    name: "not JSON",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: "request body is not JSON; send a flattened JWS (RFC 7515 7.2.2)",
    send: () => send(Buffer.from("{not json")),
  },
  {
    name: "JSON array",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: "request body must be a flattened JWS object (RFC 7515 7.2.2), not an array",
    send: () => send([signed()]),
  },
  {
    name: "compact serialization in a JSON string",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: "request body must be a flattened JWS object (RFC 7515 7.2.2), not a string",
    send: () => send("a.b.c"),
  },
  {
    name: "general serialization",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: 'general JWS serialization ("signatures") is not accepted; send one flattened JWS',
    send: () => {
      const j = signed();
      return send({ payload: j.payload, signatures: [{ protected: j.protected, signature: j.signature }] });
    },
  },
  {
    name: "unprotected header",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: 'an unprotected JWS "header" is not accepted; put every header parameter in "protected"',
    send: () => send({ ...signed(), header: { kid: acctUrl("ES256") } }),
  },
  {
    name: "missing signature",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: 'JWS member "signature" is missing or not a string',
    send: () => send({ ...signed(), signature: undefined }),
  },
  {
    name: "payload not a string",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: 'JWS member "payload" is missing or not a string',
    send: () => send({ ...signed(), payload: { ok: true } }),
  },
  {
    name: "extra member",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: 'unexpected JWS member "__proto__"; send only "protected", "payload" and "signature"',
    send: () => send(Buffer.from(`{"__proto__":{},${JSON.stringify(signed()).slice(1)}`)),
  },
  {
    name: "padded protected",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: SHAPE("protected"),
    send: () => {
      const j = signed();
      return send({ ...j, protected: `${j.protected}=` });
    },
  },
  {
    name: "standard-base64 payload",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: SHAPE("payload"),
    send: () => send({ ...signed(), payload: "ab+/" }),
  },
  {
    name: "non-canonical signature",
    code: "ERR_MALFORMED",
    check: "jws_shape",
    message: SHAPE("signature"),
    send: () => send({ ...signed(), signature: "AB" }),
  },
  {
    name: "protected header not JSON",
    code: "ERR_MALFORMED",
    check: "protected_header",
    message: "JWS protected header is not a JSON object",
    send: () => send(raw({ protectedText: "not json" })),
  },
  {
    name: "protected header an array",
    code: "ERR_MALFORMED",
    check: "protected_header",
    message: "JWS protected header is not a JSON object",
    send: () => send(raw({ protectedText: "[]" })),
  },
  {
    name: "crit",
    code: "ERR_MALFORMED",
    check: "protected_header",
    message: 'JWS "crit" is not accepted: this server implements no critical header extensions',
    send: () => send(signed({ crit: ["b64"], b64: false })),
  },
  {
    name: "b64",
    code: "ERR_MALFORMED",
    check: "protected_header",
    message: 'JWS "b64" is not accepted: the payload must be base64url-encoded (no RFC 7797)',
    send: () => send(signed({ b64: true })),
  },
  {
    name: 'alg "none"',
    code: "ERR_BAD_SIGNATURE_ALGORITHM",
    check: "alg",
    message: `JWS alg "none" is not accepted; ${ALG_LIST}`,
    send: () => send({ ...raw({ header: { alg: "none", ...fresh() } }), signature: "" }),
  },
  {
    name: "alg HS256",
    code: "ERR_BAD_SIGNATURE_ALGORITHM",
    check: "alg",
    message: `JWS alg "HS256" is not accepted; ${ALG_LIST}`,
    send: () => {
      const j = raw({ header: { alg: "HS256", ...fresh() } });
      return send({
        ...j,
        signature: createHmac("sha256", "secret").update(`${j.protected}.${j.payload}`).digest("base64url"),
      });
    },
  },
  {
    name: "missing alg",
    code: "ERR_BAD_SIGNATURE_ALGORITHM",
    check: "alg",
    message: `JWS protected header has no "alg"; ${ALG_LIST}`,
    send: () => send(raw({ header: fresh() })),
  },
  {
    name: "both jwk and kid",
    code: "ERR_MALFORMED",
    check: "key_source",
    message:
      'JWS protected header must carry exactly one of jwk, kid, x5c (found jwk and kid); this resource expects "kid" (the account URL)',
    send: () => send(signed({ jwk: exportJwk(keys.ES256.publicKey) })),
  },
  {
    name: "no key source",
    code: "ERR_MALFORMED",
    check: "key_source",
    message:
      'JWS protected header must carry exactly one of jwk, kid, x5c (found none); this resource expects "jwk" (the public key itself)',
    send: () => send(raw({ header: { alg: "ES256", nonce: nonces.issue(), url: URL_ } }), { allow: ["jwk"] }),
  },
  {
    name: "x5c where not allowed",
    code: "ERR_MALFORMED",
    check: "key_source",
    message: 'this resource expects "kid" (the account URL), not "x5c"',
    send: () => send(signed({ kid: undefined, x5c: [leaves.ES256.toString("base64")] })),
  },
  {
    name: "jwk where kid expected",
    code: "ERR_MALFORMED",
    check: "key_source",
    message:
      'this resource expects "kid" (the account URL) or "x5c" (the current certificate chain), not "jwk"',
    send: () =>
      send(signed({ kid: undefined, jwk: exportJwk(keys.ES256.publicKey) }), { allow: ["kid", "x5c"] }),
  },
  {
    name: "jwk with private key",
    code: "ERR_BAD_PUBLIC_KEY",
    check: "key",
    message: "jwk must be a public key (it carries private or secret parts)",
    send: () =>
      send(signed({ kid: undefined, jwk: keys.ES256.privateKey.export({ format: "jwk" }) }), {
        allow: ["jwk"],
      }),
  },
  {
    name: "RSA-1024 jwk",
    code: "ERR_BAD_PUBLIC_KEY",
    check: "key",
    message: `jwk is an RSA-1024 key, ${KEY_SIZES}`,
    send: () =>
      send(
        raw({
          header: { alg: "RS256", jwk: exportJwk(rsa1024.publicKey), nonce: nonces.issue(), url: URL_ },
          key: rsa1024.privateKey,
          alg: "RS256",
        }),
        { allow: ["jwk"] },
      ),
  },
  {
    name: "P-521 jwk",
    code: "ERR_BAD_PUBLIC_KEY",
    check: "key",
    message: `jwk is an EC P-521 key, ${KEY_SIZES}`,
    send: () =>
      send(
        raw({ header: { alg: "ES256", jwk: exportJwk(p521.publicKey), nonce: nonces.issue(), url: URL_ } }),
        { allow: ["jwk"] },
      ),
  },
  {
    name: "symmetric jwk",
    code: "ERR_BAD_PUBLIC_KEY",
    check: "key",
    message: 'jwk key type "oct" is not supported',
    send: () =>
      send(
        raw({ header: { alg: "ES256", jwk: { kty: "oct", k: "c2VjcmV0" }, ...fresh(), kid: undefined } }),
        { allow: ["jwk"] },
      ),
  },
  {
    name: "kid not a string",
    code: "ERR_MALFORMED",
    check: "key",
    message: '"kid" must be the account URL, a string',
    send: () => send(signed({ kid: 7 })),
  },
  {
    name: "x5c in base64url",
    code: "ERR_MALFORMED",
    check: "key",
    message: "x5c[0] is not standard base64 (x5c uses base64 with padding, not base64url: RFC 7515 4.1.6)",
    send: () =>
      send(signed({ kid: undefined, x5c: [leaves.ES256.toString("base64url")] }), { allow: ["x5c"] }),
  },
  {
    name: "x5c not a certificate",
    code: "ERR_MALFORMED",
    check: "key",
    message: "x5c[0] is not a DER X.509 certificate",
    send: () =>
      send(signed({ kid: undefined, x5c: [Buffer.from("hello").toString("base64")] }), { allow: ["x5c"] }),
  },
  {
    name: "x5c empty",
    code: "ERR_MALFORMED",
    check: "key",
    message: '"x5c" must be an array of 1 to 10 certificates, leaf first',
    send: () => send(signed({ kid: undefined, x5c: [] }), { allow: ["x5c"] }),
  },
  {
    name: "unknown kid",
    code: "ERR_ACCOUNT_DOES_NOT_EXIST",
    check: "account",
    message: 'no account exists at this "kid"; check the account URL or register with newAccount',
    send: () => send(signed({ kid: acctUrl("nobody") })),
  },
  {
    name: "deactivated account",
    code: "ERR_UNAUTHORIZED",
    check: "account",
    message: "account is deactivated and can no longer authorize requests",
    send: () => send(signed({ kid: acctUrl("gone") })),
  },
  {
    name: "ES256 header, RSA jwk",
    code: "ERR_BAD_SIGNATURE_ALGORITHM",
    check: "alg_key",
    message: "JWS alg ES256 does not fit the signing key (RSA-2048), which signs with RS256",
    send: () =>
      send(
        raw({
          header: { alg: "ES256", jwk: exportJwk(keys.RS256.publicKey), nonce: nonces.issue(), url: URL_ },
          key: keys.RS256.privateKey,
          alg: "RS256",
        }),
        { allow: ["jwk"] },
      ),
  },
  {
    name: "ES384 header, P-256 account",
    code: "ERR_BAD_SIGNATURE_ALGORITHM",
    check: "alg_key",
    message: "JWS alg ES384 does not fit the signing key (EC prime256v1), which signs with ES256",
    send: () => send(raw({ header: { alg: "ES384", ...fresh() } })),
  },
  {
    name: "jwk alg differs",
    code: "ERR_BAD_SIGNATURE_ALGORITHM",
    check: "alg_key",
    message: `JWS alg ES256 differs from the jwk's own "alg"`,
    send: () =>
      send(signed({ kid: undefined, jwk: { ...exportJwk(keys.ES256.publicKey), alg: "ES384" } }), {
        allow: ["jwk"],
      }),
  },
  {
    name: "tampered payload",
    code: "ERR_MALFORMED",
    check: "signature",
    message: "JWS signature does not verify",
    send: () => send({ ...signed(), payload: b64u(JSON.stringify({ ok: false })) }),
  },
  {
    name: "signed by another key",
    code: "ERR_MALFORMED",
    check: "signature",
    message: "JWS signature does not verify",
    send: () => send(raw({ header: { alg: "ES256", ...fresh() }, key: otherP256.privateKey })),
  },
  {
    name: "empty signature",
    code: "ERR_MALFORMED",
    check: "signature",
    message: "JWS signature does not verify",
    send: () => send({ ...signed(), signature: "" }),
  },
  {
    name: "missing nonce",
    code: "ERR_BAD_NONCE",
    check: "nonce",
    message: `JWS protected header has no "nonce" string; get one from newNonce or any response's Replay-Nonce header`,
    send: () => send(signed({ nonce: undefined })),
  },
  {
    name: "reused nonce",
    code: "ERR_BAD_NONCE",
    check: "nonce",
    message: `nonce has already been used; ${RETRY}`,
    send: async () => {
      const nonce = nonces.issue();
      await send(signed({ nonce }));
      return send(signed({ nonce }));
    },
  },
  {
    name: "nonce from another CA key",
    code: "ERR_BAD_NONCE",
    check: "nonce",
    message: `nonce was not issued by this CA (or the CA has restarted since); ${RETRY}`,
    send: () => send(signed({ nonce: new NonceService({ ledger: new MemoryNonceLedger() }).issue() })),
  },
  {
    name: "expired nonce",
    code: "ERR_BAD_NONCE",
    check: "nonce",
    message: `nonce has expired (nonces are valid for 300 s); ${RETRY}`,
    send: () => {
      let t = Date.now();
      const svc = new NonceService({ ledger: new MemoryNonceLedger(() => t), now: () => t });
      const nonce = svc.issue();
      t += 300_000;
      return send(signed({ nonce }), { deps: { ...deps, nonces: svc } });
    },
  },
  {
    name: "wrong url",
    code: "ERR_UNAUTHORIZED",
    check: "url",
    message: `JWS "url" "https://ca.test/acme/new-account" does not match the URL this request was sent to (${URL_})`,
    send: () => send(signed({ url: "https://ca.test/acme/new-account" })),
  },
  {
    name: "missing url",
    code: "ERR_MALFORMED",
    check: "url",
    message: 'JWS protected header has no "url"; set it to this request\'s URL',
    send: () => send(signed({ url: undefined })),
  },
  {
    name: "payload not JSON",
    code: "ERR_MALFORMED",
    check: "payload",
    message: "JWS payload is not JSON (send an empty payload for POST-as-GET)",
    send: () => send(raw({ header: { alg: "ES256", ...fresh() }, payloadB64: b64u("{nope") })),
  },
  {
    name: "payload not UTF-8",
    code: "ERR_MALFORMED",
    check: "payload",
    message: "JWS payload is not JSON (send an empty payload for POST-as-GET)",
    send: () =>
      send(raw({ header: { alg: "ES256", ...fresh() }, payloadB64: b64u(Buffer.from([0x22, 0xff, 0x22])) })),
  },
];

describe("refuses bad requests with a stable code, message and check label", () => {
  it.each(refusals.map((r) => [r.name, r] as const))("%s", async (_name, r) => {
    const err = await refusal(r.send());
    expect(err).toBeInstanceOf(StintError);
    expect({ code: err.code, check: err.check, message: err.message }).toEqual({
      code: r.code,
      check: r.check,
      message: r.message,
    });
    // Every refusal is a client error at the edge, never a 5xx.
    expect(problemFor(err).internal).toBe(false);
  });

  it("has a case for every check in the pipeline", () => {
    expect(new Set(refusals.map((r) => r.check))).toEqual(new Set(JWS_CHECKS));
  });

  it("checks x5c's base64url case against a leaf whose two spellings differ", () => {
    expect(leaves.ES256.toString("base64url")).not.toBe(leaves.ES256.toString("base64"));
  });
});

describe("order", () => {
  it("reports a bad signature before the nonce, and does not consume the nonce", async () => {
    const nonce = nonces.issue();
    const forged = { ...signed({ nonce }), payload: b64u(JSON.stringify({ ok: false })) };
    expect((await refusal(send(forged))).check).toBe("signature");
    await expect(send(signed({ nonce }))).resolves.toBeInstanceOf(VerifiedRequest);
    expect((await refusal(send(forged))).check).toBe("signature");
    expect((await refusal(send(signed({ nonce })))).check).toBe("nonce");
  });

  it("reports earlier checks first", async () => {
    const forged = { ...signed({ kid: acctUrl("nobody"), url: "https://elsewhere" }), signature: "" };
    expect((await refusal(send(forged, { contentType: "text/plain" }))).check).toBe("content_type");
    expect((await refusal(send(forged))).check).toBe("account");
    const looked: string[] = [];
    const spy = {
      ...deps,
      lookupAccount: async (kid: string) => {
        looked.push(kid);
        return null;
      },
    };
    expect((await refusal(send(raw({ header: { alg: "none", ...fresh() } }), { deps: spy }))).check).toBe(
      "alg",
    );
    expect(looked).toEqual([]);
  });
});

it("a VerifiedRequest cannot be made outside the pipeline", () => {
  expect(() => Reflect.construct(VerifiedRequest, [Symbol("stint.acme.verifiedRequest"), {}])).toThrow(
    "a VerifiedRequest comes only from verifyJwsRequest",
  );
  expect(VerifiedRequest.is({ url: URL_, alg: "ES256", nonce: "n", payload: null })).toBe(false);
});
