import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { Agent, get as httpsGet } from "node:https";
import { performance } from "node:perf_hooks";
import {
  AcmeClient,
  AcmeProblem,
  type Authorization,
  type Challenge,
  type Identifier,
  joinTokenEvidence,
  type Order,
  type WaitOptions,
} from "../../../agent/acme-client";
import { buildCsr } from "../../../agent/csr";
import { pemDecodeAll } from "../../../formats/pem";
import { type ProcSample, sampleProcess } from "./proc";

/**
 * The load itself: `concurrency` workers, each with its own ACME account and
 * nonce pool over one shared keep-alive agent, issuing certificates until
 * `count` are done, after a warm-up that is not measured. The server's CPU
 * time is read from /proc just before and just after the measured part.
 */

export type ChallengeType = "http-01" | "attest-01";
export type Mode = "full" | "renew";

export interface Target {
  /** Shown in results: "pebble", "stint", or the directory's host. */
  name: string;
  directoryUrl: string;
  /** PEM trust anchors for the server's TLS certificate; undefined means the system store. */
  ca?: string;
  serverPid?: number;
  /** Stint's /metrics: read before and after the measured part, for requests per certificate by route. */
  metricsUrl?: string;
}

/** What certificate i asks for, and how its challenge is answered. */
export interface Names {
  challenge: ChallengeType;
  /** Identifiers of certificate i (warm-up certificates come first, then measured ones). */
  identifiers(i: number): Identifier[];
  /** The join token for certificate i (attest-01). */
  joinToken?(i: number): string;
  /** http-01: the responder serving key authorizations (token → key authorization). */
  http01?: Map<string, string>;
}

export interface LoadOptions {
  target: Target;
  mode: Mode;
  names: Names;
  concurrency: number;
  count: number;
  warmup: number;
  /** Cap on one wait between polls, whatever Retry-After says. */
  pollMs: number;
  /** Read the server's RSS after every this many measured certificates; 0 reads it only at the end. */
  rssEvery: number;
  /**
   * Read the order before finalizing even when every challenge answer said
   * valid (the agent before issue 13: 6 requests per attest-01 certificate);
   * by default the generator finalizes at once as the agent now does (5).
   */
  readOrderFirst?: boolean;
  log: (line: string) => void;
}

/** The server's resident memory after `certificates` measured certificates. */
export interface RssSample {
  certificates: number;
  rssMiB: number;
}

export interface LoadResult {
  server: string;
  mode: Mode;
  challenge: ChallengeType;
  concurrency: number;
  warmup: number;
  certificates: number;
  failures: number;
  /** The first few distinct failure messages. */
  errors: string[];
  seconds: number;
  certsPerSecond: number;
  /** Per certificate, from key generation to the downloaded chain. */
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Waits per certificate before reading an authorization or order still in progress; each is one more read. */
  pollsPerCert: number;
  /** Absent without a server pid. */
  serverCpuMsPerCert?: number;
  /** The kernel's part of serverCpuMsPerCert. */
  serverSysCpuMsPerCert?: number;
  /** Server CPU time over wall time: 1.0 is one core busy. */
  serverCpuCores?: number;
  serverRssMiB?: number;
  serverPeakRssMiB?: number;
  /** With rssEvery: the RSS along the run, to show whether it grows with the certificates issued. */
  serverRssSamples?: RssSample[];
  /** The generator's own cost, to show whether it, not the server, was the limit. */
  clientCpuMsPerCert: number;
  clientEventLoopUtilization: number;
  /** Key type of the certificate that signed the leaves (chain[1]), e.g. "ec-p256", "rsa-2048". */
  issuerKey?: string;
  /** How often a stuck server was restarted before this measurement (--compare, pebble only). */
  pebbleRestarts?: number;
  /**
   * With a metrics URL: HTTP requests the server counted per measured
   * certificate, by route (stint_http_requests_total; "total" sums them), so
   * a change in round trips shows beside the CPU it costs.
   */
  requestsPerCert?: Record<string, number>;
}

interface Held {
  key: KeyObject;
  chain: Buffer[];
}

interface Worker {
  client: AcmeClient;
  /** The certificate renewals start from (renew mode). */
  held?: Held;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A fresh P-256 key, generated as DER and imported: on Node 20 a key straight
 * from generateKeyPairSync shares a mutex with its keygen job, and a garbage
 * collection that frees the job while the key is in use (a JWK export for
 * the account's thumbprint, or a renewal's JWS signed with the previous
 * certificate's key) deadlocks the thread. Certificate keys were taken
 * straight from generateKeyPairSync until issue 13: renewals, which sign
 * with them, hung after about 170,000; an imported key has no keygen job.
 */
function newKey(): KeyObject {
  const { privateKey } = generateKeyPairSync("ec", {
    namedCurve: "P-256",
    privateKeyEncoding: { format: "der", type: "pkcs8" },
    publicKeyEncoding: { format: "der", type: "spki" },
  });
  return createPrivateKey({ key: privateKey, format: "der", type: "pkcs8" });
}

const MAX_ERRORS_SHOWN = 5;

/** How long a run waits for the next certificate before it declares the server stuck. */
const STALL_MS = 20_000;

/** The server stopped answering: no certificate finished for STALL_MS. */
export class StallError extends Error {}

/** A run gives up once failures exceed this share of the count (or 10), rather than measure errors. */
const MAX_FAILURE_SHARE = 0.01;

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const { target, names, concurrency, log } = opts;
  const agent = new Agent({
    keepAlive: true,
    maxSockets: concurrency + 4,
    maxFreeSockets: concurrency + 4,
    ...(target.ca ? { ca: target.ca } : {}),
  });
  let polls = 0;
  const countingSleep = (ms: number) => {
    polls++;
    return sleep(ms);
  };
  const wait: WaitOptions = { timeoutMs: 120_000, maxIntervalMs: opts.pollMs };
  let next = 0; // index of the next certificate: names are per index, so never reused
  let completed = 0;
  /** Called after each certificate of the measured run. */
  let onCompleted: ((n: number) => void) | undefined;
  const failures: string[] = [];
  let failureCount = 0;
  const maxFailures = Math.max(10, Math.ceil(opts.count * MAX_FAILURE_SHARE));
  let issuerKey: string | undefined;

  try {
    log(`${target.name}: ${concurrency} accounts at ${target.directoryUrl}`);
    const workers: Worker[] = await Promise.all(
      Array.from({ length: concurrency }, async () => {
        const client = await AcmeClient.connect({
          directoryUrl: target.directoryUrl,
          accountKey: newKey(),
          agent,
          sleep: countingSleep,
        });
        await client.newAccount();
        return { client };
      }),
    );

    /**
     * The RFC 8555 flow, step by step rather than through obtainCertificate,
     * so that the first read of an authorization or order still in progress
     * comes after a wait: read at once, pebble deadlocks far more often.
     */
    const obtain = async (w: Worker, i: number): Promise<Held> => {
      const c = w.client;
      const key = newKey();
      const ids = names.identifiers(i);
      const spiffeId = ids.find((x) => x.type === "spiffe")?.value;
      const dnsNames = ids.filter((x) => x.type === "dns").map((x) => x.value);
      const csr = buildCsr({ key, spiffeId, dnsNames });
      let order = await c.newOrder(ids);
      if (order.status === "pending") {
        let allValid = true;
        for (const url of order.authorizations) {
          const authz = await c.getAuthorization(url);
          if (authz.status === "pending")
            allValid = (await authorize(c, names, i, authz, wait, countingSleep)) && allValid;
        }
        if (allValid && !opts.readOrderFirst) order = await finalizeAtOnce(c, order, csr, wait);
        else order = await c.waitForOrder(order.url, ["ready", "processing", "valid"], wait);
      }
      if (order.status === "ready") order = await c.finalize(order, csr);
      if (order.status !== "valid") {
        await countingSleep(opts.pollMs);
        order = await c.waitForOrder(order.url, ["valid"], wait);
      }
      if (!order.certificate) throw new Error(`order ${order.url} is valid but names no certificate`);
      const pem = await c.downloadCertificate(order.certificate);
      return { key, chain: pemDecodeAll(pem, "CERTIFICATE", "the downloaded chain") };
    };

    const renew = async (w: Worker): Promise<Held> => {
      const held = w.held!;
      const key = newKey();
      const spiffeId = spiffeIdOf(held.chain[0]);
      const pem = await w.client.renewWithCertificate(held.chain, held.key, buildCsr({ key, spiffeId }));
      return { key, chain: pemDecodeAll(pem, "CERTIFICATE", "the renewed chain") };
    };

    const once = async (w: Worker): Promise<Held> => {
      if (opts.mode === "full") return obtain(w, next++);
      const held = await renew(w);
      w.held = held;
      return held;
    };

    if (opts.mode === "renew") {
      log(`${target.name}: ${concurrency} first certificates to renew from`);
      await Promise.all(
        workers.map(async (w) => {
          w.held = await obtain(w, next++);
        }),
      );
    }

    /**
     * Runs `n` certificates over all workers; returns each one's latency. A
     * server that stops answering (pebble can deadlock under this load) is
     * given up on after STALL_MS without a finished certificate.
     */
    const drive = (n: number): Promise<number[]> =>
      new Promise<number[]>((resolve, reject) => {
        const latencies: number[] = [];
        let started = 0;
        let lastProgress = performance.now();
        let stalled = false;
        const watchdog = setInterval(() => {
          if (performance.now() - lastProgress < STALL_MS) return;
          stalled = true;
          clearInterval(watchdog);
          reject(new StallError(`${target.name}: no certificate finished for ${STALL_MS / 1000} s`));
        }, 1000);
        const worker = async (w: Worker) => {
          while (started < n && !stalled) {
            started++;
            const t0 = performance.now();
            try {
              const held = await once(w);
              latencies.push(performance.now() - t0);
              completed++;
              onCompleted?.(completed);
              issuerKey ??= held.chain[1] ? keyName(held.chain[1]) : undefined;
            } catch (err) {
              if (stalled) return;
              failureCount++;
              const msg = err instanceof Error ? err.message : String(err);
              if (failures.length < MAX_ERRORS_SHOWN && !failures.includes(msg)) {
                failures.push(msg);
                log(`${target.name}: failure: ${msg}`);
              }
              if (failureCount > maxFailures)
                throw new Error(
                  `${target.name}: more than ${maxFailures} failures; the first: ${failures[0]}`,
                );
            }
            lastProgress = performance.now();
          }
        };
        Promise.all(workers.map(worker))
          .then(() => resolve(latencies), reject)
          .finally(() => clearInterval(watchdog));
      });

    if (opts.warmup > 0) {
      log(`${target.name}: warm-up, ${opts.warmup} ${opts.mode === "renew" ? "renewals" : "certificates"}`);
      await drive(opts.warmup);
    }
    failureCount = 0;
    failures.length = 0;
    polls = 0;

    log(
      `${target.name}: measuring ${opts.count} (${opts.mode}, ${names.challenge}, ${concurrency} in flight)`,
    );
    const requestsBefore = target.metricsUrl ? await requestCounts(target.metricsUrl, target.ca) : undefined;
    const before = target.serverPid === undefined ? undefined : sampleProcess(target.serverPid);
    const cpu0 = process.cpuUsage();
    const elu0 = performance.eventLoopUtilization();
    const t0 = performance.now();
    completed = 0;
    const rssSamples: RssSample[] = [];
    const pid = target.serverPid;
    if (pid !== undefined && opts.rssEvery > 0) {
      onCompleted = (n) => {
        if (n % opts.rssEvery !== 0) return;
        const kib = sampleProcess(pid).rssKiB;
        if (kib === undefined) return;
        rssSamples.push({ certificates: n, rssMiB: round(kib / 1024, 1) });
        // Also as it happens: a long run stopped early (the 500,000-renewal one) keeps what it saw.
        log(`${target.name}: RSS ${round(kib / 1024, 1)} MiB after ${n}`);
      };
    }
    const progress = setInterval(() => log(`${target.name}: ${completed}/${opts.count}…`), 10_000);
    let latencies: number[];
    try {
      latencies = await drive(opts.count);
    } finally {
      clearInterval(progress);
      onCompleted = undefined;
    }
    const wallMs = performance.now() - t0;
    const after = target.serverPid === undefined ? undefined : sampleProcess(target.serverPid);
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    const requestsAfter = target.metricsUrl ? await requestCounts(target.metricsUrl, target.ca) : undefined;

    const n = latencies.length;
    return {
      server: target.name,
      mode: opts.mode,
      challenge: names.challenge,
      concurrency,
      warmup: opts.warmup,
      certificates: n,
      failures: failureCount,
      errors: [...failures],
      seconds: round(wallMs / 1000, 3),
      certsPerSecond: round((n * 1000) / wallMs, 1),
      latencyMs: latencySummary(latencies),
      pollsPerCert: round(polls / Math.max(1, n), 2),
      ...serverFigures(before, after, n, wallMs),
      ...(rssSamples.length > 0 ? { serverRssSamples: rssSamples } : {}),
      clientCpuMsPerCert: round((cpu.user + cpu.system) / 1000 / Math.max(1, n), 3),
      clientEventLoopUtilization: round(elu.utilization, 2),
      ...(issuerKey ? { issuerKey } : {}),
      ...(requestsBefore && requestsAfter
        ? { requestsPerCert: perCertificate(requestsBefore, requestsAfter, n + failureCount) }
        : {}),
    };
  } finally {
    agent.destroy();
  }
}

/**
 * Finalizes an order whose challenges all answered valid, without reading it
 * first, as the agent does (agent/acme-client.ts); a server that has not made
 * it ready yet answers orderNotReady, and then the order is polled.
 */
async function finalizeAtOnce(c: AcmeClient, order: Order, csr: Buffer, wait: WaitOptions): Promise<Order> {
  try {
    return await c.finalize(order, csr);
  } catch (err) {
    if (!(err instanceof AcmeProblem) || !err.is("orderNotReady")) throw err;
    return c.waitForOrder(order.url, ["ready", "processing", "valid"], wait);
  }
}

/**
 * Answers the challenge of one pending authorization and returns once the
 * authorization is valid: true when the answer itself said so (attest-01
 * answered while the client waits), false when it was polled. http-01 is
 * served by the responder until the authorization is valid, and read first
 * after a wait.
 */
async function authorize(
  client: AcmeClient,
  names: Names,
  i: number,
  authz: Authorization,
  wait: WaitOptions,
  sleep: (ms: number) => Promise<void>,
): Promise<boolean> {
  const type = authz.identifier.type === "spiffe" ? "attest-01" : "http-01";
  const challenge = authz.challenges.find((c) => c.type === type);
  if (!challenge) throw new Error(`authorization ${authz.url} offers no ${type} challenge`);
  if (type === "http-01") names.http01?.set(challenge.token, client.keyAuthorization(challenge.token));
  try {
    let answered: Challenge;
    if (type === "attest-01") {
      if (!names.joinToken) throw new Error("attest-01 needs join tokens");
      answered = await client.attest(challenge.url, "join_token", joinTokenEvidence(names.joinToken(i)));
    } else answered = await client.respondChallenge(challenge.url);
    if (answered.status === "valid") return true;
    if (answered.status === "invalid")
      throw new Error(`${type} challenge is invalid: ${answered.error?.detail ?? "no detail"}`);
    await sleep(wait.maxIntervalMs ?? 0);
    await client.waitForAuthorization(authz.url, wait);
    return false;
  } finally {
    if (type === "http-01") names.http01?.delete(challenge.token);
  }
}

function serverFigures(
  before: ProcSample | undefined,
  after: ProcSample | undefined,
  n: number,
  wallMs: number,
): Partial<LoadResult> {
  if (!before || !after) return {};
  const cpuMs = after.cpuMs - before.cpuMs;
  return {
    serverCpuMsPerCert: round(cpuMs / Math.max(1, n), 3),
    serverSysCpuMsPerCert: round((after.sysMs - before.sysMs) / Math.max(1, n), 3),
    serverCpuCores: round(cpuMs / wallMs, 2),
    ...(after.rssKiB === undefined ? {} : { serverRssMiB: round(after.rssKiB / 1024, 1) }),
    ...(after.peakRssKiB === undefined ? {} : { serverPeakRssMiB: round(after.peakRssKiB / 1024, 1) }),
  };
}

export function latencySummary(ms: number[]): LoadResult["latencyMs"] {
  if (ms.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const sorted = Float64Array.from(ms).sort();
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)], 1);
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return {
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: round(sorted[sorted.length - 1], 1),
    mean: round(mean, 1),
  };
}

function spiffeIdOf(leafDer: Buffer): string {
  const uri = (new X509Certificate(leafDer).subjectAltName ?? "")
    .split(", ")
    .find((s) => s.startsWith("URI:spiffe://"));
  if (!uri) throw new Error("the certificate to renew has no SPIFFE ID");
  return uri.slice(4);
}

function keyName(der: Buffer): string {
  const key = new X509Certificate(der).publicKey;
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === "rsa") return `rsa-${d?.modulusLength ?? "?"}`;
  if (key.asymmetricKeyType === "ec")
    return d?.namedCurve === "prime256v1" ? "ec-p256" : d?.namedCurve === "secp384r1" ? "ec-p384" : "ec";
  return key.asymmetricKeyType ?? "unknown";
}

const round = (x: number, digits: number) => Number(x.toFixed(digits));

/** stint_http_requests_total by route, summed over status codes, from a Prometheus text page. */
export function parseRequestCounts(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of text.matchAll(/^stint_http_requests_total\{([^}]*)\} (\d+(?:\.\d+)?)$/gm)) {
    const route = /route="([^"]*)"/.exec(m[1])?.[1] ?? "other";
    counts.set(route, (counts.get(route) ?? 0) + Number(m[2]));
  }
  return counts;
}

function requestCounts(url: string, ca: string | undefined): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    httpsGet(url, { ...(ca ? { ca } : {}), agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        res.statusCode === 200
          ? resolve(parseRequestCounts(Buffer.concat(chunks).toString("utf8")))
          : reject(new Error(`${url} answered ${res.statusCode}`)),
      );
    }).on("error", (err) => reject(new Error(`cannot read ${url}: ${err.message}`)));
  });
}

/** The ACME routes' request counts per certificate (attempts, failed ones included); /metrics reads are left out. */
function perCertificate(before: Map<string, number>, after: Map<string, number>, n: number) {
  const out: Record<string, number> = {};
  let total = 0;
  for (const [route, count] of [...after.entries()].sort()) {
    const d = count - (before.get(route) ?? 0);
    if (d <= 0 || route === "/metrics") continue;
    out[route] = round(d / Math.max(1, n), 2);
    total += d;
  }
  out.total = round(total / Math.max(1, n), 2);
  return out;
}
