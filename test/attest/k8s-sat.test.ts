import { createHmac, generateKeyPairSync, type KeyObject } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AttestationContext } from "../../acme/attest/attestor";
import { K8sSatAttestor, type K8sSatConfig, loadK8sSatConfig } from "../../acme/attest/k8s-sat";
import { parseSelector } from "../../ca/entries";
import { b64u, exportJwk, type JwsAlgorithm, signJws } from "../../formats/jose";
import { tempDir } from "../helpers/openssl";
import { stintError } from "./helpers";

const ISSUER = "https://kubernetes.default.svc.cluster.local";
const NOW = new Date("2030-06-01T12:00:00Z");
const now = Math.floor(NOW.getTime() / 1000);
const ctx: AttestationContext = {
  spiffeId: "spiffe://example.org/web",
  token: "t",
  accountThumbprint: "a",
  account: "https://ca.test/acme/acct/1",
  now: NOW,
};
const WHAT = "service account token";

const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const ed = generateKeyPairSync("ed25519");
const stranger = generateKeyPairSync("ec", { namedCurve: "P-256" });

function jwt(alg: JwsAlgorithm, key: KeyObject, claims: object, header: object = {}): string {
  const input = `${b64u(JSON.stringify({ alg, ...header }))}.${b64u(JSON.stringify(claims))}`;
  return `${input}.${signJws(alg, key, input)}`;
}

const projected = (over: Record<string, unknown> = {}) => ({
  aud: ["stint"],
  exp: now + 600,
  iat: now - 10,
  nbf: now - 10,
  iss: ISSUER,
  sub: "system:serviceaccount:prod:web",
  "kubernetes.io": {
    namespace: "prod",
    pod: { name: "web-7d9f8-x2x4q", uid: "5a0e5a3c-0b9e-4e5e-9a59-2c1f0f1f4b10" },
    serviceaccount: { name: "web", uid: "0d7c4f0e-5b43-4c8a-8d8f-63e5e0a4d1b2" },
  },
  ...over,
});

const legacy = {
  iss: ISSUER,
  aud: "stint",
  exp: now + 600,
  sub: "system:serviceaccount:prod:web",
  "kubernetes.io/serviceaccount/namespace": "prod",
  "kubernetes.io/serviceaccount/secret.name": "web-token-abcde",
  "kubernetes.io/serviceaccount/service-account.name": "web",
  "kubernetes.io/serviceaccount/service-account.uid": "0d7c4f0e-5b43-4c8a-8d8f-63e5e0a4d1b2",
};

const jwks = {
  keys: [
    { ...exportJwk(ec.publicKey), kid: "ec-1", use: "sig", alg: "ES256" },
    { ...exportJwk(rsa.publicKey), kid: "rsa-1", use: "sig", alg: "RS256" },
  ],
};
const base: K8sSatConfig = { issuer: ISSUER, audiences: ["stint"], jwks };
const attestor = new K8sSatAttestor(base);
const refusal = (token: string, a = attestor, c = ctx) => a.attest({ token }, c);
const SELECTORS = ["k8s:ns:prod", "k8s:sa:web", "k8s:pod:web-7d9f8-x2x4q"];

describe("k8s_sat: accepted tokens", () => {
  it.each([
    ["RS256", rsa.privateKey, "rsa-1"],
    ["ES256", ec.privateKey, "ec-1"],
  ] as const)("grants ns, sa and pod for a projected %s token with a JWKS kid", async (alg, key, kid) => {
    const result = await attestor.attest({ token: jwt(alg, key, projected(), { kid, typ: "JWT" }) }, ctx);
    expect(result).toEqual({
      selectors: SELECTORS,
      reusable: true,
      evidence: "k8s_sat:ns=prod,sa=web,pod=web-7d9f8-x2x4q",
    });
    for (const s of result.selectors) expect(parseSelector(s)).toBe(s);
  });

  it("grants ns and sa for a legacy token (aud a string), no pod", async () => {
    expect(await attestor.attest({ token: jwt("RS256", rsa.privateKey, legacy) }, ctx)).toEqual({
      selectors: ["k8s:ns:prod", "k8s:sa:web"],
      reusable: true,
      evidence: "k8s_sat:ns=prod,sa=web",
    });
  });

  it("names the token by its service account and jti for the audit log, never by the token", async () => {
    const token = jwt("ES256", ec.privateKey, projected({ jti: "2f1c0d7e-jti" }), { kid: "ec-1" });
    const noted: string[] = [];
    const result = await attestor.attest({ token }, { ...ctx, reference: (r) => noted.push(r) });
    expect(result.evidence).toBe("k8s_sat:ns=prod,sa=web,pod=web-7d9f8-x2x4q,jti=2f1c0d7e-jti");
    // An unverified token's claims are the presenter's say-so: a refusal names nothing.
    await expect(
      attestor.attest(
        { token: jwt("ES256", stranger.privateKey, projected(), { kid: "ec-1" }) },
        { ...ctx, reference: (r) => noted.push(r) },
      ),
    ).rejects.toMatchObject({ code: "ERR_ATTESTATION" });
    expect(noted).toEqual([]);
    const odd = jwt("ES256", ec.privateKey, projected({ jti: "has space" }), { kid: "ec-1" });
    expect((await attestor.attest({ token: odd }, ctx)).evidence).toBe(
      "k8s_sat:ns=prod,sa=web,pod=web-7d9f8-x2x4q",
    );
    for (const part of token.split(".")) expect(result.evidence).not.toContain(part);
  });

  it("tries each configured key when the token has no kid, or the keys have none (PEM files)", async () => {
    const pemKeys = new K8sSatAttestor({
      issuer: ISSUER,
      audiences: ["other", "stint"],
      keys: [ec.publicKey, ed.publicKey],
    });
    for (const token of [
      jwt("EdDSA", ed.privateKey, projected()),
      jwt("ES256", ec.privateKey, projected(), { kid: "anything" }),
    ]) {
      expect((await pemKeys.attest({ token }, ctx)).selectors).toEqual(SELECTORS);
    }
  });

  it("honours the clock skew on exp, nbf and iat (default 30 s)", async () => {
    const late = jwt("ES256", ec.privateKey, projected({ exp: now - 29 }), { kid: "ec-1" });
    const early = jwt("ES256", ec.privateKey, projected({ nbf: now + 29, iat: now + 29 }), { kid: "ec-1" });
    expect((await attestor.attest({ token: late }, ctx)).selectors).toEqual(SELECTORS);
    expect((await attestor.attest({ token: early }, ctx)).selectors).toEqual(SELECTORS);
    const strict = new K8sSatAttestor({ ...base, clockSkewMs: 0 });
    await expect(refusal(late, strict)).rejects.toEqual(
      stintError("ERR_ATTESTATION", `${WHAT} expired at ${new Date((now - 29) * 1000).toISOString()}`),
    );
    await expect(refusal(early, strict)).rejects.toEqual(
      stintError(
        "ERR_ATTESTATION",
        `${WHAT} is not valid before ${new Date((now + 29) * 1000).toISOString()} (nbf)`,
      ),
    );
  });
});

describe("k8s_sat: refused tokens", () => {
  const token = (claims: object, header: object = { kid: "ec-1" }) =>
    jwt("ES256", ec.privateKey, claims, header);

  it.each([
    [
      "signed by another key",
      jwt("ES256", stranger.privateKey, projected(), { kid: "ec-1" }),
      `${WHAT} signature does not verify with any configured key`,
    ],
    [
      "signed with the RSA key but claiming the EC kid",
      jwt("RS256", rsa.privateKey, projected(), { kid: "ec-1" }),
      `${WHAT} signature does not verify with any configured key`,
    ],
    [
      "for another audience",
      token(projected({ aud: ["vault", "api"] })),
      `${WHAT} audience [vault, api] is not accepted; expected one of [stint]`,
    ],
    [
      "with no audience",
      token(projected({ aud: [] })),
      `${WHAT} has no aud claim (a string or a list of strings); expected one of [stint]`,
    ],
    [
      "from another issuer",
      token(projected({ iss: "https://evil.example" })),
      `${WHAT} issuer "https://evil.example" is not accepted; expected "${ISSUER}"`,
    ],
    [
      "expired",
      token(projected({ exp: now - 31 })),
      `${WHAT} expired at ${new Date((now - 31) * 1000).toISOString()}`,
    ],
    [
      "without exp",
      token(projected({ exp: undefined })),
      `${WHAT} has no exp claim; tokens that never expire are not accepted`,
    ],
    [
      "with exp not a number",
      token(projected({ exp: "soon" })),
      `${WHAT} claim exp is not a NumericDate (seconds since 1970)`,
    ],
    [
      "not yet valid",
      token(projected({ nbf: now + 31 })),
      `${WHAT} is not valid before ${new Date((now + 31) * 1000).toISOString()} (nbf)`,
    ],
    [
      "issued in the future",
      token(projected({ iat: now + 3600 })),
      `${WHAT} was issued in the future, at ${new Date((now + 3600) * 1000).toISOString()} (iat)`,
    ],
    [
      "with a kid not in the JWKS",
      token(projected(), { kid: "ec-2" }),
      `${WHAT} key id "ec-2" is not among the configured keys`,
    ],
    [
      "with crit",
      token(projected(), { kid: "ec-1", crit: ["exp"] }),
      `${WHAT} header has "crit" extensions, which Stint does not process`,
    ],
    [
      "with typ not JWT",
      token(projected(), { kid: "ec-1", typ: "at+jwt" }),
      `${WHAT} typ "at+jwt" is not "JWT"`,
    ],
    [
      "without Kubernetes claims",
      token({ ...legacy, "kubernetes.io/serviceaccount/namespace": undefined }),
      `${WHAT} has no kubernetes.io/serviceaccount/namespace claim; is it a Kubernetes token?`,
    ],
    [
      "with a namespace that is no Kubernetes name",
      token(projected({ "kubernetes.io": { namespace: "a:b", serviceaccount: { name: "web" } } })),
      /^k8s_sat: evidence names something Stint cannot use as a selector: selector "k8s:ns:a:b"/,
    ],
  ])("refuses a token %s", async (_why, t, message) => {
    await expect(refusal(t)).rejects.toEqual(stintError("ERR_ATTESTATION", message));
  });

  it("refuses alg none and HS256 (even keyed with the public key, the classic confusion)", async () => {
    const body = b64u(JSON.stringify(projected()));
    const none = `${b64u(JSON.stringify({ alg: "none" }))}.${body}.`;
    await expect(refusal(none)).rejects.toEqual(
      stintError(
        "ERR_ATTESTATION",
        `${WHAT} alg "none" is not accepted; accepted: ES256, ES384, EdDSA, RS256`,
      ),
    );
    const hsInput = `${b64u(JSON.stringify({ alg: "HS256", kid: "rsa-1" }))}.${body}`;
    const secret = rsa.publicKey.export({ type: "spki", format: "pem" });
    const hs = `${hsInput}.${createHmac("sha256", secret).update(hsInput).digest("base64url")}`;
    await expect(refusal(hs)).rejects.toEqual(
      stintError(
        "ERR_ATTESTATION",
        `${WHAT} alg "HS256" is not accepted; accepted: ES256, ES384, EdDSA, RS256`,
      ),
    );
    // PS256 is a real signature algorithm, but not one Stint implements.
    const ps = `${b64u(JSON.stringify({ alg: "PS256" }))}.${body}.AAAA`;
    await expect(refusal(ps)).rejects.toEqual(stintError("ERR_ATTESTATION", /alg "PS256" is not accepted/));
  });

  it.each([
    [
      "two parts",
      "eyJhbGciOiJFUzI1NiJ9.eyJhIjoxfQ",
      `${WHAT} is not a compact JWT: expected 3 base64url parts separated by ".", found 2`,
    ],
    ["five parts (JWE)", "a.b.c.d.e", `${WHAT} is an encrypted JWT (JWE); only signed JWTs are accepted`],
    ["bad base64 in the header", "eyJhbGciOiJFUzI1NiJ9=.eyJhIjoxfQ.AAAA", `${WHAT} header is not base64url`],
    [
      "standard base64 in the payload",
      `${b64u('{"alg":"ES256"}')}.eyJhIjox+Q.AAAA`,
      `${WHAT} payload is not base64url`,
    ],
    [
      "a header that is not JSON",
      `${b64u("{alg:ES256}")}.eyJhIjoxfQ.AAAA`,
      `${WHAT} header is not UTF-8 JSON`,
    ],
    [
      "a header that is a JSON array",
      `${b64u('["ES256"]')}.eyJhIjoxfQ.AAAA`,
      `${WHAT} header is not a JSON object`,
    ],
    [
      "a payload that is not UTF-8",
      `${b64u('{"alg":"ES256"}')}.${b64u(Buffer.from([0x7b, 0xff, 0x7d]))}.AAAA`,
      `${WHAT} payload is not UTF-8 JSON`,
    ],
    ["an empty signature", `${b64u('{"alg":"ES256"}')}.${b64u("{}")}.`, `${WHAT} has no signature`],
    ["a token too long", `${"a".repeat(20000)}`, `${WHAT} is longer than 16384 characters`],
  ])("calls a JWT with %s malformed", async (_why, t, message) => {
    await expect(refusal(t)).rejects.toEqual(stintError("ERR_MALFORMED", message));
  });

  it("insists on evidence {token}", async () => {
    await expect(attestor.attest({ jwt: "x" }, ctx)).rejects.toEqual(
      stintError(
        "ERR_MALFORMED",
        'k8s_sat evidence must have exactly the members {"token": …}; missing: token; unexpected: "jwt"',
      ),
    );
    await expect(attestor.attest({ token: 7 }, ctx)).rejects.toEqual(
      stintError("ERR_MALFORMED", `${WHAT} must be a string`),
    );
  });
});

describe("k8s_sat configuration", () => {
  const dir = tempDir("stint-k8s-");
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it("loads a JWKS file and public key PEM files", async () => {
    const fromJwks = new K8sSatAttestor(
      await loadK8sSatConfig({
        issuer: ISSUER,
        audiences: ["stint"],
        jwksFile: file("jwks.json", JSON.stringify(jwks)),
      }),
    );
    expect(
      (await fromJwks.attest({ token: jwt("ES256", ec.privateKey, projected(), { kid: "ec-1" }) }, ctx))
        .selectors,
    ).toEqual(SELECTORS);
    const pem = [rsa, ec].map((k) => k.publicKey.export({ type: "spki", format: "pem" })).join("");
    const fromPem = new K8sSatAttestor(
      await loadK8sSatConfig({ issuer: ISSUER, audiences: ["stint"], publicKeyFiles: [file("sa.pub", pem)] }),
    );
    expect((await fromPem.attest({ token: jwt("RS256", rsa.privateKey, legacy) }, ctx)).selectors).toEqual([
      "k8s:ns:prod",
      "k8s:sa:web",
    ]);
    expect((await fromPem.attest({ token: jwt("ES256", ec.privateKey, legacy) }, ctx)).selectors).toEqual([
      "k8s:ns:prod",
      "k8s:sa:web",
    ]);
  });

  it.each([
    [
      "a JWKS file that is not JSON",
      () => ({ jwksFile: file("bad.json", "{keys:") }),
      /^k8s_sat attestor: JWKS file .*bad\.json is not JSON$/,
    ],
    [
      "a JWKS without keys",
      () => ({ jwksFile: file("nokeys.json", "{}") }),
      'k8s_sat attestor: JWKS must be an object {"keys": [...]}',
    ],
    [
      "a JWKS with a private key",
      () => ({
        jwksFile: file("priv.json", JSON.stringify({ keys: [ec.privateKey.export({ format: "jwk" })] })),
      }),
      "k8s_sat attestor: JWKS key 1: jwk must be a public key (it carries private or secret parts)",
    ],
    [
      "a JWKS key for PS256",
      () => ({
        jwksFile: file(
          "ps.json",
          JSON.stringify({ keys: [{ ...exportJwk(rsa.publicKey), kid: "k", alg: "PS256" }] }),
        ),
      }),
      'k8s_sat attestor: JWKS key 1 (kid "k") has alg "PS256"; accepted: ES256, ES384, EdDSA, RS256',
    ],
    [
      "a JWKS with one kid twice",
      () => ({
        jwksFile: file(
          "dup.json",
          JSON.stringify({ keys: [jwks.keys[0], { ...jwks.keys[1], kid: "ec-1" }] }),
        ),
      }),
      'k8s_sat attestor: JWKS key 2 (kid "ec-1"): kid "ec-1" appears twice',
    ],
    [
      "a PEM file holding a private key",
      () => ({
        publicKeyFiles: [file("sa.key", ec.privateKey.export({ type: "pkcs8", format: "pem" }) as string)],
      }),
      /^k8s_sat attestor: .*sa\.key holds a private key; give the public key only \(openssl pkey -pubout\)$/,
    ],
    [
      "an RSA key too small",
      () => ({
        publicKeyFiles: [
          file(
            "small.pub",
            generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({
              type: "spki",
              format: "pem",
            }) as string,
          ),
        ],
      }),
      /^k8s_sat attestor: .*small\.pub key 1 cannot verify any accepted algorithm/,
    ],
    [
      "no keys at all",
      () => ({}),
      "k8s_sat attestor: no verification keys: give public key files or a JWKS file",
    ],
    [
      "no audiences",
      () => ({ audiences: [], jwksFile: file("ok.json", JSON.stringify(jwks)) }),
      "k8s_sat attestor: audiences must list at least one non-empty audience",
    ],
  ])("refuses %s with one ERR_CONFIG line", async (_why, opts, message) => {
    await expect(loadK8sSatConfig({ issuer: ISSUER, audiences: ["stint"], ...opts() })).rejects.toEqual(
      stintError("ERR_CONFIG", message),
    );
  });

  it("names a missing file", async () => {
    await expect(
      loadK8sSatConfig({ issuer: ISSUER, audiences: ["stint"], jwksFile: join(dir, "missing.json") }),
    ).rejects.toEqual(
      stintError(
        "ERR_FILE",
        /^cannot read a k8s_sat attestor key file: .*missing\.json \(or its directory\) does not exist$/,
      ),
    );
  });

  it("refuses a bad issuer, skew or key in a programmatic config", () => {
    expect(() => new K8sSatAttestor({ ...base, jwks: undefined, keys: [ec.privateKey] })).toThrow(
      stintError("ERR_CONFIG", "k8s_sat attestor: public key 1 is not a public key"),
    );
    const mismatched = { keys: [{ ...exportJwk(rsa.publicKey), kid: "r", alg: "ES256" }] };
    expect(() => new K8sSatAttestor({ ...base, jwks: mismatched })).toThrow(
      stintError("ERR_CONFIG", 'k8s_sat attestor: JWKS key 1 (kid "r"): its key does not fit its alg ES256'),
    );
    expect(() => new K8sSatAttestor({ ...base, issuer: "" })).toThrow(
      stintError("ERR_CONFIG", "k8s_sat attestor: issuer must be set"),
    );
    expect(() => new K8sSatAttestor({ ...base, clockSkewMs: -1 })).toThrow(
      stintError("ERR_CONFIG", "k8s_sat attestor: clock skew must be between 0 and 10 min"),
    );
  });
});
