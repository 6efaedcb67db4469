import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:https";
import { join } from "node:path";
import { decodeFeed, encodeFeed, type FeedSnapshot, parseSignedFeed, signFeed } from "../../formats/feed";
import { pemDecodeAll } from "../../formats/pem";
import { FeedClient } from "../../verify/feed";
import { createVerifier, type Verifier } from "../../verify/verifier";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";
import { type Made, Pki } from "../verify/pki";

/**
 * Issue 21: the revocation feed fails closed against an attacker who
 * controls the network path to a verifier (a small HTTPS server here, whose
 * TLS certificate is signed with the CA's first intermediate key, as a
 * leaked key allows) or holds a leaked intermediate key. Each attack ends
 * with the certificate the CA revoked still refused.
 */

const TD = "attack.example";
const dir = tempDir("stint-feed-attacks-");
const dataDir = join(dir, "ca");
const stateHome = join(dir, "state");
let ca: ServerProcess;
let rootPem: string;
/** The first intermediate: its certificate (PEM, DER), id and key file, as an attacker holding its key has them. */
let first: { pem: string; der: Buffer; id: string; keyPath: string };
let attacker: Attacker;
const clients: FeedClient[] = [];

interface Cert {
  name: string;
  chain: string;
  file: string;
  serial: string;
}

function run(args: string[], env: Record<string, string> = {}) {
  const r = stint(args, env);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

function issue(name: string, ttl = "1h"): Cert {
  const out = join(dir, name);
  const args = ["ca", "issue", "--data-dir", dataDir, "--spiffe-id", `spiffe://${TD}/${name}`];
  const r = JSON.parse(run([...args, "--policy-min-ttl", "1s", "--ttl", ttl, "--out", out, "--json"]));
  const chain = readFileSync(join(out, "cert.pem"), "utf8");
  return { name, chain, file: join(out, "cert.pem"), serial: r.serial };
}

const revoke = (c: Cert) =>
  run(["ca", "revoke", "--data-dir", dataDir, "--serial", c.serial, "--reason", "keyCompromise"]);

function fetchCa(path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time: a kept-alive one the server is closing would fail the poll.
    request(`${ca.url}${path}`, { ca: rootPem, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve(Buffer.concat(chunks)));
    })
      .on("error", reject)
      .end();
  });
}

const snapshotOf = (envelope: Buffer) => decodeFeed(parseSignedFeed(envelope).body) as FeedSnapshot;

/** The CA's current signed feed, once `until` holds for it. */
async function caFeed(what: string, until: (s: FeedSnapshot) => boolean): Promise<Buffer> {
  for (let i = 0; i < 600; i++) {
    const envelope = await fetchCa("/feed");
    if (until(snapshotOf(envelope))) return envelope;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for the CA's feed to ${what}`);
}

const sequenceOf = (c: Cert): number => Number(BigInt(`0x${c.serial}`) & 0xffffffffffffffffn);
const lists = (s: FeedSnapshot, c: Cert) => s.issuers.some((i) => i.revoked.includes(sequenceOf(c)));

/** A feed body signed with a key the test holds: the first intermediate's, as the CA or an attacker with its key would. */
function signWithFirst(doc: FeedSnapshot): Buffer {
  const key = createPrivateKey(readFileSync(first.keyPath));
  return signFeed(encodeFeed(doc), key, [first.der]);
}

/** An HTTPS server on the network path: it answers /feed as the test says, with a certificate the verifier's TLS accepts. */
class Attacker {
  answer: (path: string) => { status: number; body?: Buffer } = () => ({ status: 503 });
  readonly requests: string[] = [];
  private server!: Server;
  url = "";

  async start(tls: Made, chainPem: string): Promise<void> {
    this.server = createServer({ key: tls.key, cert: tls.pem + chainPem }, (req, res) => {
      this.requests.push(req.url ?? "");
      const a = this.answer(req.url ?? "");
      res.writeHead(a.status, { "content-type": "application/vnd.stint.feed" }).end(a.body);
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `https://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Serves `snapshot` for /feed and, for ?since=, 204 ("nothing newer") or the same bytes again. */
  replay(snapshot: Buffer, since: "204" | "replay"): void {
    this.answer = (path) =>
      path.includes("since=") && since === "204" ? { status: 204 } : { status: 200, body: snapshot };
  }

  stop(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

async function follow(url: string, stateFile?: string): Promise<FeedClient> {
  const client = await FeedClient.open({ url, rootsPem: rootPem, push: false, pollMs: 3_600_000, stateFile });
  clients.push(client);
  return client;
}

function verifierOn(feed: FeedClient): Verifier {
  // The old rule: fresh while fetched within maxFeedAge; the feed's own nextUpdate must win over it.
  return createVerifier({
    bundle: rootPem,
    usage: "client",
    allow: { trustDomain: TD },
    revocation: feed,
    maxFeedAge: 3_600_000,
  });
}

/** `stint verify CERT --feed SOURCE --json`, with the verifier's state under this test's XDG_STATE_HOME. */
function cliVerify(cert: Cert, feed: string, extra: string[] = []) {
  const r = stint(
    ["verify", cert.file, "--bundle", join(dataDir, "root.pem"), "--feed", feed, "--json", ...extra],
    { XDG_STATE_HOME: stateHome },
  );
  return { code: r.code, stderr: r.stderr, result: r.stdout ? JSON.parse(r.stdout) : null };
}

beforeAll(async () => {
  ca = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--policy-min-ttl",
    "1s",
  ]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  const pem = readFileSync(join(dataDir, "intermediate.pem"), "utf8");
  const der = pemDecodeAll(pem, "CERTIFICATE", "intermediate")[0];
  const id = new X509Certificate(der).subject.match(/Intermediate CA ([0-9a-f]{16})/)![1];
  first = { pem, der, id, keyPath: join(dataDir, "keys", `${id}.key.pem`) };
  const pki = new Pki(dir);
  const tls = pki.make("attacker-tls", {
    issuer: { certPath: join(dataDir, "intermediate.pem"), keyPath: first.keyPath } as Made,
    subject: `/O=${TD}`,
    ext: [
      "basicConstraints = critical,CA:FALSE",
      "keyUsage = critical,digitalSignature",
      "extendedKeyUsage = serverAuth",
      "subjectAltName = IP:127.0.0.1",
      "authorityKeyIdentifier = keyid",
    ],
  });
  attacker = new Attacker();
  await attacker.start(tls, pem);
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await attacker?.stop();
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("1. a feed past its nextUpdate", () => {
  let before: Buffer;
  let victim: Cert;
  let already: Cert;

  beforeAll(async () => {
    already = issue("n-already");
    victim = issue("n-victim");
    revoke(already);
    // Genuine, and listing `already`; then the CA revokes `victim`, which this snapshot does not list.
    before = await caFeed("list n-already", (s) => lists(s, already));
    revoke(victim);
    await caFeed("list n-victim", (s) => lists(s, victim));
  }, 60_000);

  it.each(["204", "replay"] as const)(
    "refuses everything once nextUpdate has passed, while the network answers %s",
    async (since) => {
      attacker.replay(before, since);
      const feed = await follow(attacker.url);
      const verifier = verifierOn(feed);
      const nextUpdate = snapshotOf(before).nextUpdate.getTime();
      await feed.update();
      expect(attacker.requests.at(-1)).toMatch(/since=/);
      // Within nextUpdate the held feed is what the CA signed: an attacker can withhold news that long, no longer.
      expect(verifier.verify(victim.chain).ok).toBe(true);
      // 15 s past nextUpdate and the verifier's 30 s clock skew.
      const late = new Date(nextUpdate + 45_000);
      expect(verifier.verify(victim.chain, late)).toMatchObject({
        ok: false,
        code: "revocation-unavailable",
        reason: expect.stringMatching(/expired at its nextUpdate/),
      });
      expect(verifier.verify(already.chain, late)).toMatchObject({ ok: false });
      expect(verifier.verify(already.chain)).toMatchObject({ ok: false, code: "revoked" });
    },
  );

  it("judges a feed file by its own nextUpdate, not its modification time", () => {
    const stale = snapshotOf(before);
    const file = join(dir, "expired-feed.bin");
    // A feed the CA signed 20 minutes ago (thisUpdate) and valid for 10: written just now, so its mtime is fresh.
    const now = Date.now();
    writeFileSync(
      file,
      signWithFirst({
        ...stale,
        sequence: stale.sequence - 1,
        thisUpdate: new Date(now - 1_200_000),
        nextUpdate: new Date(now - 600_000),
      }),
    );
    const r = cliVerify(victim, file);
    expect(r.code).toBe(1);
    expect(r.result).toMatchObject({ ok: false, code: "revocation-unavailable" });
    expect(r.result.reason).toMatch(/expired at its nextUpdate/);
  });
});

describe("2. rollback after a restart, and through files", () => {
  let older: Buffer;
  let newer: Buffer;
  let victim: Cert;

  beforeAll(async () => {
    victim = issue("r-victim");
    const other = issue("r-other");
    revoke(other);
    older = await caFeed("list r-other", (s) => lists(s, other));
    revoke(victim);
    newer = await caFeed("list r-victim", (s) => lists(s, victim));
  }, 60_000);

  it("a restarted FeedClient refuses a feed older than the one it adopted before", async () => {
    const stateFile = join(dir, "client-state.json");
    attacker.replay(newer, "204");
    const feed = await follow(attacker.url, stateFile);
    expect(verifierOn(feed).verify(victim.chain)).toMatchObject({ ok: false, code: "revoked" });
    feed.close();

    // The restart: a new client, the same state file, and the network hands it the older, validly signed feed.
    attacker.replay(older, "204");
    await expect(follow(attacker.url, stateFile)).rejects.toThrow(
      `the feed's sequence went backwards (${snapshotOf(older).sequence} after ${snapshotOf(newer).sequence}, the highest recorded in ${stateFile}); refusing it`,
    );
    attacker.replay(newer, "204");
    const again = await follow(attacker.url, stateFile);
    expect(verifierOn(again).verify(victim.chain)).toMatchObject({ ok: false, code: "revoked" });
  });

  it("stint verify refuses an older feed file than one it read before", () => {
    const newerFile = join(dir, "newer.bin");
    const olderFile = join(dir, "older.bin");
    writeFileSync(newerFile, newer);
    writeFileSync(olderFile, older);
    expect(cliVerify(victim, newerFile).result).toMatchObject({ ok: false, code: "revoked" });
    const r = cliVerify(victim, olderFile);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/went backwards/);
    // The default state file, under $XDG_STATE_HOME, remembered the newer sequence.
    const state = JSON.parse(readFileSync(join(stateHome, "stint", "feed-state.json"), "utf8"));
    expect(state.trustDomains[TD].sequence).toBe(snapshotOf(newer).sequence);
  });
});

describe("4. a revoked certificate at its expiry", () => {
  it("stays listed past notAfter, so it is refused within the verifier's clock skew", async () => {
    const short = issue("x-short", "3s");
    revoke(short);
    await caFeed("list x-short", (s) => lists(s, short));
    const notAfter = Date.parse(new X509Certificate(short.chain).validTo);
    // Past notAfter, then one more revocation makes the CA rebuild the feed.
    await new Promise((r) => setTimeout(r, Math.max(0, notAfter + 1_000 - Date.now())));
    const trigger = issue("x-trigger");
    revoke(trigger);
    await caFeed("list x-trigger", (s) => lists(s, trigger));
    const feed = await follow(ca.url);
    const result = createVerifier({
      bundle: rootPem,
      usage: "client",
      allow: { trustDomain: TD },
      revocation: feed,
      maxFeedAge: 3_600_000,
      clockSkew: 30_000,
    }).verify(short.chain);
    expect(Date.now()).toBeGreaterThan(notAfter);
    expect(result).toMatchObject({ ok: false, code: "revoked" });
  }, 60_000);

  it("is refused past notAfter by a verifier whose feed no longer covers it", async () => {
    const short = issue("x-gone", "3s");
    revoke(short);
    const current = snapshotOf(await caFeed("list x-gone", (s) => lists(s, short)));
    const notAfter = Date.parse(new X509Certificate(short.chain).validTo);
    await new Promise((r) => setTimeout(r, Math.max(0, notAfter + 1_000 - Date.now())));
    // A feed that dropped the certificate at notAfter, as the CA did before: the issuer's window starts after it.
    const now = Date.now();
    const file = join(dir, "dropped.bin");
    writeFileSync(
      file,
      signWithFirst({
        ...current,
        sequence: current.sequence + 1,
        thisUpdate: new Date(now),
        nextUpdate: new Date(now + 600_000),
        issuers: current.issuers.map((i) =>
          i.issuerId === first.id ? { ...i, lo: sequenceOf(short) + 1, revoked: [] } : i,
        ),
      }),
    );
    const r = cliVerify(short, file);
    expect(r.code).toBe(1);
    expect(r.result).toMatchObject({ ok: false, code: "expired" });
    expect(r.result.reason).toMatch(/no longer covers it/);
  }, 60_000);
});

describe("3. a feed signed with a revoked intermediate's key", () => {
  let fromFirst: Cert;
  let already: Cert;
  let genuine: Buffer;
  let forged: Buffer;

  beforeAll(async () => {
    fromFirst = issue("i-first");
    const rotated = JSON.parse(
      run(["ca", "rotate", "--data-dir", dataDir, "--insecure-no-passphrase", "--json"]),
    );
    expect(rotated.retired).toMatchObject({ id: first.id, state: "retired" });
    await caFeed("be signed by the new intermediate", () => true);
    for (let i = 0; i < 600; i++) {
      const signer = new X509Certificate(parseSignedFeed(await fetchCa("/feed")).chain[0]);
      if (!signer.subject.includes(first.id)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    already = issue("i-already");
    revoke(already);
    run(["ca", "taint", first.id, "--data-dir", dataDir]);
    run(["ca", "revoke-issuer", first.id, "--force", "--data-dir", dataDir]);
    genuine = await caFeed(
      "list the first intermediate as revoked",
      (s) => s.revokedIssuers.includes(first.id) && lists(s, already),
    );
    // What the leaked key signs: the next sequence, nothing revoked, no issuer revoked.
    const held = snapshotOf(genuine);
    const now = Date.now();
    forged = signWithFirst({
      ...held,
      sequence: held.sequence + 1,
      thisUpdate: new Date(now),
      nextUpdate: new Date(now + 600_000),
      issuers: held.issuers.map((i) => ({ ...i, revoked: [] })),
      revokedIssuers: [],
      retiredIssuers: [],
    });
  }, 120_000);

  it("a verifier holding the feed that revokes the signer refuses the forged one", async () => {
    attacker.replay(genuine, "204");
    const feed = await follow(attacker.url, join(dir, "signer-state.json"));
    const verifier = verifierOn(feed);
    expect(verifier.verify(fromFirst.chain)).toMatchObject({ ok: false, code: "revoked" });
    const sequence = feed.sequence;

    attacker.answer = () => ({ status: 200, body: forged });
    await feed.update();
    expect(feed.sequence).toBe(sequence);
    expect(feed.lastError).toBe(
      `the feed is signed by issuer ${first.id}, which the feed held (version ${sequence}) lists as revoked; refusing it`,
    );
    expect(verifier.verify(fromFirst.chain)).toMatchObject({ ok: false, code: "revoked" });
    expect(verifier.verify(already.chain)).toMatchObject({ ok: false, code: "revoked" });
  });

  it("a restarted verifier refuses it too, from the signers its state file recorded", async () => {
    attacker.answer = () => ({ status: 200, body: forged });
    await expect(follow(attacker.url, join(dir, "signer-state.json"))).rejects.toThrow(
      `the feed is signed by issuer ${first.id}, which the verifier's feed state (${join(dir, "signer-state.json")}) lists as revoked or retired; refusing it`,
    );
  });

  it("stint verify refuses a forged feed file after reading the genuine one", () => {
    const genuineFile = join(dir, "genuine.bin");
    const forgedFile = join(dir, "forged.bin");
    writeFileSync(genuineFile, genuine);
    writeFileSync(forgedFile, forged);
    expect(cliVerify(fromFirst, genuineFile).result).toMatchObject({ ok: false, code: "revoked" });
    const r = cliVerify(already, forgedFile);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(`the feed is signed by issuer ${first.id}`);
  });

  it("a feed that lists its own signer as revoked or retired is refused even without history", async () => {
    const held = snapshotOf(genuine);
    for (const over of [{ revokedIssuers: [first.id] }, { revokedIssuers: [], retiredIssuers: [first.id] }]) {
      attacker.answer = () => ({ status: 200, body: signWithFirst({ ...held, ...over }) });
      await expect(follow(attacker.url)).rejects.toThrow(`the feed is signed by issuer ${first.id}`);
    }
  });
});
