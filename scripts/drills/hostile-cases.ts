import { createPrivateKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { b64u, exportJwk, flattenedJws, type Jwk, signJws } from "../../formats/jose";
import type { HostileCsr } from "./hostile-csr";
import { mangled } from "./hostile-csr";

/**
 * The hostile requests, one generator per kind of attack. Each call makes a
 * fresh request (new nonce, new random bytes), so 10,000 requests are 10,000
 * different inputs. Every one of them must be refused with a 4xx problem
 * document; none may be answered 2xx or 5xx.
 */

export interface HostileRequest {
  kind: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: Buffer | string;
  /** Present the admin client certificate. */
  admin?: boolean;
  /** Bytes for a raw TLS connection instead of an HTTP client request. */
  raw?: Buffer;
  /** For the one protocol step that refuses with 200 (a failed challenge): whether this body is that refusal. */
  refusedIn200?: (body: string) => boolean;
  /** Why a bare 4xx without a problem document is what this request gets (node answers it before any handler). */
  bareRefusal?: string;
}

/** What the generators build requests from: the CA's URLs, two accounts and objects of the first. */
export interface Kit {
  origin: string;
  trustDomain: string;
  rng: () => number;
  nonce(): Promise<string>;
  /** Account A owns the objects below; B is another account. */
  a: { key: KeyObject; kid: string };
  b: { key: KeyObject; kid: string };
  /** A's valid order, its authorization, challenge and certificate. */
  order: { url: string; authz: string; challenge: string; certificate: string };
  /** A's orders that are ready, for finalize with hostile CSRs. */
  readyOrders: string[];
  /** Pending attest-01 challenges of A's, for malformed answers (which leave them pending). */
  pendingChallenges: string[];
  /** A new order's pending challenge, for an answer that will make it invalid. */
  freshChallenge(): Promise<string>;
  /** A certificate (chain, key) to renew with hostile CSRs. */
  held: { chain: Buffer[]; key: KeyObject };
  csrs: { good: Buffer; hostile: HostileCsr[] };
  /** A POST-as-GET body that was already sent once, with its URL (its nonce is spent). */
  spent(): Promise<{ url: string; body: string }>;
}

type Generator = (k: Kit) => Promise<HostileRequest> | HostileRequest;

const JOSE = { "content-type": "application/jose+json" };
const pick = <T>(k: Kit, items: readonly T[]): T => items[Math.floor(k.rng() * items.length)];
const acme = (k: Kit, path: string) => `${k.origin}/acme/${path}`;

/** Every ACME POST endpoint, with ids that exist (A's) where the route has one. */
const postUrls = (k: Kit) => [
  acme(k, "new-account"),
  acme(k, "new-order"),
  k.order.url,
  `${k.order.url}/finalize`,
  k.order.authz,
  k.order.challenge,
  k.order.certificate,
  acme(k, "revoke-cert"),
  acme(k, "renew-cert"),
  acme(k, "key-change"),
  k.a.kid,
  `${k.a.kid}/orders`,
];

const post = (kind: string, url: string, body: string | Buffer, headers: Record<string, string> = JOSE) => ({
  kind,
  method: "POST",
  url,
  headers,
  body,
});

/** A JWS from its parts, signed (when `signer` is given) over exactly what is sent. */
function jws(header: Record<string, unknown>, payload: string, signer?: KeyObject): string {
  const p = b64u(JSON.stringify(header));
  const signature = signer ? signJws("ES256", signer, `${p}.${payload}`) : b64u(randomBytes(64));
  return JSON.stringify({ protected: p, payload, signature });
}

/** A properly signed request from account `who` (kid), with what `tweak` changes in the header. */
async function signed(k: Kit, who: Kit["a"], url: string, payload: unknown | null, tweak: Jwk = {}) {
  return JSON.stringify(
    flattenedJws(who.key, { nonce: await k.nonce(), url, kid: who.kid, ...tweak }, payload),
  );
}

const garbage = (k: Kit, n: number) =>
  Buffer.from(Array.from({ length: n }, () => 32 + Math.floor(k.rng() * 95))).toString("latin1");

const deep = (depth: number, open = "[", close = "]") => open.repeat(depth) + close.repeat(depth);

export const GENERATORS: Record<string, Generator> = {
  "bad JSON": (k) => post("bad JSON", pick(k, postUrls(k)), garbage(k, 1 + Math.floor(k.rng() * 300))),
  "truncated JWS": async (k) => {
    const body = await signed(k, k.a, k.order.url, null);
    return post("truncated JWS", k.order.url, body.slice(0, Math.floor(k.rng() * body.length)));
  },
  "JSON that is not an object": (k) =>
    post(
      "JSON that is not an object",
      pick(k, postUrls(k)),
      pick(k, ["[]", '"jws"', "1", "null", "true", "{}"]),
    ),
  "bad base64url": async (k) => {
    const good = JSON.parse(await signed(k, k.a, k.order.url, null));
    const member = pick(k, ["protected", "payload", "signature"]);
    const bad = pick(k, ["+/=", " ", "é", "%", "=="]);
    good[member] = `${good[member].slice(0, 10)}${bad}${good[member].slice(10)}`;
    return post("bad base64url", k.order.url, JSON.stringify(good));
  },
  "protected header not JSON": (k) =>
    post(
      "protected header not JSON",
      k.order.url,
      JSON.stringify({ protected: b64u(garbage(k, 40)), payload: "", signature: b64u(randomBytes(64)) }),
    ),
  "alg none or a MAC": async (k) => {
    const alg = pick(k, ["none", "HS256", "RS1", "ES512", "", 5, null]);
    const header = { alg, nonce: await k.nonce(), url: k.order.url, kid: k.a.kid };
    const p = b64u(JSON.stringify(header));
    return post(
      "alg none or a MAC",
      k.order.url,
      JSON.stringify({ protected: p, payload: "", signature: "" }),
    );
  },
  "wrong url": async (k) => {
    const target = pick(k, postUrls(k));
    const signedFor = pick(k, [...postUrls(k), "https://evil.example/acme/new-order", `${target}?x=1`]);
    return post(
      "wrong url",
      target,
      await signed(k, k.a, signedFor === target ? `${target}/` : signedFor, null),
    );
  },
  "bad nonce": async (k) => {
    const nonce = pick(k, [
      undefined,
      "",
      "AAAA",
      b64u(randomBytes(16)),
      b64u(randomBytes(32)),
      "x".repeat(5000),
      7,
    ]);
    const header = {
      alg: "ES256",
      url: k.order.url,
      kid: k.a.kid,
      ...(nonce === undefined ? {} : { nonce }),
    };
    return post("bad nonce", k.order.url, jws(header, "", k.a.key));
  },
  "replayed nonce": async (k) => {
    const { url, body } = await k.spent();
    return post("replayed nonce", url, body);
  },
  "another account's kid": async (k) =>
    post(
      "another account's kid",
      k.order.url,
      await signed(k, { key: k.a.key, kid: k.b.kid }, k.order.url, null),
    ),
  "another account's objects": async (k) => {
    // Not the certificate URL: any account may download a certificate (the authorization drill reports it).
    const url = pick(k, [k.order.url, k.order.authz, k.order.challenge, `${k.a.kid}/orders`, k.a.kid]);
    return post("another account's objects", url, await signed(k, k.b, url, null));
  },
  "an unknown kid": async (k) => {
    const kid = pick(k, [
      `${k.origin}/acme/acct/${b64u(randomBytes(12))}`,
      "https://evil.example/acct/1",
      "",
      "../acct",
    ]);
    return post("an unknown kid", k.order.url, await signed(k, { key: k.a.key, kid }, k.order.url, null));
  },
  "jwk and kid together": async (k) =>
    post(
      "jwk and kid together",
      k.order.url,
      await signed(k, k.a, k.order.url, null, { jwk: exportJwk(k.a.key) }),
    ),
  "oversize body": (k) =>
    post(
      "oversize body",
      pick(k, postUrls(k)),
      `{"protected":"${"A".repeat(66_000 + Math.floor(k.rng() * 200_000))}"}`,
    ),
  "oversize headers": (k) => {
    const headers: Record<string, string> = { ...JOSE };
    const n = 20 + Math.floor(k.rng() * 60);
    for (let i = 0; i < n; i++) headers[`x-pad-${i}`] = "a".repeat(1000);
    return post("oversize headers", pick(k, postUrls(k)), "{}", headers);
  },
  "deeply nested JSON": (k) => {
    const depth = 5_000 + Math.floor(k.rng() * 25_000);
    const where = pick(k, ["body", "protected", "payload"]);
    const body =
      where === "body"
        ? deep(depth)
        : JSON.stringify({
            protected: where === "protected" ? b64u(deep(depth / 2)) : b64u('{"alg":"ES256"}'),
            payload: where === "payload" ? b64u(deep(depth / 2, '{"a":', "}").replace(/}$/, "1}")) : "",
            signature: b64u(randomBytes(64)),
          });
    return post("deeply nested JSON", pick(k, postUrls(k)), body);
  },
  "wrong content type": async (k) =>
    post("wrong content type", k.order.url, await signed(k, k.a, k.order.url, null), {
      "content-type": pick(k, ["application/json", "text/plain", "application/jose", "multipart/form-data"]),
    }),
  "hostile CSR at finalize": async (k) => {
    const url = `${pick(k, k.readyOrders)}/finalize`;
    const csr = k.rng() < 0.5 ? pick(k, k.csrs.hostile).der : mangled(k.csrs.good, k.rng);
    const payload = pick(k, [
      { csr: b64u(csr) },
      { csr: b64u(csr) },
      { csr: csr.toString("base64") },
      { csr: 5 },
      {},
    ]);
    return post("hostile CSR at finalize", url, await signed(k, k.a, url, payload));
  },
  "hostile CSR at renew-cert": async (k) => {
    const url = acme(k, "renew-cert");
    const csr = k.rng() < 0.5 ? pick(k, k.csrs.hostile).der : mangled(k.csrs.good, k.rng);
    const header = { nonce: await k.nonce(), url, x5c: k.held.chain.map((c) => c.toString("base64")) };
    return post(
      "hostile CSR at renew-cert",
      url,
      JSON.stringify(flattenedJws(k.held.key, header, { csr: b64u(csr) })),
    );
  },
  "hostile x5c at renew-cert": async (k) => {
    const url = acme(k, "renew-cert");
    const leaf = k.held.chain[0].toString("base64");
    const [x5c, signer] = pick(k, [
      [[k.held.chain[1].toString("base64")], k.held.key], // the intermediate as the "leaf"
      [[leaf.replace(/A/g, "B")], k.held.key], // altered bytes
      [["not base64!"], k.held.key],
      [[], k.held.key],
      ["leaf", k.held.key],
      // The real certificate, signed by a key that is not its own (account B's).
      [[leaf], k.b.key],
      [[b64u(k.held.chain[0])], k.b.key],
      [Array.from({ length: 200 }, () => leaf), k.b.key],
    ] as [unknown, KeyObject][]);
    const header = { nonce: await k.nonce(), url, x5c };
    return post(
      "hostile x5c at renew-cert",
      url,
      JSON.stringify(flattenedJws(signer, header, { csr: b64u(k.csrs.good) })),
    );
  },
  "hostile payloads": async (k) => {
    const [url, payload] = pick(k, [
      [acme(k, "new-order"), { identifiers: [{ type: "ip", value: "127.0.0.1" }] }],
      [acme(k, "new-order"), { identifiers: [{ type: "spiffe", value: "spiffe://evil.example/x" }] }],
      [
        acme(k, "new-order"),
        {
          identifiers: Array.from({ length: 500 }, (_, i) => ({ type: "dns", value: `n${i}.evil.example` })),
        },
      ],
      [acme(k, "new-order"), { identifiers: "all" }],
      [
        acme(k, "new-order"),
        { identifiers: [{ type: "spiffe", value: `spiffe://${k.trustDomain}/../admin` }] },
      ],
      [
        acme(k, "new-order"),
        { identifiers: [{ type: "dns", value: "*.evil.example" }], notAfter: "2999-01-01T00:00:00Z" },
      ],
      [acme(k, "revoke-cert"), { certificate: b64u(randomBytes(300)) }],
      [acme(k, "revoke-cert"), { certificate: b64u(k.held.chain[0]), reason: 2 }],
      [acme(k, "revoke-cert"), { certificate: b64u(k.held.chain[1]) }],
      [pick(k, k.pendingChallenges), { attestor: "none", evidence: {} }],
      [pick(k, k.pendingChallenges), { attestor: "join_token", evidence: "token" }],
      [pick(k, k.pendingChallenges), { attestor: "join_token", evidence: { token: "x", extra: 1 } }],
      [pick(k, k.pendingChallenges), { attestor: "join_token" }],
      [pick(k, k.pendingChallenges), { type: "http-01" }],
      [k.a.kid, { status: "valid", contact: ["mailto:a@b", "tel:1"] }],
      [k.a.kid, { contact: Array.from({ length: 1000 }, () => "mailto:x@evil.example") }],
      [acme(k, "key-change"), { account: k.a.kid, oldKey: exportJwk(k.b.key) }],
    ] as [string, unknown][]);
    return post("hostile payloads", url, await signed(k, k.a, url, payload));
  },
  "wrong method or route": (k) => {
    const [method, path] = pick(k, [
      ["GET", "new-order"],
      ["PUT", "new-account"],
      ["DELETE", `order/${b64u(randomBytes(9))}`],
      ["POST", "directory"],
      ["POST", b64u(randomBytes(6))],
      ["POST", `renewal-info/${b64u(randomBytes(20))}`],
      ["GET", `renewal-info/${b64u(randomBytes(20))}.${b64u(randomBytes(17))}`],
      ["GET", "renewal-info/not.an.id"],
      ["PATCH", "acct/x"],
    ] as [string, string][]);
    // No body on GET and DELETE: node's client would send it unframed, a second (broken) request.
    const body = method === "GET" || method === "DELETE" ? undefined : "{}";
    return { kind: "wrong method or route", method, url: acme(k, path), headers: JOSE, body };
  },
  "admin: hostile bodies": (k) => {
    const path = pick(k, ["entries", "join-tokens"]);
    const body = pick(k, [
      garbage(k, 100),
      "[]",
      deep(20_000),
      JSON.stringify({ spiffeId: "spiffe://evil.example/x", selectors: ["join_token:x"] }),
      JSON.stringify({
        spiffeId: `spiffe://${k.trustDomain}/stint/admin`,
        selectors: ["x509pop:subject:cn:a"],
      }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/a/../b`, selectors: ["k8s:ns:x"] }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, selectors: "k8s:ns:x" }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, selectors: [] }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, selectors: ["nope"], ttl: "forever" }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, ttl: "-1s", certTtl: "1000000h" }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, dnsNames: ["127.0.0.1", "*.x"] }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, selectors: ["k8s:ns:x"], extra: 1 }),
      JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/${"a".repeat(3000)}`, selectors: ["k8s:ns:x"] }),
      `{"spiffeId":"${"x".repeat(70_000)}"}`,
    ]);
    return {
      kind: "admin: hostile bodies",
      method: "POST",
      url: `${k.origin}/admin/${path}`,
      headers: { "content-type": "application/json" },
      body,
      admin: true,
    };
  },
  "admin: hostile paths and queries": (k) => {
    const path = pick(k, [
      "certificates?limit=-1",
      "certificates?limit=abc",
      "certificates?limit=1e309",
      "certificates?limit=99999999",
      "certificates?after=zz",
      "certificates?unknown=1",
      `certificates/${b64u(randomBytes(8))}`,
      `certificates/${randomBytes(17).toString("hex")}`,
      "certificates/zz/revoke",
      "audit?after=-5",
      "audit?limit=0",
      `entries/${b64u(randomBytes(9))}`,
      "entries?spiffeId=not-a-spiffe-id",
    ]);
    const method = path.endsWith("/revoke") ? "POST" : pick(k, ["GET", "GET", "DELETE", "PUT"]);
    const body = method === "GET" || method === "DELETE" ? undefined : '{"reason":"nope"}';
    return {
      kind: "admin: hostile paths and queries",
      method,
      url: `${k.origin}/admin/${path}`,
      headers: { "content-type": "application/json" },
      body,
      admin: true,
    };
  },
  "admin: no client certificate": (k) => {
    const method = pick(k, ["GET", "POST", "DELETE"]);
    const path = pick(k, [
      "entries",
      "join-tokens",
      "certificates",
      "audit",
      `entries/${b64u(randomBytes(9))}`,
    ]);
    const body =
      method === "POST"
        ? JSON.stringify({ spiffeId: `spiffe://${k.trustDomain}/x`, selectors: ["k8s:ns:x"] })
        : undefined;
    return {
      kind: "admin: no client certificate",
      method,
      url: `${k.origin}/admin/${path}`,
      headers: { "content-type": "application/json" },
      body,
    };
  },
  "a wrong join token": async (k) => {
    // A fresh pending challenge each time: a failed attestation makes its challenge invalid.
    const url = await k.freshChallenge();
    const token = pick(k, [b64u(randomBytes(32)), "x".repeat(43), "", "A".repeat(10_000)]);
    return {
      ...post(
        "a wrong join token",
        url,
        await signed(k, k.a, url, { attestor: "join_token", evidence: { token } }),
      ),
      // ACME answers a failed validation with the challenge, status invalid (RFC 8555 7.5.1).
      refusedIn200: (body: string) => (JSON.parse(body) as { status?: string }).status === "invalid",
    };
  },
  "malformed request targets": (k) => {
    const target = pick(k, [
      "//%zz",
      "/acme/%",
      "/admin/entries/%zz",
      "/acme/../health",
      "/admin/../../etc/passwd",
      "/acme/%2e%2e/admin/entries",
      "/acme\\..\\health",
      "https://127.0.0.1/acme/directory",
      "/acme/\x01directory",
      `/acme/${"a".repeat(70_000)}`,
    ]);
    const raw = Buffer.from(
      `GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
      "latin1",
    );
    return { kind: "malformed request targets", method: "GET", url: k.origin, headers: {}, raw };
  },
  "broken framing": (k) => {
    const raw = pick(k, [
      "POST /acme/new-account HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
      "POST /acme/new-order HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /acme/new-account HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
      "POST /acme/new-account HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
      "GET /acme/directory HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
      "GET /acme/directory HTTP/9.9\r\nHost: localhost\r\n\r\n",
      `GET /acme/directory HTTP/1.1\r\nHost: localhost\r\nX-Evil: a\0b\r\n\r\n`,
      "GET /admin/entries HTTP/1.1\r\nHost: localhost\r\n\r\n{}",
      "\x16\x03\x01\x00\x05garbage\r\n\r\n",
    ]);
    return {
      kind: "broken framing",
      method: "RAW",
      url: k.origin,
      headers: {},
      raw: Buffer.from(raw, "latin1"),
    };
  },
  "HTTP/1.1 without Host": (k) => ({
    kind: "HTTP/1.1 without Host",
    method: "RAW",
    url: k.origin,
    headers: {},
    raw: Buffer.from(
      `${pick(k, ["GET /acme/directory", "POST /acme/new-order", "GET /admin/entries"])} HTTP/1.1\r\nConnection: close\r\n\r\n`,
    ),
    // node's requireHostHeader answers before the router; a problem document here needs acme/router.ts to check Host itself.
    bareRefusal: "node refuses an HTTP/1.1 request without Host with a bare 400 before any handler runs",
  }),
};

/** A P-256 key made as DER and imported (see newKey in issuance.ts). */
export function ecKey(): KeyObject {
  const { privateKey } = generateKeyPairSync("ec", {
    namedCurve: "P-256",
    privateKeyEncoding: { format: "der", type: "pkcs8" },
    publicKeyEncoding: { format: "der", type: "spki" },
  });
  return createPrivateKey({ key: privateKey, format: "der", type: "pkcs8" });
}
