import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Agent, createServer, type Server } from "node:https";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { X509PopAttestor } from "../../acme/attest/x509pop";
import { type AccountKey, type KeySource, type VerifiedRequest, verifyJwsRequest } from "../../acme/jws";
import { problemFor } from "../../acme/problem";
import {
  AcmeClient,
  AcmeProblem,
  type Challenge,
  joinTokenEvidence,
  k8sSatEvidence,
  parseRetryAfter,
  pollDelayMs,
  x509popEvidence,
} from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { parseCsr } from "../../ca/csr";
import { StintError } from "../../common/errors";
import { certIdOf, formatCertId } from "../../formats/ari";
import {
  exportJwk,
  fromB64u,
  importJwk,
  isJwsAlgorithm,
  type JwsAlgorithm,
  jsonFromB64u,
  jwkThumbprint,
  keyFitsAlgorithm,
  verifyJwsSignature,
} from "../../formats/jose";
import { toPem } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * The client against a small fake ACME server over real TLS. The fake runs
 * every POST through the server's own JWS pipeline (acme/jws.ts) and answers
 * attest-01 with the real x509pop attestor, so what the client signs is
 * checked by the code that will check it in production.
 */

const dir = tempDir("stint-acme-client-");
writeFileSync(
  join(dir, "openssl.cnf"),
  `[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://example.org/node/1
authorityKeyIdentifier = keyid
`,
);

interface Made {
  keyPath: string;
  certPath: string;
  key: KeyObject;
  der: Buffer;
}

const GENPKEY: Record<JwsAlgorithm, string[]> = {
  ES256: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  ES384: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  EdDSA: ["-algorithm", "ED25519"],
  RS256: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
};
const ALGS = Object.keys(GENPKEY) as JwsAlgorithm[];

function make(
  name: string,
  alg: JwsAlgorithm,
  section: "ca" | "leaf",
  issuer?: Made,
  extra: string[] = [],
): Made {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.pem`);
  const cnf = join(dir, "openssl.cnf");
  openssl(["genpkey", ...GENPKEY[alg], "-out", keyPath]);
  if (!issuer) {
    const args = ["-config", cnf, "-extensions", section, ...extra];
    openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      keyPath,
      "-subj",
      `/CN=${name}`,
      "-days",
      "1",
      ...args,
      "-out",
      certPath,
    ]);
  } else {
    const csrPath = join(dir, `${name}.csr`);
    openssl(["req", "-new", "-key", keyPath, "-subj", `/CN=${name}`, "-config", cnf, "-out", csrPath]);
    const ca = ["-CA", issuer.certPath, "-CAkey", issuer.keyPath, "-set_serial", "4660"];
    openssl([
      "x509",
      "-req",
      "-in",
      csrPath,
      ...ca,
      "-days",
      "1",
      "-extfile",
      cnf,
      "-extensions",
      section,
      "-out",
      certPath,
    ]);
  }
  return {
    keyPath,
    certPath,
    key: createPrivateKey(readFileSync(keyPath)),
    der: new X509Certificate(readFileSync(certPath)).raw,
  };
}

const bootstrapCa = make("bootstrap", "ES256", "ca");
const node = make("node", "ES256", "leaf", bootstrapCa);
const attestor = new X509PopAttestor({ bundle: [new X509Certificate(bootstrapCa.der)] });
/** A self-signed leaf per algorithm, to sign renewals with x5c and revocations with the certificate key. */
const leaves = Object.fromEntries(ALGS.map((alg) => [alg, make(`leaf-${alg}`, alg, "leaf")])) as Record<
  JwsAlgorithm,
  Made
>;
const accountKeys: Record<JwsAlgorithm, KeyObject> = {
  ES256: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
  ES384: generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey,
  EdDSA: generateKeyPairSync("ed25519").privateKey,
  RS256: generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey,
};

// ---------- the fake server ----------

const SPIFFE = "spiffe://example.org/node/1";
const TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

interface Seen {
  path: string;
  kind: KeySource;
  header: Readonly<Record<string, unknown>>;
  payload: unknown;
  signatureBytes: number;
}

interface FakeState {
  nonceSeq: number;
  issued: Set<string>;
  heads: number;
  /** Valid nonces to refuse with badNonce, as the hostile test mode does. */
  rejectNext: number;
  consumed: string[];
  badNonceReplies: string[];
  seen: Seen[];
  accounts: Map<string, AccountKey & { thumbprint: string }>;
  /** "sync": attest-01 is judged at once; "processing": later, and the client polls. */
  validation: "sync" | "processing";
  authz: "pending" | "valid" | "invalid";
  challenge: Challenge["status"];
  challengeError?: Record<string, unknown>;
  authzPolls: number;
  order: "pending" | "ready" | "valid";
}

let state: FakeState;
let server: Server;
let origin = "";
let tlsCa = "";

const fresh = (): FakeState => ({
  nonceSeq: 0,
  issued: new Set(),
  heads: 0,
  rejectNext: 0,
  consumed: [],
  badNonceReplies: [],
  seen: [],
  accounts: new Map(),
  validation: "sync",
  authz: "pending",
  challenge: "pending",
  authzPolls: 0,
  order: "pending",
});

const deps = {
  nonces: {
    async consume(nonce: string) {
      if (!state.issued.delete(nonce)) throw new StintError("ERR_BAD_NONCE", "nonce unknown or used");
      state.consumed.push(nonce);
      if (state.rejectNext > 0) {
        state.rejectNext--;
        throw new StintError("ERR_BAD_NONCE", "nonce refused on purpose");
      }
    },
  },
  lookupAccount: async (kid: string) => state.accounts.get(kid) ?? null,
  maxBodyBytes: 64 * 1024,
};

function reply(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(text);
}

const orderJson = () => ({
  status: state.order,
  identifiers: [{ type: "spiffe", value: SPIFFE }],
  authorizations: [`${origin}/authz/1`],
  finalize: `${origin}/order/1/finalize`,
  ...(state.order === "valid" ? { certificate: `${origin}/cert/1` } : {}),
});
const challengeJson = (): Challenge => ({
  type: "attest-01",
  url: `${origin}/chall/1`,
  status: state.challenge,
  token: TOKEN,
  ...(state.challengeError ? { error: state.challengeError as never } : {}),
});
const PEM_CHAIN = { "content-type": "application/pem-certificate-chain" };

async function route(path: string, vr: VerifiedRequest, res: ServerResponse): Promise<void> {
  const payload = vr.payload as Record<string, unknown> | null;
  const account = vr.source.kind === "kid" ? vr.source.account : undefined;
  switch (path) {
    case "/new-acct": {
      if (vr.source.kind !== "jwk") throw new Error("unreachable");
      const { thumbprint, key } = vr.source;
      const existing = [...state.accounts.values()].find((a) => a.thumbprint === thumbprint);
      if (!existing && payload?.onlyReturnExisting)
        throw new StintError("ERR_ACCOUNT_DOES_NOT_EXIST", "no account exists for this key");
      const url = existing?.accountUrl ?? `${origin}/acct/${state.accounts.size + 1}`;
      if (!existing) state.accounts.set(url, { accountUrl: url, key, status: "valid", thumbprint });
      return reply(res, existing ? 200 : 201, { status: "valid" }, { location: url });
    }
    case "/acct/1": {
      const current = state.accounts.get(vr.url)!;
      if (payload?.status === "deactivated") current.status = "deactivated";
      return reply(res, 200, { status: current.status });
    }
    case "/key-change": {
      // What acme/accounts.ts checks of the inner JWS, against the real helpers.
      const inner = payload as Record<string, string>;
      const header = jsonFromB64u(inner.protected, "inner") as Record<string, unknown>;
      const newKey = importJwk(header.jwk);
      const ok =
        isJwsAlgorithm(header.alg) &&
        header.nonce === undefined &&
        header.kid === undefined &&
        header.url === vr.url &&
        keyFitsAlgorithm(newKey, header.alg) &&
        verifyJwsSignature(
          header.alg,
          newKey,
          `${inner.protected}.${inner.payload}`,
          fromB64u(inner.signature, "sig"),
        );
      const body = jsonFromB64u(inner.payload, "inner payload") as Record<string, unknown>;
      if (!ok || body.account !== account!.accountUrl) throw new StintError("ERR_MALFORMED", "bad inner JWS");
      if (jwkThumbprint(importJwk(body.oldKey)) !== state.accounts.get(account!.accountUrl)!.thumbprint)
        throw new StintError("ERR_UNAUTHORIZED", "oldKey is not the account's key");
      state.accounts.set(account!.accountUrl, {
        ...account!,
        key: newKey,
        thumbprint: jwkThumbprint(newKey),
      });
      return reply(res, 200, { status: "valid" });
    }
    case "/new-order":
      return reply(res, 201, orderJson(), { location: `${origin}/order/1` });
    case "/order/1":
      if (state.order === "pending" && state.authz === "valid") state.order = "ready";
      return reply(res, 200, orderJson());
    case "/authz/1":
      state.authzPolls++;
      if (state.challenge === "processing" && state.authzPolls > 2) {
        state.challenge = "valid";
        state.authz = "valid";
      }
      return reply(
        res,
        200,
        { status: state.authz, identifier: { type: "spiffe", value: SPIFFE }, challenges: [challengeJson()] },
        state.challenge === "processing" ? { "retry-after": "2" } : {},
      );
    case "/chall/1": {
      const thumbprint = state.accounts.get(account!.accountUrl)!.thumbprint;
      if (payload?.attestor !== "x509pop") throw new StintError("ERR_MALFORMED", "unknown attestor");
      try {
        await attestor.attest(payload.evidence, {
          spiffeId: SPIFFE,
          token: TOKEN,
          accountThumbprint: thumbprint,
          account: account!.accountUrl,
          now: new Date(),
        });
        state.challenge = state.validation === "sync" ? "valid" : "processing";
        if (state.validation === "sync") state.authz = "valid";
      } catch (err) {
        state.challenge = "invalid";
        state.authz = "invalid";
        state.challengeError = { ...problemFor(err).problem };
      }
      return reply(res, 200, challengeJson(), { "retry-after": "0" });
    }
    case "/order/1/finalize": {
      const csr = parseCsr(fromB64u(payload?.csr, "csr"));
      if (csr.uris.join() !== SPIFFE || csr.requestsCa)
        throw new StintError("ERR_BAD_CSR", "CSR names differ");
      state.order = "valid";
      return reply(res, 200, orderJson());
    }
    case "/cert/1":
      return reply(
        res,
        200,
        toPem("CERTIFICATE", node.der) + toPem("CERTIFICATE", bootstrapCa.der),
        PEM_CHAIN,
      );
    case "/revoke":
      return reply(res, 200, "");
    case "/renew-cert":
      parseCsr(fromB64u(payload?.csr, "csr"));
      return reply(res, 201, toPem("CERTIFICATE", node.der), PEM_CHAIN);
    case "/limited":
      throw Object.assign(new StintError("ERR_RATE_LIMITED", "too many orders"), { retryAfterSeconds: 7 });
    default:
      throw new StintError("ERR_NOT_FOUND", `no resource ${path}`);
  }
}

const ALLOW: Record<string, KeySource[]> = {
  "/new-acct": ["jwk"],
  "/revoke": ["jwk", "kid"],
  "/renew-cert": ["x5c"],
};

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const path = req.url ?? "/";
  const nonce = `nonce-${++state.nonceSeq}`;
  state.issued.add(nonce);
  res.setHeader("replay-nonce", nonce);
  try {
    if (req.method === "GET" && path === "/dir") {
      const urls = {
        newAccount: "new-acct",
        newOrder: "new-order",
        revokeCert: "revoke",
        keyChange: "key-change",
      };
      return reply(res, 200, {
        newNonce: `${origin}/new-nonce`,
        ...Object.fromEntries(Object.entries(urls).map(([k, v]) => [k, `${origin}/${v}`])),
        renewalInfo: `${origin}/renewal-info`,
        renewCert: `${origin}/renew-cert`,
        meta: {},
      });
    }
    if (req.method === "HEAD" && path === "/new-nonce") {
      state.heads++;
      res.writeHead(200);
      return void res.end();
    }
    if (req.method === "GET" && path === `/renewal-info/${formatCertId(certIdOf(node.der))}`) {
      const suggestedWindow = { start: "2030-01-01T00:00:00Z", end: "2030-01-01T01:00:00Z" };
      return reply(res, 200, { suggestedWindow }, { "retry-after": "360" });
    }
    if (req.method !== "POST") throw new StintError("ERR_NOT_FOUND", `no ${req.method} ${path}`);
    const body = Buffer.concat(chunks);
    const vr = await verifyJwsRequest(
      { contentType: req.headers["content-type"], body, url: origin + path },
      deps,
      {
        allow: ALLOW[path] ?? ["kid"],
      },
    );
    const signatureBytes = fromB64u(JSON.parse(body.toString()).signature, "signature").length;
    state.seen.push({
      path,
      kind: vr.source.kind,
      header: vr.protectedHeader,
      payload: vr.payload,
      signatureBytes,
    });
    await route(path, vr, res);
  } catch (err) {
    const { problem, internal } = problemFor(err);
    if (internal) problem.detail = String(err); // a bug in the fake: show it
    if (problem.type.endsWith(":badNonce")) state.badNonceReplies.push(nonce);
    const retry = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
    reply(res, problem.status, problem, {
      "content-type": "application/problem+json",
      ...(retry ? { "retry-after": String(retry) } : {}),
    });
  }
}

beforeAll(async () => {
  const keyPath = join(dir, "tls.key");
  const certPath = join(dir, "tls.pem");
  openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    keyPath,
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-days",
    "1",
    "-out",
    certPath,
  ]);
  tlsCa = readFileSync(certPath, "utf8");
  server = createServer({ key: readFileSync(keyPath), cert: tlsCa }, (req, res) => {
    handle(req, res).catch((err) => res.destroy(err));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const clients: AcmeClient[] = [];
beforeEach(() => {
  state = fresh();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

async function connect(accountKey: KeyObject = accountKeys.ES256, extra: object = {}): Promise<AcmeClient> {
  const client = await AcmeClient.connect({ directoryUrl: `${origin}/dir`, ca: tlsCa, accountKey, ...extra });
  clients.push(client);
  return client;
}

// ---------- tests ----------

describe("AcmeClient: JWS the server's pipeline accepts", () => {
  const SIG_BYTES: Record<JwsAlgorithm, number> = { ES256: 64, ES384: 96, EdDSA: 64, RS256: 256 };

  it.each(ALGS)("signs with jwk, kid and x5c using an %s key", async (alg) => {
    const client = await connect(accountKeys[alg]);
    const account = await client.newAccount({ contact: ["mailto:ops@example.org"] });
    expect(account).toEqual({ url: `${origin}/acct/1`, status: "valid" });
    expect(await client.account()).toEqual({ url: `${origin}/acct/1`, status: "valid" });
    const leaf = leaves[alg];
    await client.revoke(leaf.der, { reason: 4, signWith: leaf.key });
    const csr = buildCsr({ key: leaf.key, spiffeId: SPIFFE });
    const pem = await client.renewWithCertificate([leaf.der, bootstrapCa.der], leaf.key, csr);
    expect(pem).toBe(toPem("CERTIFICATE", node.der));

    const [create, read, revoke, renew] = state.seen;
    expect(Object.keys(create.header)).toEqual(["alg", "nonce", "url", "jwk"]);
    expect(create.header).toMatchObject({ alg, url: `${origin}/new-acct`, jwk: exportJwk(accountKeys[alg]) });
    expect(create.payload).toEqual({ termsOfServiceAgreed: true, contact: ["mailto:ops@example.org"] });
    expect(Object.keys(read.header)).toEqual(["alg", "nonce", "url", "kid"]);
    expect(read).toMatchObject({ kind: "kid", payload: null, header: { kid: `${origin}/acct/1` } });
    expect(revoke).toMatchObject({
      kind: "jwk",
      header: { alg, jwk: exportJwk(leaf.key) },
      payload: { certificate: leaf.der.toString("base64url"), reason: 4 },
    });
    expect(Object.keys(renew.header)).toEqual(["alg", "nonce", "url", "x5c"]);
    expect(renew).toMatchObject({
      kind: "x5c",
      header: { alg, x5c: [leaf.der.toString("base64"), bootstrapCa.der.toString("base64")] },
      payload: { csr: csr.toString("base64url") },
    });
    // JOSE signatures: ECDSA as raw r||s, not DER.
    for (const s of state.seen)
      if (s.kind !== "x5c" && s.path !== "/revoke") expect(s.signatureBytes).toBe(SIG_BYTES[alg]);
  });

  it.each([
    ["ES256", "EdDSA"],
    ["RS256", "ES384"],
  ] as const)(
    "changes the account key from %s to %s (RFC 8555 7.3.5), then signs with the new one",
    async (from, to) => {
      const client = await connect(accountKeys[from]);
      await client.newAccount();
      const before = client.thumbprint;
      await client.keyChange(accountKeys[to]);
      expect(client.thumbprint).toBe(jwkThumbprint(accountKeys[to]));
      expect(client.thumbprint).not.toBe(before);
      expect(await client.account()).toMatchObject({ status: "valid" });
      expect(state.seen.at(-1)!.header.alg).toBe(to);
      const inner = state.seen.find((s) => s.path === "/key-change")!.payload as Record<string, string>;
      expect(Object.keys(jsonFromB64u(inner.protected, "inner") as object)).toEqual(["alg", "jwk", "url"]);
    },
  );

  it("finds an existing account with onlyReturnExisting, and reports a missing one as a problem", async () => {
    const client = await connect(accountKeys.ES384);
    await expect(client.newAccount({ onlyReturnExisting: true })).rejects.toMatchObject({
      name: "AcmeProblem",
      type: "urn:ietf:params:acme:error:accountDoesNotExist",
      status: 400,
      message: "urn:ietf:params:acme:error:accountDoesNotExist: no account exists for this key",
    });
    await client.newAccount();
    expect(await client.newAccount({ onlyReturnExisting: true })).toEqual({
      url: `${origin}/acct/1`,
      status: "valid",
    });
    expect(await client.deactivateAccount()).toEqual({ url: `${origin}/acct/1`, status: "deactivated" });
    expect(state.seen.at(-1)!.payload).toEqual({ status: "deactivated" });
    await expect(client.account()).rejects.toMatchObject({ type: "urn:ietf:params:acme:error:unauthorized" });
  });
});

describe("AcmeClient: nonces", () => {
  it("uses each response's Replay-Nonce for the next request, without HEAD newNonce", async () => {
    const client = await connect();
    await client.newAccount();
    await client.account();
    await client.account();
    expect(state.heads).toBe(0);
    // nonce-1 came with the directory; each request used the nonce of the response before it.
    expect(state.consumed).toEqual(["nonce-1", "nonce-2", "nonce-3"]);
  });

  it("asks newNonce when the pool is empty, as parallel requests drain it", async () => {
    const client = await connect();
    await client.newAccount();
    await Promise.all([client.account(), client.account(), client.account()]);
    expect(state.heads).toBe(2);
  });

  it("retries a badNonce refusal with the nonce that refusal carried", async () => {
    const client = await connect();
    await client.newAccount();
    state.rejectNext = 2;
    state.consumed = [];
    expect(await client.account()).toMatchObject({ status: "valid" });
    expect(state.consumed).toHaveLength(3);
    expect(state.consumed.slice(1)).toEqual(state.badNonceReplies);
    expect(state.heads).toBe(0);
  });

  it("gives up after badNonceRetries", async () => {
    const client = await connect(accountKeys.ES256, { badNonceRetries: 1 });
    await client.newAccount();
    state.rejectNext = 2;
    await expect(client.account()).rejects.toMatchObject({
      type: "urn:ietf:params:acme:error:badNonce",
      message: "urn:ietf:params:acme:error:badNonce: nonce refused on purpose",
    });
    expect(state.badNonceReplies).toHaveLength(2);
  });
});

describe("AcmeClient: issuance", () => {
  const authorizeWith =
    (client: AcmeClient, key = node.key) =>
    async (_authz: unknown, challenge: Challenge) =>
      client.attest(
        challenge.url,
        "x509pop",
        x509popEvidence({
          chainDer: [node.der],
          key,
          token: challenge.token,
          accountThumbprint: client.thumbprint,
        }),
      );

  it("obtains a certificate with attest-01 x509pop evidence the real attestor accepts", async () => {
    const client = await connect();
    await client.newAccount();
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const { pem, order } = await client.obtainCertificate({
      identifiers: [{ type: "spiffe", value: SPIFFE }],
      csrDer: buildCsr({ key, spiffeId: SPIFFE }),
      authorize: authorizeWith(client),
    });
    expect(pem).toBe(toPem("CERTIFICATE", node.der) + toPem("CERTIFICATE", bootstrapCa.der));
    expect(order).toMatchObject({
      url: `${origin}/order/1`,
      status: "valid",
      certificate: `${origin}/cert/1`,
    });
    // Validated at once, so the authorization was read once (to find the challenge) and never polled,
    // and the order is finalized without being read first (issue 13: 5 requests per certificate, not 6).
    expect(state.authzPolls).toBe(1);
    expect(state.seen.map((s) => s.path)).toEqual([
      "/new-acct",
      "/new-order",
      "/authz/1",
      "/chall/1",
      "/order/1/finalize",
      "/cert/1",
    ]);
  });

  it("polls a processing challenge's authorization, waiting as Retry-After says up to the cap", async () => {
    const waits: number[] = [];
    const client = await connect(accountKeys.ES256, { sleep: async (ms: number) => void waits.push(ms) });
    await client.newAccount();
    state.validation = "processing";
    await client.obtainCertificate({
      identifiers: [{ type: "spiffe", value: SPIFFE }],
      csrDer: buildCsr({ key: node.key, spiffeId: SPIFFE }),
      authorize: authorizeWith(client),
      maxIntervalMs: 1500,
    });
    expect(state.authzPolls).toBe(3);
    expect(waits).toEqual([1500]);
  });

  it("turns a refused attestation into the challenge's problem", async () => {
    const client = await connect();
    await client.newAccount();
    const wrongKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    await expect(
      client.obtainCertificate({
        identifiers: [{ type: "spiffe", value: SPIFFE }],
        csrDer: buildCsr({ key: node.key, spiffeId: SPIFFE }),
        authorize: authorizeWith(client, wrongKey),
      }),
    ).rejects.toMatchObject({
      name: "AcmeProblem",
      type: "urn:ietf:params:acme:error:unauthorized",
      status: 403,
      detail: expect.stringMatching(/^proof-of-possession signature does not verify/),
    });
  });

  it("times out waiting, saying for what", async () => {
    let now = 0;
    const client = await connect(accountKeys.ES256, {
      now: () => now,
      sleep: async (ms: number) => {
        now += ms;
      },
    });
    await client.newAccount();
    await expect(client.waitForAuthorization(`${origin}/authz/1`, { timeoutMs: 2500 })).rejects.toThrow(
      `timed out after 2500 ms waiting for authorization ${origin}/authz/1 to become valid`,
    );
    expect(state.authzPolls).toBe(4);
  });
});

describe("AcmeClient: evidence, errors, renewal information", () => {
  it("makes x509pop evidence acme/attest/x509pop.ts verifies for this token and account only", async () => {
    const ctx = {
      spiffeId: SPIFFE,
      token: TOKEN,
      accountThumbprint: jwkThumbprint(accountKeys.ES256),
      account: "https://ca.test/acme/acct/1",
      now: new Date(),
    };
    const evidence = x509popEvidence({ chainDer: [node.der, bootstrapCa.der], key: node.key, ...ctx });
    expect(evidence.chain).toEqual([node.der.toString("base64"), bootstrapCa.der.toString("base64")]);
    expect((await attestor.attest(evidence, ctx)).selectors).toContain(`x509pop:san:uri:${SPIFFE}`);
    await expect(attestor.attest(evidence, { ...ctx, token: "other" })).rejects.toMatchObject({
      code: "ERR_ATTESTATION",
    });
    expect(joinTokenEvidence("s3cret")).toEqual({ token: "s3cret" });
    expect(k8sSatEvidence("a.b.c")).toEqual({ token: "a.b.c" });
  });

  it("exposes the key authorization for http-01", async () => {
    const client = await connect();
    expect(client.keyAuthorization("tok")).toBe(`tok.${jwkThumbprint(accountKeys.ES256)}`);
  });

  it("reads renewal information with an unauthenticated GET", async () => {
    const client = await connect();
    expect(await client.renewalInfo(node.der)).toEqual({
      start: new Date("2030-01-01T00:00:00Z"),
      end: new Date("2030-01-01T01:00:00Z"),
      retryAfterSeconds: 360,
    });
    expect(state.seen).toEqual([]);
  });

  it("makes problem documents AcmeProblems with Retry-After", async () => {
    const client = await connect();
    await client.newAccount();
    const err = await client.respondChallenge(`${origin}/limited`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AcmeProblem);
    expect(err).toMatchObject({
      type: "urn:ietf:params:acme:error:rateLimited",
      detail: "too many orders",
      status: 429,
      retryAfter: 7,
      subproblems: [],
      message: "urn:ietf:params:acme:error:rateLimited: too many orders",
    });
    expect((err as AcmeProblem).is("rateLimited")).toBe(true);
  });

  it("names the URL in network errors, and refuses a server it does not trust", async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const url = `https://127.0.0.1:${port}/dir`;
    await expect(
      AcmeClient.connect({ directoryUrl: url, accountKey: accountKeys.ES256 }),
    ).rejects.toMatchObject({
      code: "ERR_CONNECTION",
      message: `GET ${url}: connect ECONNREFUSED 127.0.0.1:${port}`,
    });
    await expect(
      AcmeClient.connect({ directoryUrl: `${origin}/dir`, accountKey: accountKeys.ES256 }),
    ).rejects.toMatchObject({
      code: "ERR_CONNECTION",
      message: `GET ${origin}/dir: self-signed certificate`,
    });
  });

  it("uses a caller's agent, with the trust given per request", async () => {
    const agent = new Agent({ keepAlive: true });
    try {
      const client = await connect(accountKeys.ES256, { agent });
      await client.newAccount();
      expect(await client.account()).toMatchObject({ status: "valid" });
      client.close(); // leaves the caller's agent alone
      expect(Object.keys(agent.freeSockets)).toHaveLength(1);
    } finally {
      agent.destroy();
    }
  });

  it("refuses account keys no JWS algorithm fits, and calls that need an account before newAccount", async () => {
    const p521 = generateKeyPairSync("ec", { namedCurve: "P-521" }).privateKey;
    await expect(connect(p521)).rejects.toMatchObject({ code: "ERR_USAGE" });
    const client = await connect();
    await expect(client.account()).rejects.toMatchObject({
      code: "ERR_USAGE",
      message: "no ACME account yet: call newAccount first",
    });
  });
});

describe("polling arithmetic", () => {
  it("parses Retry-After as seconds or an HTTP date", () => {
    const now = Date.parse("2030-01-01T00:00:00Z");
    expect(parseRetryAfter("12", now)).toBe(12);
    expect(parseRetryAfter("Tue, 01 Jan 2030 00:00:30 GMT", now)).toBe(30);
    expect(parseRetryAfter("Mon, 31 Dec 2029 00:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it("waits Retry-After, 1 s without it, never above the cap", () => {
    expect(pollDelayMs(undefined)).toBe(1000);
    expect(pollDelayMs(3)).toBe(3000);
    expect(pollDelayMs(0)).toBe(0);
    expect(pollDelayMs(60, 5000)).toBe(5000);
  });
});
