import { createPrivateKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { AcmeClient } from "../../agent/acme-client";
import { FeedClient } from "../../verify/feed";
import { createVerifier } from "../../verify/verifier";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Issue 13: a revocation made through this server (its admin API, ACME
 * revokeCert) is published in its feed as soon as it commits, not at the next store poll. The poll is
 * set an hour apart and the verifier's own fallback poll too, so only the
 * immediate publication can bring the revocation to the verifier.
 */

const TD = "push.example";
const dir = tempDir("stint-feed-push-");
const dataDir = join(dir, "ca");
let ca: ServerProcess;
let rootPem: string;
let feed: FeedClient | undefined;

function issue(name: string): { chain: string; serial: string; keyPem: string } {
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
  return {
    chain: readFileSync(join(out, "cert.pem"), "utf8"),
    serial: JSON.parse(r.stdout).serial,
    keyPem: readFileSync(join(out, "key.pem"), "utf8"),
  };
}

async function waitFor(what: string, probe: () => boolean, timeoutMs: number): Promise<void> {
  const started = Date.now();
  while (!probe()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  ca = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--feed-poll-interval",
    "1h",
  ]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);

afterAll(async () => {
  feed?.close();
  await ca?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it("pushes an admin-API revocation to /feed/events followers without waiting for the store poll", async () => {
  const kept = issue("kept");
  const gone = issue("gone");
  feed = await FeedClient.open({ url: ca.url, rootsPem: rootPem, pollMs: 3_600_000 });
  const verifier = createVerifier({
    bundle: rootPem,
    usage: "client",
    allow: { trustDomain: TD },
    revocation: feed,
    maxFeedAge: 3_600_000,
  });
  expect(verifier.verify(gone.chain)).toMatchObject({ ok: true });
  const before = feed.sequence!;

  const r = stint([
    "cert",
    "revoke",
    gone.serial,
    "--reason",
    "keyCompromise",
    "--data-dir",
    dataDir,
    "--server",
    ca.url,
  ]);
  expect(r).toMatchObject({ code: 0, stderr: "" });
  // Not a timing assertion: the next poll is an hour away, so without the push this never happens.
  await waitFor(
    "the verifier to refuse the revoked certificate",
    () => !verifier.verify(gone.chain).ok,
    20_000,
  );
  expect(verifier.verify(gone.chain)).toMatchObject({
    ok: false,
    code: "revoked",
    spiffeId: `spiffe://${TD}/gone`,
  });
  expect(verifier.verify(kept.chain)).toMatchObject({ ok: true });
  expect(feed.sequence!).toBeGreaterThan(before);
  expect(ca.logs().some((l) => /"msg":"revocation feed published".*"why":"revocation"/.test(l))).toBe(true);
}, 60_000);

it("pushes an ACME revokeCert (signed with the certificate's own key) to followers too", async () => {
  const gone = issue("acme-gone");
  feed ??= await FeedClient.open({ url: ca.url, rootsPem: rootPem, pollMs: 3_600_000 });
  const verifier = createVerifier({
    bundle: rootPem,
    usage: "client",
    allow: { trustDomain: TD },
    revocation: feed,
    maxFeedAge: 3_600_000,
  });
  expect(verifier.verify(gone.chain)).toMatchObject({ ok: true });

  const client = await AcmeClient.connect({
    directoryUrl: `${ca.url}/acme/directory`,
    ca: rootPem,
    accountKey: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
  });
  try {
    await client.revoke(new X509Certificate(gone.chain).raw, {
      reason: 1,
      signWith: createPrivateKey(gone.keyPem),
    });
  } finally {
    client.close();
  }
  // Not a timing assertion: the next poll is an hour away, so without the push this never happens.
  await waitFor(
    "the verifier to refuse the certificate revoked over ACME",
    () => !verifier.verify(gone.chain).ok,
    20_000,
  );
  expect(verifier.verify(gone.chain)).toMatchObject({ ok: false, code: "revoked" });
}, 60_000);
