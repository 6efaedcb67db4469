import { readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { FeedClient, FeedFile } from "../../verify/feed";
import { createVerifier } from "../../verify/verifier";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * The revocation feed end to end: a real CA serves it, a verifier in this
 * process follows it over the push channel, `stint verify` reads it from the
 * CA and from a file, and a stale, tampered or backwards feed is refused.
 */

const TD = "feed.example";
const dir = tempDir("stint-feed-e2e-");
const dataDir = join(dir, "ca");
/** `stint verify --feed` keeps its feed state under $XDG_STATE_HOME: here, not the user's. */
const env = { XDG_STATE_HOME: join(dir, "state") };
let ca: ServerProcess;
let rootPem: string;
const clients: FeedClient[] = [];

function issue(name: string): { chain: string; serial: string } {
  const out = join(dir, name);
  const r = stint([
    "ca",
    "issue",
    "--data-dir",
    dataDir,
    "--spiffe-id",
    `spiffe://${TD}/${name}`,
    "--out",
    out,
    "--json",
  ]);
  if (r.code !== 0) throw new Error(r.stderr);
  return { chain: readFileSync(join(out, "cert.pem"), "utf8"), serial: JSON.parse(r.stdout).serial };
}

function fetchFeed(
  path: string,
  from: { url: string; rootPem: string } = { url: ca.url, rootPem },
): Promise<{ status: number; body: Buffer; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time: reusing a kept-alive one just as the server times it out fails with "socket hang up".
    request(`${from.url}${path}`, { ca: from.rootPem, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }),
      );
    })
      .on("error", reject)
      .end();
  });
}

async function waitFor(what: string, probe: () => boolean, timeoutMs = 20_000): Promise<number> {
  const started = Date.now();
  while (!probe()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - started;
}

beforeAll(async () => {
  ca = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.close();
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a verifier following the CA's feed", () => {
  it("refuses a revoked certificate as soon as the push channel announces it", async () => {
    const good = issue("good");
    const bad = issue("bad");
    // The fallback poll is an hour away: only the push channel can deliver the revocation in time.
    const feed = await FeedClient.open({ url: ca.url, rootsPem: rootPem, pollMs: 3_600_000 });
    clients.push(feed);
    const verifier = createVerifier({
      bundle: rootPem,
      usage: "client",
      allow: { trustDomain: TD },
      revocation: feed,
      maxFeedAge: 3_600_000,
    });
    expect(verifier.verify(good.chain)).toMatchObject({ ok: true, spiffeId: `spiffe://${TD}/good` });
    expect(verifier.verify(bad.chain)).toMatchObject({ ok: true });
    const before = feed.sequence!;

    // Revoked by the command beside the server, through the store: the server notices and pushes.
    const revoked = stint([
      "ca",
      "revoke",
      "--data-dir",
      dataDir,
      "--serial",
      bad.serial,
      "--reason",
      "keyCompromise",
    ]);
    expect(revoked.code).toBe(0);
    // The one time bound in the suite, because the issue sets it: within 2 s of `stint ca revoke`.
    const latencyMs = await waitFor(
      "the verifier to refuse the revoked certificate",
      () => !verifier.verify(bad.chain).ok,
      2_000,
    );
    expect(verifier.verify(bad.chain)).toMatchObject({
      ok: false,
      code: "revoked",
      spiffeId: `spiffe://${TD}/bad`,
    });
    expect(verifier.verify(good.chain)).toMatchObject({ ok: true });
    expect(feed.sequence!).toBeGreaterThan(before);
    // Recorded for docs/BENCHMARKS.md; never asserted (shared machines are noisy).
    process.stdout.write(`revocation reached the verifier in ${latencyMs} ms\n`);
  }, 60_000);

  it("serves deltas from a known sequence and 204 when nothing changed", async () => {
    const first = await fetchFeed("/feed");
    expect(first.status).toBe(200);
    expect(first.headers["content-type"]).toBe("application/vnd.stint.feed");
    const sequence = Number(first.headers["x-stint-feed-sequence"]);
    expect((await fetchFeed(`/feed?since=${sequence}`)).status).toBe(204);
    expect((await fetchFeed("/feed?since=abc")).status).toBe(400);
  });

  it("accepts a certificate newer than the feed only as 'not yet covered', while the feed is fresh", async () => {
    const feed = await FeedClient.open({ url: ca.url, rootsPem: rootPem, push: false, pollMs: 3_600_000 });
    clients.push(feed);
    const verifier = createVerifier({
      bundle: rootPem,
      usage: "client",
      allow: { trustDomain: TD },
      revocation: feed,
      maxFeedAge: 3_600_000,
    });
    const fresh = issue("fresh");
    const result = verifier.verify(fresh.chain);
    expect(result).toMatchObject({ ok: true, note: expect.stringMatching(/not yet covered/) });
  });
});

describe("stint verify and feed files", () => {
  let feedFile: string;
  let revoked: { chain: string; serial: string };
  let good: { chain: string; serial: string };
  const bundleFile = () => join(dataDir, "root.pem");

  beforeAll(async () => {
    good = issue("cli-good");
    revoked = issue("cli-revoked");
    // Revoked beside the running CA, in the store: the CA notices on its next poll of the store.
    expect(
      stint(["ca", "revoke", "--data-dir", dataDir, "--serial", revoked.serial, "--reason", "superseded"])
        .code,
    ).toBe(0);
    feedFile = join(dir, "feed.bin");
    writeFileSync(join(dir, "good.pem"), good.chain);
    writeFileSync(join(dir, "revoked.pem"), revoked.chain);
  }, 60_000);

  it("prints the verdict from the CA's feed and from a file, with --json", async () => {
    await waitFor("the feed to list the revocation", () => {
      const r = stint(["verify", join(dir, "revoked.pem"), "--bundle", bundleFile(), "--feed", ca.url], env);
      return r.code === 1;
    });
    const refused = stint(
      ["verify", join(dir, "revoked.pem"), "--bundle", bundleFile(), "--feed", ca.url, "--json"],
      env,
    );
    expect(refused.code).toBe(1);
    expect(JSON.parse(refused.stdout)).toMatchObject({ ok: false, code: "revoked" });
    const ok = stint(["verify", join(dir, "good.pem"), "--bundle", bundleFile(), "--feed", ca.url], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^OK spiffe:\/\/feed\.example\/cli-good/);

    writeFileSync(feedFile, (await fetchFeed("/feed")).body);
    const fromFile = stint(
      ["verify", join(dir, "revoked.pem"), "--bundle", bundleFile(), "--feed", feedFile, "--json"],
      env,
    );
    expect(JSON.parse(fromFile.stdout)).toMatchObject({ ok: false, code: "revoked" });
  });

  it("takes a feed file's age from the feed's signed times, not the file's modification time", () => {
    // An old mtime makes no feed stale (an expired feed with a new mtime is test/e2e/feed-attacks.test.ts's).
    const old = new Date(Date.now() - 3_600_000);
    utimesSync(feedFile, old, old);
    const args = ["verify", join(dir, "good.pem"), "--bundle", bundleFile(), "--feed", feedFile, "--json"];
    const fresh = stint(args, env);
    expect(fresh.code).toBe(0);
    expect(JSON.parse(fresh.stdout)).toMatchObject({ ok: true });
    // --max-feed-age counts from the feed's thisUpdate, when the CA signed it.
    const r = stint([...args, "--max-feed-age", "1ms"], env);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      ok: false,
      code: "revocation-unavailable",
      reason: expect.stringMatching(/was signed \d+ s ago .*, beyond the 0 s limit/),
    });
  });

  it("refuses a feed signed by another CA", async () => {
    const otherDir = join(dir, "other-ca");
    const other = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      otherDir,
      "--trust-domain",
      TD,
    ]);
    try {
      const otherRoot = readFileSync(join(otherDir, "root.pem"), "utf8");
      const { body } = await fetchFeed("/feed", { url: other.url, rootPem: otherRoot });
      const foreign = join(dir, "foreign-feed.bin");
      writeFileSync(foreign, body);
      await expect(FeedFile.open(foreign, rootPem)).rejects.toThrow(/does not chain to the trusted roots/);
      const r = stint(["verify", join(dir, "good.pem"), "--bundle", bundleFile(), "--feed", foreign], env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/does not chain to the trusted roots/);
    } finally {
      await other.stop();
    }
  }, 60_000);

  it("refuses a tampered feed and one whose sequence goes backwards", async () => {
    const bytes = readFileSync(feedFile);
    const tampered = Buffer.from(bytes);
    tampered[20] ^= 0x01;
    const tamperedFile = join(dir, "tampered.bin");
    writeFileSync(tamperedFile, tampered);
    const r = stint(["verify", join(dir, "good.pem"), "--bundle", bundleFile(), "--feed", tamperedFile], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/feed/);

    const older = (await fetchFeed("/feed")).body;
    // A revocation moves the CA's sequence on; then the file is replaced by the older feed.
    const later = issue("later");
    expect(
      stint(["ca", "revoke", "--data-dir", dataDir, "--serial", later.serial, "--reason", "superseded"]).code,
    ).toBe(0);
    let newer = older;
    for (let i = 0; i < 400 && newer.equals(older); i++) {
      await new Promise((res) => setTimeout(res, 50));
      newer = (await fetchFeed("/feed")).body;
    }
    expect(newer.equals(older)).toBe(false);
    const backwardsFile = join(dir, "backwards.bin");
    writeFileSync(backwardsFile, newer);
    const file = await FeedFile.open(backwardsFile, rootPem, { reloadMs: 3_600_000 });
    const seq = file.view()!.sequence;
    writeFileSync(backwardsFile, older);
    await file.reload();
    expect(file.view()!.sequence).toBe(seq);
    expect(file.lastError).toMatch(/went backwards/);
    file.close();
  }, 60_000);
});
