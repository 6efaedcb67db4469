import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  generatePrimeSync,
  type JsonWebKey,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { AcmeClient, type AcmeProblem, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import * as der from "../../formats/der";
import { b64u, exportJwk, type Jwk, signJws } from "../../formats/jose";
import { pemDecodeAll } from "../../formats/pem";
import { fingerprint } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * Bounded cost before trust, and malformed CSRs as the client's fault,
 * against a real `stint ca serve`: newAccount signed by (or claiming) keys
 * outside the bounds gets 400 badPublicKey, hostile CSRs at finalize and
 * renew-cert get 400 badCSR, and /health answers after each. rsa-4096 works
 * end to end, from `stint ca issue` and from `stint agent`.
 */

const TD = "bounds.example";
const SPIFFE_ID = `spiffe://${TD}/web`;
const ACME = "urn:ietf:params:acme:error:";
const dir = tempDir("stint-bounds-e2e-");
const dataDir = join(dir, "ca");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let server: ServerProcess;
let rootPem: string;

beforeAll(async () => {
  server = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--policy-min-ttl",
    "1s",
  ]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);
afterAll(() => server?.stop());

// ---------- HTTP ----------

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One request on its own connection: generating an RSA-4096 key blocks this
 * process for seconds, and a pooled keep-alive socket the server closed
 * meanwhile would fail the next request with "socket hang up".
 */
function send(method: string, url: string, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { "content-type": "application/jose+json" };
    const req = request(url, { method, ca: rootPem, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function expectHealthy(): Promise<void> {
  expect((await send("GET", `${server.url}/health`)).status).toBe(200);
}

const newAccountUrl = () => `${server.url}/acme/new-account`;

async function freshNonce(): Promise<string> {
  return (await send("HEAD", `${server.url}/acme/new-nonce`)).headers["replay-nonce"] as string;
}

/** A newAccount JWS carrying `jwk`, signed by `key` if given, else with junk of a plausible length. */
async function newAccountJws(jwk: Jwk, key?: KeyObject): Promise<string> {
  const protectedB64 = b64u(
    JSON.stringify({ alg: "RS256", jwk, nonce: await freshNonce(), url: newAccountUrl() }),
  );
  const payloadB64 = b64u(JSON.stringify({ termsOfServiceAgreed: true }));
  const input = `${protectedB64}.${payloadB64}`;
  const signature = key ? signJws("RS256", key, input) : b64u(randomBytes(256));
  return JSON.stringify({ protected: protectedB64, payload: payloadB64, signature });
}

// ---------- keys outside the bounds ----------

const bytesOf = (n: bigint): Buffer => {
  const hex = n.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
};

function modInverse(a: bigint, m: bigint): bigint | null {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  return r0 === 1n ? ((s0 % m) + m) % m : null;
}

/**
 * A working RSA-2048 private key whose public exponent has `eBits` bits: what
 * an attacker signs with so that every verification costs the CA an
 * exponentiation by a number that long. OpenSSL signs with it (CRT, cheap).
 */
function rsaWithExponent(eBits: number): KeyObject {
  for (;;) {
    const p = generatePrimeSync(1024, { bigint: true });
    const q = generatePrimeSync(1024, { bigint: true });
    const n = p * q;
    if (n.toString(2).length !== 2048) continue;
    const e = BigInt(`0x${randomBytes(eBits / 8).toString("hex")}`) | (1n << BigInt(eBits - 1)) | 1n;
    const d = modInverse(e, (p - 1n) * (q - 1n));
    const qi = modInverse(q, p);
    if (d === null || qi === null) continue;
    const jwk = { kty: "RSA", n, e, d, p, q, dp: d % (p - 1n), dq: d % (q - 1n), qi };
    const members = Object.fromEntries(
      Object.entries(jwk).map(([k, v]) => [k, typeof v === "bigint" ? b64u(bytesOf(v)) : v]),
    );
    return createPrivateKey({ key: members as JsonWebKey, format: "jwk" });
  }
}

/** A forged JWK that claims an RSA modulus of `bits` bits; never verified, so it needs no private key. */
function claimedRsa(bits: number): Jwk {
  const n = randomBytes(bits / 8);
  n[0] |= 0x80;
  return { kty: "RSA", n: b64u(n), e: "AQAB" };
}

const hugeExponent = rsaWithExponent(2000);

describe("newAccount with a key outside the bounds is badPublicKey", () => {
  it("signed by an RSA key with a 2000-bit public exponent, and its replay", async () => {
    const body = await newAccountJws(exportJwk(hugeExponent), hugeExponent);
    for (const attempt of [1, 2]) {
      const r = await send("POST", newAccountUrl(), body);
      expect({ attempt, status: r.status, problem: JSON.parse(r.body) }).toMatchObject({
        attempt,
        status: 400,
        problem: {
          type: `${ACME}badPublicKey`,
          detail: expect.stringMatching(
            /^jwk is an RSA-2048 key with a 2000-bit public exponent, which is not accepted/,
          ),
        },
      });
      await expectHealthy();
    }
  });

  it.each([
    ["signed by an RSA-1024 key", () => generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey, 1024],
    ["claiming an RSA-8192 key", () => null, 8192],
    ["claiming an RSA-16384 key", () => null, 16384],
  ])("%s", async (_name, makeKey, bits) => {
    const key = makeKey();
    const body = await newAccountJws(key ? exportJwk(key) : claimedRsa(bits), key ?? undefined);
    const r = await send("POST", newAccountUrl(), body);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({
      type: `${ACME}badPublicKey`,
      detail: expect.stringContaining(`jwk is an RSA-${bits} key, which is not accepted`),
    });
    await expectHealthy();
  });

  it("accepts an RSA-4096 account key, the upper bound", async () => {
    const key = generateKeyPairSync("rsa", { modulusLength: 4096 }).privateKey;
    const r = await send("POST", newAccountUrl(), await newAccountJws(exportJwk(key), key));
    expect(r.status).toBe(201);
  });
});

// ---------- hostile CSRs at finalize and renew-cert ----------

function admin(args: string[]): string {
  const r = stint([...args, "--data-dir", dataDir, "--server", server.url]);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

const joinToken = (): string =>
  JSON.parse(admin(["token", "create", "--spiffe-id", SPIFFE_ID, "--json"])).token as string;

async function account(): Promise<AcmeClient> {
  const c = await AcmeClient.connect({
    directoryUrl: `${server.url}/acme/directory`,
    ca: rootPem,
    accountKey: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
  });
  await c.newAccount();
  return c;
}

/** A new order for SPIFFE_ID, attested with a fresh join token, finalized with `csrDer`. */
async function enroll(csrDer: Buffer): Promise<string> {
  const c = await account();
  const token = joinToken();
  const { pem } = await c.obtainCertificate({
    identifiers: [{ type: "spiffe", value: SPIFFE_ID }],
    csrDer,
    authorize: (_authz, challenge) => c.attest(challenge.url, "join_token", joinTokenEvidence(token)),
  });
  return pem;
}

const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const SAN = der.sequence(der.tlv(der.contextTag(6, false), Buffer.from(SPIFFE_ID)));
const extensionRequest = (extensions: Buffer) =>
  der.sequence(der.oid("1.2.840.113549.1.9.14"), der.set(extensions));
const sanExtension = der.sequence(der.oid("2.5.29.17"), der.octetString(SAN));

/** A request for SPIFFE_ID built by hand, so each part can be made hostile; signed by `key`. */
function csr(opts: { key?: KeyObject; attributes?: Buffer; sigAlg?: Buffer; hash?: string } = {}): Buffer {
  const key = opts.key ?? p256.privateKey;
  const spki = (opts.key ? createPublicKey(key) : p256.publicKey).export({ type: "spki", format: "der" });
  const attributes = opts.attributes ?? der.explicit(0, extensionRequest(der.sequence(sanExtension)));
  const info = der.sequence(der.smallInteger(0), der.sequence(), spki, attributes);
  const sigAlg = opts.sigAlg ?? der.sequence(der.oid("1.2.840.10045.4.3.2"));
  return der.sequence(info, sigAlg, der.bitString(sign("sha256", info, key)));
}

const SHA256_RSA = der.sequence(der.oid("1.2.840.113549.1.1.11"), der.nullValue());

const hostile: [string, () => Buffer, string][] = [
  [
    "an extensionRequest with an empty attribute set",
    () => csr({ attributes: der.explicit(0, der.sequence(der.oid("1.2.840.113549.1.9.14"), der.set())) }),
    "CSR has an attribute with an empty set of values",
  ],
  [
    "an empty extensionRequest",
    () => csr({ attributes: der.explicit(0, extensionRequest(der.sequence())) }),
    "CSR has an empty extensionRequest",
  ],
  [
    "an empty signature algorithm identifier",
    () => csr({ sigAlg: der.sequence() }),
    "CSR signature algorithm is not an OID with optional parameters",
  ],
  [
    "a validly signed RSA key with a 2000-bit public exponent",
    () => csr({ key: hugeExponent, sigAlg: SHA256_RSA }),
    "CSR carries an unsupported key (RSA-2048 key with a 2000-bit public exponent)",
  ],
];

describe("hostile CSRs are badCSR", () => {
  it("the hand-built request is issued when nothing in it is hostile", async () => {
    const pem = await enroll(csr());
    expect(new X509Certificate(pemDecodeAll(pem, "CERTIFICATE", "chain")[0]).subjectAltName).toBe(
      `URI:${SPIFFE_ID}`,
    );
  });

  it.each(hostile)("at finalize: %s", async (_name, make, detail) => {
    const err = (await enroll(make()).catch((e) => e)) as AcmeProblem;
    expect(err).toMatchObject({ type: `${ACME}badCSR`, detail: expect.stringContaining(detail) });
    await expectHealthy();
  });

  it.each(hostile)("at renew-cert: %s", async (_name, make, detail) => {
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const current = await enroll(buildCsr({ key, spiffeId: SPIFFE_ID }));
    const chain = pemDecodeAll(current, "CERTIFICATE", "chain");
    const c = await account();
    const err = (await c.renewWithCertificate(chain, key, make()).catch((e) => e)) as AcmeProblem;
    expect(err).toMatchObject({ type: `${ACME}badCSR`, detail: expect.stringContaining(detail) });
    await expectHealthy();
  });
});

// ---------- rsa-4096 as a key type ----------

describe("rsa-4096", () => {
  it("stint ca issue --key-type rsa-4096 writes a 4096-bit key that OpenSSL verifies under the root", () => {
    const out = join(dir, "issued-4096");
    const r = stint([
      "ca",
      "issue",
      "--data-dir",
      dataDir,
      "--trust-domain",
      TD,
      "--spiffe-id",
      `spiffe://${TD}/rsa`,
      "--key-type",
      "rsa-4096",
      "--out",
      out,
    ]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(openssl(["pkey", "-in", join(out, "key.pem"), "-noout", "-text"])).toContain(
      "Private-Key: (4096 bit",
    );
    const cert = join(out, "cert.pem");
    expect(openssl(["x509", "-in", cert, "-noout", "-text"])).toContain("Public-Key: (4096 bit)");
    expect(openssl(["verify", "-CAfile", join(dataDir, "root.pem"), "-untrusted", cert, cert]).trim()).toBe(
      `${cert}: OK`,
    );
  });

  it("stint agent --key-type rsa-4096 enrolls with a 4096-bit key", () => {
    const state = join(dir, "agent-4096");
    const r = stint([
      "agent",
      "--once",
      "--spiffe-id",
      SPIFFE_ID,
      "--state-dir",
      state,
      "--out-dir",
      join(state, "out"),
      "--ca-url",
      server.url,
      "--ca-fingerprint",
      fingerprint(dataDir),
      "--join-token",
      joinToken(),
      "--key-type",
      "rsa-4096",
    ]);
    expect({ code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
    const leaf = new X509Certificate(readFileSync(join(state, "out", "cert.pem")));
    expect(leaf.publicKey.asymmetricKeyDetails).toMatchObject({
      modulusLength: 4096,
      publicExponent: 65537n,
    });
    expect(leaf.subjectAltName).toBe(`URI:${SPIFFE_ID}`);
  });
});
