import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import {
  advanceJwtKeys,
  ensureJwtKeys,
  type JwtKeyRecord,
  jwtBundleKeys,
  openActiveJwtKey,
  pruneJwtKeys,
  readJwtKeys,
} from "../../ca/jwt-keys";
import { JwtSvidService, parseAudience, signJwtSvid } from "../../ca/jwt-svid";
import { SqliteStore } from "../../ca/store/sqlite";
import { createLogger } from "../../common/logger";
import { jwtBundleFrom, verifyJwtSvid } from "../../verify/jwt-svid";
import { tempDir } from "../helpers/openssl";

/**
 * JWT-SVIDs end to end inside one process: the CA's key ring in a real store
 * with real key files, tokens signed as the agent API signs them, and
 * verifyJwtSvid against the bundle's JSON, for every refusal the issue lists.
 */

const dir = tempDir("stint-jwt-svid-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const T0 = new Date("2026-12-04T12:00:00Z");
const MAX_TTL = 5 * 60 * 1000;
const ID = "spiffe://example.org/web";
const at = (ms: number) => new Date(T0.getTime() + ms);
const bundleText = (ring: JwtKeyRecord[], now: Date) =>
  JSON.stringify({ keys: jwtBundleKeys(ring, now, MAX_TTL), spiffe_sequence: 1 });

let n = 0;
async function freshRing() {
  const dataDir = join(dir, `ca${n++}`);
  mkdirSync(dataDir);
  const store = await SqliteStore.open(join(dataDir, "stint.db"), { create: true });
  await store.setMeta("bundle_sequence", "1");
  const ctx = (now: Date) => ({ store, dataDir, passphrase: "jwt test passphrase", now });
  return { store, dataDir, ctx };
}

/** A token signed by hand, for headers and claims the CA never makes. */
function forge(
  header: Record<string, unknown>,
  claims: Record<string, unknown>,
  key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
): string {
  const b = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const input = `${b(header)}.${b(claims)}`;
  return `${input}.${sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" }).toString("base64url")}`;
}

const refusal = (check: string, message: RegExp) =>
  expect.objectContaining({ code: "ERR_JOSE", check, message: expect.stringMatching(message) });

describe("verifyJwtSvid", () => {
  let ring: JwtKeyRecord[];
  let token: string;
  let bundle: string;
  let active: { kid: string; key: KeyObject };

  beforeAll(async () => {
    const { ctx, dataDir } = await freshRing();
    ring = await ensureJwtKeys(ctx(T0));
    const opened = await openActiveJwtKey(ring, { dataDir, passphrase: "jwt test passphrase" });
    active = { kid: opened.kid, key: opened.key.privateKey! };
    token = signJwtSvid(active.key, active.kid, MAX_TTL, { spiffeId: ID, audience: ["a"], now: T0 }).token;
    bundle = bundleText(ring, T0);
  });

  const check =
    (t: string, audience = "a", now = at(60_000), trustDomain?: string) =>
    () =>
      verifyJwtSvid(t, { audience, bundle, now, ...(trustDomain ? { trustDomain } : {}) });

  it("accepts a token for its audience and names its SPIFFE ID", () => {
    const ok = verifyJwtSvid(token, { audience: "a", bundle, now: at(60_000), trustDomain: "example.org" });
    expect(ok.spiffeId).toBe(ID);
    expect(ok.claims).toMatchObject({
      sub: ID,
      aud: ["a"],
      iat: T0.getTime() / 1000,
      exp: T0.getTime() / 1000 + 300,
    });
    // A parsed bundle works as well as its text.
    expect(
      verifyJwtSvid(token, { audience: "a", bundle: jwtBundleFrom(bundle), now: at(1000) }).spiffeId,
    ).toBe(ID);
  });

  it("refuses another audience, an expired token and another trust domain", () => {
    expect(check(token, "b")).toThrow(refusal("audience", /not for audience "b"/));
    expect(check(token, "a", at(MAX_TTL))).toThrow(refusal("expired", /expired at 2026-12-04T12:05:00.000Z/));
    expect(check(token, "a", at(1000), "other.org")).toThrow(
      refusal("trust_domain", /not in trust domain other.org/),
    );
  });

  it("refuses a tampered signature or claims", () => {
    const [h, c, s] = token.split(".") as [string, string, string];
    const flipped = Buffer.from(s, "base64url");
    flipped[10] ^= 1;
    expect(check(`${h}.${c}.${flipped.toString("base64url")}`)).toThrow(
      refusal("signature", /does not verify/),
    );
    const claims = JSON.parse(Buffer.from(c, "base64url").toString());
    const other = Buffer.from(JSON.stringify({ ...claims, sub: "spiffe://example.org/admin" })).toString(
      "base64url",
    );
    expect(check(`${h}.${other}.${s}`)).toThrow(refusal("signature", /does not verify/));
  });

  it("refuses alg none, HS256 and an unknown kid before any key is used", () => {
    const claims = { sub: ID, aud: ["a"], exp: T0.getTime() / 1000 + 300 };
    const b = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    expect(check(`${b({ alg: "none", kid: active.kid })}.${b(claims)}.`)).toThrow(
      refusal("malformed", /three base64url parts/),
    );
    expect(check(`${b({ alg: "none", kid: active.kid })}.${b(claims)}.AA`)).toThrow(
      refusal("algorithm", /"none" is not accepted/),
    );
    expect(check(`${b({ alg: "HS256", kid: active.kid })}.${b(claims)}.AA`)).toThrow(
      refusal("algorithm", /"HS256" is not accepted/),
    );
    expect(check(forge({ alg: "ES256", kid: "nope" }, claims))).toThrow(
      refusal("kid", /"nope" is not in the trust bundle/),
    );
    // Signed by a key that is not the bundle's, under the bundle's kid.
    expect(check(forge({ alg: "ES256", kid: active.kid }, claims))).toThrow(
      refusal("signature", /does not verify/),
    );
    expect(check("not a jwt")).toThrow(refusal("malformed", /three base64url parts/));
  });

  it("refuses tokens that are not valid yet, or that name no SPIFFE ID", () => {
    const exp = T0.getTime() / 1000 + 300;
    const nbfLater = signJwtSvid(active.key, active.kid, MAX_TTL, {
      spiffeId: ID,
      audience: ["a"],
      now: at(120_000),
    });
    expect(check(nbfLater.token, "a", at(0))).not.toThrow(); // no nbf: iat alone does not make it invalid
    const b = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const handMade = (claims: Record<string, unknown>) => {
      const input = `${b({ alg: "ES256", kid: active.kid })}.${b(claims)}`;
      return `${input}.${sign("sha256", Buffer.from(input), { key: active.key, dsaEncoding: "ieee-p1363" }).toString("base64url")}`;
    };
    expect(check(handMade({ sub: ID, aud: "a", exp, nbf: exp - 10 }))).toThrow(
      refusal("not_yet_valid", /not valid yet/),
    );
    expect(check(handMade({ sub: "https://example.org/web", aud: "a", exp }))).toThrow(
      refusal("subject", /not a SPIFFE ID/),
    );
    expect(check(handMade({ sub: ID, aud: [], exp }))).toThrow(refusal("malformed", /no aud claim/));
    expect(check(handMade({ sub: ID, aud: "a" }))).toThrow(refusal("malformed", /no exp claim/));
  });

  it("never signs without an audience", () => {
    expect(() => parseAudience([])).toThrow(/audience must be a list of 1 to 16 strings/);
    expect(() => parseAudience(["a", ""])).toThrow(/non-empty string/);
    expect(parseAudience(["a", "a", "b"])).toEqual(["a", "b"]);
  });
});

describe("the JWT-SVID key ring", () => {
  it("publishes the next key before it signs, and drops a retired key once its last token has expired", async () => {
    const { ctx, store, dataDir } = await freshRing();
    const log = createLogger({ level: "error", component: "test" });
    const first = await ensureJwtKeys(ctx(T0));
    expect(first.map((k) => k.state)).toEqual(["active", "prepared"]);
    expect(await ensureJwtKeys(ctx(T0))).toEqual(first); // idempotent
    expect(await store.getMeta("bundle_sequence")).toBe("2");
    const [a, p] = first as [JwtKeyRecord, JwtKeyRecord];
    expect(jwtBundleKeys(first, T0, MAX_TTL).map((k) => k.kid)).toEqual([a.kid, p.kid]);

    const service = await JwtSvidService.open({
      store,
      dataDir,
      passphrase: "jwt test passphrase",
      maxTtlMs: MAX_TTL,
      log,
    });
    const before = await service.sign({ spiffeId: ID, audience: ["a"], now: T0 });
    expect(before.kid).toBe(a.kid);

    // Rotation: the prepared key (in every bundle since T0) signs; the old one is retired, still published.
    const rotated = at(60_000);
    const second = await advanceJwtKeys(ctx(rotated));
    expect(second.map((k) => [k.kid, k.state])).toEqual([
      [a.kid, "retired"],
      [p.kid, "active"],
      [second[2]!.kid, "prepared"],
    ]);
    expect(await store.getMeta("bundle_sequence")).toBe("3");
    await service.refresh(rotated);
    const after = await service.sign({ spiffeId: ID, audience: ["a"], now: rotated });
    expect(after.kid).toBe(p.kid);
    const published = JSON.stringify({ keys: await service.bundleKeys(rotated) });
    expect(verifyJwtSvid(before.token, { audience: "a", bundle: published, now: rotated }).spiffeId).toBe(ID);
    expect(verifyJwtSvid(after.token, { audience: "a", bundle: published, now: rotated }).spiffeId).toBe(ID);

    // retiredAt + maxTtl: no token of the old key can be live; it leaves the bundle and the sequence moves.
    const past = at(60_000 + MAX_TTL);
    const dropped = await service.bundleKeys(past);
    expect(dropped.map((k) => k.kid)).toEqual([p.kid, second[2]!.kid]);
    expect(await store.getMeta("bundle_sequence")).toBe("4");
    expect((await readJwtKeys(store)).map((k) => k.kid)).not.toContain(a.kid);
    expect(() =>
      verifyJwtSvid(before.token, { audience: "a", bundle: JSON.stringify({ keys: dropped }), now: past }),
    ).toThrow(refusal("kid", /is not in the trust bundle/));
    expect(await pruneJwtKeys(ctx(past), MAX_TTL)).toHaveLength(2);
    expect(await store.getMeta("bundle_sequence")).toBe("4");
    await store.close();
  });
});
