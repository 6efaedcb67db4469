import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { activeIntermediate } from "../../ca/rotation";
import type { CertificateRecord } from "../../ca/store";
import { openStore } from "../../ca/store/open";
import { seeded } from "./seeded";

/**
 * bench:console — how long each security-console page takes with a large
 * fleet in the store. Seeds --certs certificates (default 100,000: 20,000
 * SPIFFE IDs with 5 renewals each, expiring over the next hours, some expired
 * without renewal, 1% revoked) straight through the store, starts a real
 * `stint ca serve` on it, and times each page over HTTPS with the admin
 * certificate: the first request, then the median of --runs more.
 */

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    certs: { type: "string", default: "100000" },
    runs: { type: "string", default: "5" },
    keep: { type: "boolean", default: false },
  },
});
const CERTS = Number(values.certs);
const RUNS = Number(values.runs);
const STINT = resolve(__dirname, "../../cli/main.js");
const TD = "bench.example";
const RENEWALS = 5;

async function seed(dataDir: string): Promise<void> {
  const store = await openStore(dataDir);
  try {
    const issuer = activeIntermediate(await store.listIssuers())!;
    const rand = seeded(42);
    const now = Date.now();
    const ids = Math.ceil(CERTS / RENEWALS);
    const start = process.hrtime.bigint();
    const first = await store.reserveSequences(issuer.id, CERTS);
    const batch: Promise<void>[] = [];
    for (let i = 0; i < CERTS; i++) {
      const id = i % ids;
      const renewal = Math.floor(i / ids);
      // The last renewal of each ID is live, expiring within 3 h; 1 in 200 IDs stopped renewing an hour ago.
      const lastNotAfter = id % 200 === 0 ? now - 3_600_000 * rand() : now + 10_800_000 * rand();
      const notAfter = lastNotAfter - (RENEWALS - 1 - renewal) * 1_800_000;
      const sequence = first + i;
      const cert: CertificateRecord = {
        serial: `01${issuer.id}${sequence.toString(16).padStart(16, "0")}`,
        issuerId: issuer.id,
        sequence,
        spiffeId: `spiffe://${TD}/ns/team-${id % 50}/sa/svc-${id}`,
        dnsNames: [],
        ipAddresses: [],
        notBefore: new Date(notAfter - 3_600_000),
        notAfter: new Date(notAfter),
        der: Buffer.alloc(400, i & 0xff),
        revokedAt: null,
        revocationReason: null,
      };
      batch.push(
        store.insertCertificate(cert, {
          at: new Date(notAfter - 3_600_000),
          actor: "bench",
          action: "cert.issue",
          subject: cert.serial,
          details: { spiffeId: cert.spiffeId },
        }),
      );
      if (batch.length === 2000) await Promise.all(batch.splice(0));
    }
    await Promise.all(batch);
    // 1% of the live ones revoked.
    const live = await store.listCertificates({
      unexpiredAt: new Date(now),
      spiffeIdPrefix: `spiffe://${TD}/ns/`,
      limit: 10_000,
    });
    for (const c of live.filter((_, i) => i % 100 === 0)) {
      await store.revokeCertificate(c.serial, 1, new Date(now), {
        at: new Date(now),
        actor: "bench",
        action: "cert.revoke",
        subject: c.serial,
        details: {},
      });
    }
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    console.error(`seeded ${CERTS} certificates in ${(ms / 1000).toFixed(1)} s`);
  } finally {
    await store.close();
  }
}

function startServe(dataDir: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(
    process.execPath,
    [STINT, "ca", "serve", "--insecure-no-passphrase", "--data-dir", dataDir, "--listen", "127.0.0.1:0"],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  return new Promise((res, rej) => {
    let text = "";
    child.stderr!.on("data", (d: Buffer) => {
      text += d.toString();
      const m = /"msg":"listening".*"url":"([^"]+)"/.exec(text);
      if (m) res({ child, url: m[1]! });
    });
    child.once("exit", (code) => rej(new Error(`ca serve exited with ${code}: ${text.slice(-2000)}`)));
  });
}

function get(
  url: string,
  tls: { ca: string; cert: string; key: string },
): Promise<{ status: number; ms: number; bytes: number; text: string }> {
  const started = process.hrtime.bigint();
  return new Promise((res, rej) => {
    const req = request(url, { ...tls, agent: false }, (r) => {
      let bytes = 0;
      let text = "";
      r.on("data", (d: Buffer) => {
        bytes += d.length;
        if (text.length < 2000) text += d.toString();
      });
      r.on("end", () =>
        res({ status: r.statusCode ?? 0, ms: Number(process.hrtime.bigint() - started) / 1e6, bytes, text }),
      );
    });
    req.on("error", rej);
    req.end();
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-console-"));
  const dataDir = join(dir, "ca");
  const init = spawnSync(
    process.execPath,
    [STINT, "ca", "init", "--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD],
    {
      encoding: "utf8",
    },
  );
  if (init.status !== 0) throw new Error(`ca init failed: ${init.stderr}`);
  await seed(dataDir);
  const { child, url } = await startServe(dataDir);
  try {
    const admin = join(dataDir, "admin");
    const tls = {
      ca: readFileSync(join(dataDir, "root.pem"), "utf8"),
      cert: readFileSync(join(admin, "cert.pem"), "utf8"),
      key: readFileSync(join(admin, "key.pem"), "utf8"),
    };
    const someId = `spiffe://${TD}/ns/team-7/sa/svc-1007`;
    const pages: [string, string][] = [
      ["fleet (first page, live)", "/console/fleet"],
      ["fleet, page after a serial", "/console/fleet?after=01"],
      ["fleet, ID prefix (one team)", `/console/fleet?id=${encodeURIComponent(`spiffe://${TD}/ns/team-7/`)}`],
      ["fleet, one SPIFFE ID, with expired", `/console/fleet?id=${encodeURIComponent(someId)}&all=1`],
      ["issuers (live/unreplaced counts)", "/console/issuers"],
      ["revocations and feed", "/console/revocations"],
      ["audit (newest)", "/console/audit"],
      ["audit, text search (SPIFFE ID)", `/console/audit?text=${encodeURIComponent(someId)}`],
      ["audit, action search", "/console/audit?action=cert.revoke"],
      ["entries and tokens", "/console/entries"],
    ];
    const rows: string[] = [];
    for (const [name, path] of pages) {
      const first = await get(url + path, tls);
      if (first.status !== 200) throw new Error(`${path}: HTTP ${first.status}: ${first.text}`);
      const times: number[] = [];
      for (let i = 0; i < RUNS; i++) times.push((await get(url + path, tls)).ms);
      times.sort((a, b) => a - b);
      const median = times[Math.floor(times.length / 2)]!;
      rows.push(
        `| ${name} | ${first.ms.toFixed(0)} | ${median.toFixed(0)} | ${(first.bytes / 1024).toFixed(0)} |`,
      );
    }
    console.log(`bench:console, ${CERTS} certificates (SQLite), median of ${RUNS} after a first request, ms`);
    console.log("| page | first | median | KiB |");
    console.log("|---|---:|---:|---:|");
    for (const r of rows) console.log(r);
  } finally {
    child.kill("SIGTERM");
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
