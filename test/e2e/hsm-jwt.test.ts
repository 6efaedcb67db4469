import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { readJwtKeys } from "../../ca/jwt-keys";
import { openStore } from "../../ca/store/open";
import { verifyJwtSvid } from "../../verify/jwt-svid";
import { type RunResult, type ServerProcess, startServer, stint, tokenCaEnv } from "../helpers/cli";
import { httpsCall } from "../helpers/https";
import { tempDir } from "../helpers/openssl";
import { type SoftHsmToken, softHsmToken } from "../helpers/softhsm";
import { keyExposures, NOT_EXTRACTABLE } from "../helpers/token-keys";

/**
 * Issue 15, JWT-SVIDs with keys.backend pkcs11 on SoftHSM: a CA made and
 * served without any passphrase keeps its JWT-SVID signing keys in the token
 * (the ring records their pkcs11: URIs, the token refuses CKA_VALUE), and a
 * token fetched through the agent API verifies against /bundle.json, before
 * and after `ca rotate` moves the ring on.
 */

const TD = "example.org";
const HOST = `spiffe://${TD}/node/host1`;
const WEB = `spiffe://${TD}/web`;
let dir: string;
let dataDir: string;
let token: SoftHsmToken;
let env: Record<string, string>;
let server: ServerProcess | undefined;
let agent: { cert: string; key: string };
let rootPem: string;
let entryId: string;

const ok = (r: RunResult): string => {
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  return r.stdout;
};

async function https(
  method: string,
  path: string,
  client: { cert: string; key: string } | null,
  body?: unknown,
): Promise<{ status: number; text: string }> {
  const { status, text } = await httpsCall(new URL(path, server!.url), {
    method,
    ca: rootPem,
    client,
    json: body,
  });
  return { status, text };
}

async function jwtSvid(): Promise<string> {
  const res = await https("POST", "/agent/v1/jwt-svids", agent, { entryId, audience: ["db"] });
  expect(res.status).toBe(200);
  return (JSON.parse(res.text) as { token: string }).token;
}

const kidOf = (jwt: string): string =>
  JSON.parse(Buffer.from(jwt.split(".")[0]!, "base64url").toString()).kid;

/** Starts the CA in env's data directory, with an agent credential and an entry parented to it. */
async function serveWithAgent(caEnv: Record<string, string>): Promise<void> {
  const caDir = caEnv.STINT_DATA_DIR!;
  rootPem = readFileSync(join(caDir, "root.pem"), "utf8");
  server = await startServer([], caEnv);
  const out = `${caDir}-host`;
  ok(stint(["ca", "issue", "--spiffe-id", HOST, "--out", out, "--ttl", "1h"], caEnv));
  agent = {
    cert: readFileSync(join(out, "cert.pem"), "utf8"),
    key: readFileSync(join(out, "key.pem"), "utf8"),
  };
  const args = ["--spiffe-id", WEB, "--parent", HOST, "--selector", "unix:uid:1001"];
  const created = ok(stint(["entry", "create", ...args, "--json", "--server", server.url], caEnv));
  entryId = (JSON.parse(created) as { id: string }).id;
}

/** Polls until the server signs with another key than `jwt`'s (it takes a rotation up at feed.pollInterval). */
async function nextKeyJwt(jwt: string): Promise<string> {
  let after = jwt;
  for (let i = 0; i < 100 && kidOf(after) === kidOf(jwt); i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = await jwtSvid();
  }
  return after;
}

async function ring(caDir = dataDir) {
  const store = await openStore(caDir);
  try {
    return await readJwtKeys(store);
  } finally {
    await store.close();
  }
}

function files(root: string): string[] {
  return readdirSync(root).flatMap((name) => {
    const p = join(root, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

beforeAll(() => {
  dir = tempDir("stint-hsm-jwt-");
  dataDir = join(dir, "ca");
  token = softHsmToken({ label: "stint-jwt" });
  // No STINT_CA_PASSPHRASE and no --insecure-no-passphrase: with every key in the token, none is needed.
  env = {
    ...tokenCaEnv(token),
    STINT_DATA_DIR: dataDir,
    STINT_TRUST_DOMAIN: TD,
  };
});

afterAll(async () => {
  await server?.stop();
  token.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("JWT-SVID keys in a PKCS#11 token (SoftHSM)", () => {
  it("ca init and ca serve run without a passphrase; the agent API's JWT-SVID verifies against /bundle.json", async () => {
    expect(ok(stint(["ca", "init"], env))).toMatch(/keys {10}in the PKCS#11 token stint-jwt/);
    await serveWithAgent(env);

    const jwt = await jwtSvid();
    const bundle = await https("GET", "/bundle.json", null);
    expect(verifyJwtSvid(jwt, { audience: "db", bundle: bundle.text, trustDomain: TD }).spiffeId).toBe(WEB);
    const keys = await ring();
    expect(keys.map((k) => k.state)).toEqual(["active", "prepared"]);
    expect(kidOf(jwt)).toBe(keys[0]!.kid);
    for (const k of keys) expect(k.keyPath).toMatch(/^pkcs11:token=stint-jwt;object=stint-jwt-/);
  });

  it("ca rotate (no passphrase) activates the prepared token key; the old key's tokens still verify", async () => {
    const before = await jwtSvid();
    const prepared = (await ring()).find((k) => k.state === "prepared")!;
    ok(stint(["ca", "rotate", "--ttl-days", "30"], env));
    const after = await nextKeyJwt(before);
    expect(kidOf(after)).toBe(prepared.kid);
    const bundle = (await https("GET", "/bundle.json", null)).text;
    for (const jwt of [before, after]) {
      expect(verifyJwtSvid(jwt, { audience: "db", bundle, trustDomain: TD }).spiffeId).toBe(WEB);
    }
    await server!.stop();
    server = undefined;

    // Three keys now (retired, active, prepared), every one in the token and refusing CKA_VALUE.
    const keys = await ring();
    expect(keys.map((k) => k.state)).toEqual(["retired", "active", "prepared"]);
    for (const k of keys) expect(k.keyPath).toMatch(/^pkcs11:token=stint-jwt;object=stint-jwt-/);
    for (const exposure of keyExposures(
      token,
      keys.map((k) => k.keyPath),
    )) {
      expect(exposure).toMatchObject(NOT_EXTRACTABLE);
    }
    // The only private key anywhere in the data directory (store included) is the admin client's.
    const withKeys = files(dataDir).filter((p) => readFileSync(p, "latin1").includes("PRIVATE KEY"));
    expect(withKeys.map((p) => p.slice(dataDir.length))).toEqual(["/admin/key.pem"]);
  });

  it("a CA switched from file keys keeps signing with its key file, then moves to a token key at the next rotate", async () => {
    const switched = join(dir, "switched");
    const fileEnv = {
      ...env,
      STINT_DATA_DIR: switched,
      STINT_KEYS_BACKEND: "file",
      STINT_CA_PASSPHRASE: "switched ca passphrase",
    };
    ok(stint(["ca", "init"], fileEnv));
    ok(stint(["ca", "rotate", "--ttl-days", "30"], fileEnv)); // makes the ring: two key files
    // Switched: the prepared key file becomes active, the new prepared key is made in the token.
    const tokenEnv = { ...fileEnv, STINT_KEYS_BACKEND: "pkcs11" };
    ok(stint(["ca", "rotate", "--ttl-days", "30"], tokenEnv));
    const mixed = await ring(switched);
    expect(mixed.map((k) => [k.state, k.keyPath.startsWith("pkcs11:")])).toEqual([
      ["retired", false],
      ["active", false],
      ["prepared", true],
    ]);
    ok(stint(["ca", "admin-cert"], tokenEnv)); // the admin API takes one from the active intermediate only
    await serveWithAgent(tokenEnv);
    const fromFile = await jwtSvid();
    expect(kidOf(fromFile)).toBe(mixed[1]!.kid);
    ok(stint(["ca", "rotate", "--ttl-days", "30"], tokenEnv));
    const fromToken = await nextKeyJwt(fromFile);
    expect(kidOf(fromToken)).toBe(mixed[2]!.kid);
    const bundle = (await https("GET", "/bundle.json", null)).text;
    for (const jwt of [fromFile, fromToken]) {
      expect(verifyJwtSvid(jwt, { audience: "db", bundle, trustDomain: TD }).spiffeId).toBe(WEB);
    }
    await server!.stop();
    server = undefined;
  });
});
