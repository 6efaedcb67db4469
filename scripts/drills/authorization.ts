import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AcmeClient } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { pemDecodeAll, toPem } from "../../formats/pem";
import { freePort, mintJoinTokens } from "../bench/acme-load/servers";
import { crossAccountAttempts, type Party } from "./cross-account";
import { type DrillContext, runDrill, sleep } from "./harness";
import { ecKey } from "./hostile-cases";
import { problemOf, type Reply, request } from "./https";
import { CaServer, stint, stintJson } from "./processes";

/**
 * Who may do what, tried against a real CA. Every admin endpoint, with a
 * request a good admin would get 2xx for, is sent with no client
 * certificate, a workload's certificate, an expired admin certificate, a
 * revoked one and a superseded one: none may answer, each must refuse with a
 * 401 or 403 problem, and nothing may change. Then one ACME account tries to
 * read, answer, finalize, list, update, revoke and renew another's objects.
 * The genuine admin and the owner then do the same successfully, so every
 * refusal is the credential's doing, not a malformed request's.
 *   npm run drill:authorization [-- --short]
 */

interface Settings extends Record<string, number> {
  rounds: number;
}

const TD = "authz.example";
const SPIFFE_ID = `spiffe://${TD}/web`;

interface Credential {
  name: string;
  cert?: string;
  key?: string;
}

interface AdminCall {
  name: string;
  method: string;
  path: string;
  body?: unknown;
}

async function run(ctx: DrillContext<Settings>) {
  const dir = ctx.tempDir("authz");
  const dataDir = join(dir, "ca");
  const env = { STINT_DATA_DIR: dataDir, STINT_TRUST_DOMAIN: TD, STINT_POLICY_MIN_TTL: "1s" };
  stintJson(["ca", "init", "--insecure-no-passphrase"], env);
  const port = await freePort();
  const ca = new CaServer("ca", ["--insecure-no-passphrase", "--listen", `127.0.0.1:${port}`], env);
  ctx.onCleanup(() => ca.stop());
  const origin = await ca.start();
  const rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  const adminFiles = (): Credential => ({
    name: "admin",
    cert: readFileSync(join(dataDir, "admin", "cert.pem"), "utf8"),
    key: readFileSync(join(dataDir, "admin", "key.pem"), "utf8"),
  });
  const tokens = await mintJoinTokens(dataDir, origin, Array(4).fill(SPIFFE_ID), ctx.log);

  // Two ACME accounts; A owns a certificate (from a whole order) and a ready order.
  const directoryUrl = `${origin}/acme/directory`;
  const party = async (tokenA: string, tokenB: string): Promise<Party> => {
    const key = ecKey();
    const c = await AcmeClient.connect({ directoryUrl, ca: rootPem, accountKey: key });
    await c.newAccount();
    const certKey = ecKey();
    const obtained = await c.obtainCertificate({
      identifiers: [{ type: "spiffe", value: SPIFFE_ID }],
      csrDer: buildCsr({ key: certKey, spiffeId: SPIFFE_ID }),
      authorize: (_a, ch) => c.attest(ch.url, "join_token", { token: tokenA }),
    });
    const ready = await c.newOrder([{ type: "spiffe", value: SPIFFE_ID }]);
    const authz = await c.getAuthorization(ready.authorizations[0]);
    await c.attest(authz.challenges[0].url, "join_token", { token: tokenB });
    const valid = await c.getAuthorization(obtained.order.authorizations[0]);
    return {
      pending: await c.newOrder([{ type: "spiffe", value: SPIFFE_ID }]),
      client: c,
      key,
      kid: c.accountUrl!,
      order: obtained.order,
      authz: valid,
      ready: await c.getOrder(ready.url),
      chain: pemDecodeAll(obtained.pem, "CERTIFICATE", "chain"),
      certKey,
    };
  };
  const a = await party(tokens[0], tokens[1]);
  const b = await party(tokens[2], tokens[3]);

  // Admin calls, each one a good admin gets 2xx for; the revocation aims at a certificate of B's.
  const entry = stintJson<{ id: string }>(
    [
      "entry",
      "create",
      "--spiffe-id",
      `spiffe://${TD}/probe`,
      "--selector",
      "k8s:ns:probe",
      "--server",
      origin,
    ],
    env,
  );
  const serialOf = (pem: string | Buffer) =>
    new X509Certificate(pem).serialNumber.toLowerCase().padStart(34, "0");
  const victimSerial = serialOf(b.chain[0]);
  const calls: AdminCall[] = [
    { name: "list entries", method: "GET", path: "/admin/entries" },
    {
      name: "create an entry",
      method: "POST",
      path: "/admin/entries",
      body: { spiffeId: `spiffe://${TD}/evil`, selectors: ["k8s:ns:evil"] },
    },
    { name: "read an entry", method: "GET", path: `/admin/entries/${entry.id}` },
    {
      name: "create a join token",
      method: "POST",
      path: "/admin/join-tokens",
      body: { spiffeId: `spiffe://${TD}/evil`, ttl: "10m" },
    },
    { name: "list certificates", method: "GET", path: "/admin/certificates" },
    { name: "read a certificate", method: "GET", path: `/admin/certificates/${victimSerial}` },
    { name: "read the audit log", method: "GET", path: "/admin/audit" },
    {
      name: "revoke a certificate",
      method: "POST",
      path: `/admin/certificates/${victimSerial}/revoke`,
      body: { reason: "keyCompromise" },
    },
    { name: "delete an entry", method: "DELETE", path: `/admin/entries/${entry.id}` },
  ];
  const callAdmin = (call: AdminCall, cred: Credential): Promise<Reply> =>
    request(`${origin}${call.path}`, {
      method: call.method,
      ca: rootPem,
      ...(cred.cert ? { cert: cred.cert, key: cred.key } : {}),
      ...(call.body === undefined
        ? {}
        : { headers: { "content-type": "application/json" }, body: JSON.stringify(call.body) }),
    });

  // The bad credentials. Each admin one is the latest issued while it is tried, so the check that
  // refuses it is the one named (expired, revoked), not "superseded".
  const workload: Credential = {
    name: "a workload certificate",
    cert: a.chain.map((d) => toPem("CERTIFICATE", d)).join(""),
    key: a.certKey.export({ type: "pkcs8", format: "pem" }) as string,
  };
  const tried: { credential: string; call: string; status: number; problem: boolean }[] = [];
  const attempt = async (cred: Credential) => {
    for (let round = 0; round < ctx.settings.rounds; round++) {
      for (const call of calls) {
        const r = await callAdmin(call, cred);
        tried.push({
          credential: cred.name,
          call: call.name,
          status: r.status,
          problem: problemOf(r) !== null,
        });
      }
    }
  };
  await attempt({ name: "no client certificate" });
  await attempt(workload);
  stintJson(["ca", "admin-cert", "--ttl", "1s"], env);
  const expired = { ...adminFiles(), name: "an expired admin certificate" };
  await sleep(1500);
  await attempt(expired);
  stintJson(["ca", "admin-cert"], env);
  const revoked = { ...adminFiles(), name: "a revoked admin certificate" };
  const rv = stint(["ca", "revoke", "--serial", serialOf(revoked.cert!), "--reason", "keyCompromise"], env);
  if (rv.code !== 0) throw new Error(`stint ca revoke: ${rv.stderr.trim()}`);
  await attempt(revoked);
  // Valid and not revoked, but no longer the latest: the CLI only ever presents the latest.
  stintJson(["ca", "admin-cert"], env);
  const superseded = { ...adminFiles(), name: "a superseded admin certificate" };
  stintJson(["ca", "admin-cert"], env);
  const good = adminFiles();
  await attempt(superseded);

  // Nothing changed: the entry is there, no entry or token for the evil ID, B's certificate not revoked.
  const after = async (call: AdminCall) => JSON.parse((await callAdmin(call, good)).body.toString("utf8"));
  const entries = (await after(calls[0])) as { entries: { id: string; spiffeId: string }[] };
  const cert = (await after(calls[5])) as { revokedAt?: string | null; revoked?: boolean };
  const audit = (await after({ name: "audit", method: "GET", path: "/admin/audit?limit=10000" })) as {
    records: { action: string; subject: string; details?: Record<string, unknown> }[];
  };
  const sideEffects =
    (entries.entries.some((e) => e.id === entry.id) ? 0 : 1) +
    entries.entries.filter((e) => e.spiffeId.endsWith("/evil")).length +
    (cert.revokedAt || cert.revoked ? 1 : 0) +
    audit.records.filter(
      (r) => r.subject.endsWith("/evil") || JSON.stringify(r.details ?? {}).includes("/evil"),
    ).length;

  // Positive control: the genuine admin gets 2xx for every call.
  const controls: string[] = [];
  for (const call of calls) {
    const r = await callAdmin(call, good);
    if (r.status < 200 || r.status >= 300)
      controls.push(`admin ${call.name}: ${r.status} ${r.body.toString().slice(0, 160)}`);
  }

  // ACME: B against A's objects, then A itself.
  const cross = await crossAccountAttempts(origin, rootPem, a, b);
  for (const c of cross.controls) controls.push(c);
  a.client.close();
  b.client.close();
  const crashes = ca.unexpectedExits;
  const stopCode = await ca.stop();

  const answered = tried.filter((t) => t.status >= 200 && t.status < 300);
  const wrongStatus = tried.filter((t) => t.status !== 401 && t.status !== 403);
  const byCredential: Record<string, Record<string, number>> = {};
  for (const t of tried) {
    byCredential[t.credential] ??= {};
    byCredential[t.credential][t.status] = (byCredential[t.credential][t.status] ?? 0) + 1;
  }
  return {
    zeros: {
      adminAnswered: answered.length,
      adminRefusalsNot401Or403: wrongStatus.length,
      adminRefusalsWithoutProblem: tried.filter((t) => !t.problem).length,
      adminSideEffects: sideEffects,
      crossAccountAccepted: cross.accepted.length,
      crossAccountRefusalsWithoutProblem: cross.notProblem.length,
      crossAccountSideEffects: cross.sideEffects,
      positiveControlFailures: controls.length,
      crashes,
      uncleanStop: stopCode === 0 ? 0 : 1,
    },
    figures: {
      adminRequests: tried.length,
      adminEndpoints: calls.map(
        (c) => `${c.method} ${c.path.replace(entry.id, ":id").replace(victimSerial, ":serial")}`,
      ),
      byCredential,
      crossAccountAttempts: cross.tried,
      // Known: any account may download any certificate by its URL (see docs/RELIABILITY.md, Drills).
      certificateDownloadByAnotherAccount: cross.certificateDownload,
      ...(answered.length > 0 ? { answered: answered.slice(0, 10) } : {}),
      ...(wrongStatus.length > 0 ? { wrongStatus: wrongStatus.slice(0, 10) } : {}),
      ...(cross.accepted.length > 0 ? { crossAccepted: cross.accepted } : {}),
      ...(cross.notProblem.length > 0 ? { crossNotProblem: cross.notProblem } : {}),
      ...(controls.length > 0 ? { controls } : {}),
    },
  };
}

runDrill<Settings>({
  name: "authorization",
  about:
    "Tries every admin endpoint with no client certificate, a workload's, an expired, a revoked and a\n" +
    "superseded admin certificate, and one ACME account's requests on another's order, authorization,\n" +
    "challenge, orders list, account, certificate (revoke, renew): all refused, nothing changed.",
  settings: { rounds: { full: 3, short: 1, help: "times each admin request is tried per credential" } },
  deadlineSeconds: { full: 300, short: 120 },
  run,
});
