import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { KeyAlgorithm } from "../ca/spki";
import { StintError } from "../common/errors";
import { ensureDir, fileError, writeSecretFile } from "../common/files";
import type { Logger } from "../common/logger";
import { parseSignedFeed } from "../formats/feed-envelope";
import { pemDecodeAll } from "../formats/pem";
import { openSignedFeed } from "../verify/feed";
import { AcmeClient, AcmeProblem } from "./acme-client";
import { AtomicDir } from "./atomic-dir";
import type { EvidenceProvider } from "./attestation";
import { checkMatchingPair, credentialFiles } from "./credentials";
import { CRLS_FILE, type CrlIssuer, CrlKeeper, crlIssuers } from "./crls";
import { buildCsr } from "./csr";
import type { AgentStatus } from "./health";
import { runHook, signalProcess } from "./hooks";
import { Backoff, renewalTime, retryRoundsMs } from "./schedule";
import { fetchFromCa, type Trust } from "./trust";

/**
 * The agent's work: hold a valid certificate for one SPIFFE ID in the output
 * directory, renew it before it expires, and after every switch run the
 * reload hook. `cycle()` does one pass and says when the next is due; `run()`
 * repeats it, backing off with full jitter on failure (never past the current
 * certificate's expiry) and keeping the old files until then.
 */

export interface AgentOptions {
  caUrl: string;
  spiffeId: string;
  dnsNames: readonly string[];
  stateDir: string;
  outDir: string;
  keyType: KeyAlgorithm;
  /** Fallback renewal point (fraction of the lifetime) when the CA offers no ARI window, and its jitter. */
  renewFraction: number;
  renewJitter: number;
  backoff: { baseMs: number; capMs: number };
  bundleRefreshMs: number;
  hook: { exec: string[] | null; signal: NodeJS.Signals | null; pid: number; pidFile: string };
  /** `crls`: also write crls.pem, the checked CRLs of the chain's CAs (agent/crls.ts), kept fresh. */
  output: { combined: boolean; pkcs12Password: string | null; crls: boolean };
  evidence: EvidenceProvider;
  log: Logger;
}

interface Held {
  chainPem: string;
  chain: Buffer[];
  leaf: X509Certificate;
  notBefore: Date;
  notAfter: Date;
}

const ACCOUNT_KEY_FILE = "account.key";
export const FEED_FILE = "feed.bin";
const MAX_FEED_BYTES = 16 * 1024 * 1024;
const MAX_CRL_BYTES = 4 * 1024 * 1024;
const FEED_RETRY_MS = 30_000;
/** How often an agent waiting for new evidence looks at it (a token file is one small read). */
const EVIDENCE_POLL_MS = 1000;

function newKey(type: KeyAlgorithm): KeyObject {
  switch (type) {
    case "ec-p256":
      return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    case "ec-p384":
      return generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
    case "ed25519":
      return generateKeyPairSync("ed25519").privateKey;
    case "rsa-2048":
      return generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    case "rsa-3072":
      return generateKeyPairSync("rsa", { modulusLength: 3072 }).privateKey;
    case "rsa-4096":
      return generateKeyPairSync("rsa", { modulusLength: 4096 }).privateKey;
  }
}

/** The ACME account key: made once, kept 0600 in the state directory. */
async function accountKey(stateDir: string): Promise<KeyObject> {
  const path = join(stateDir, ACCOUNT_KEY_FILE);
  try {
    return createPrivateKey(await readFile(path, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      if ((err as NodeJS.ErrnoException).code) throw fileError(err, path, "read the ACME account key");
      throw new StintError(
        "ERR_KEY_CORRUPT",
        `${path} is not a PEM private key; move it away to start a new account`,
      );
    }
  }
  const key = newKey("ec-p256");
  await writeSecretFile(path, key.export({ type: "pkcs8", format: "pem" }) as string);
  return key;
}

const isProblem = (err: unknown, type: string): boolean => err instanceof AcmeProblem && err.is(type);

export class Agent {
  readonly status: AgentStatus = {
    state: "starting",
    certificateNotAfter: null,
    spiffeId: null,
    lastRenewal: null,
    lastError: null,
    renewalsOk: 0,
    renewalsFailed: 0,
    bundleUpdatedAt: null,
    nextRenewal: null,
    crlsNextUpdate: null,
  };
  private client: AcmeClient | null = null;
  private clientRoots = "";
  /** The renewal instant picked for the held certificate and ARI window, kept so jitter does not move it on every poll. */
  private plan: { key: string; at: Date } | null = null;
  private readonly backoff: Backoff;
  /** The last verified feed envelope, written as feed.bin beside the credentials. */
  private feed: Buffer | null = null;
  private feedAttemptAt = 0;
  /** The verified feed's signer chain: the CA's active intermediate, whose CRL peers issued from it need. */
  private feedChain: Buffer[] = [];
  private readonly crls: CrlKeeper;
  /** Issuers the verified feed lists: those with unexpired certificates, which peers may still present. */
  private feedIssuerIds = new Set<string>();
  /** The CAs whose CRLs the last refresh wanted (see refreshCrls). */
  private crlIssuersWanted = new Map<string, CrlIssuer>();
  /** Whether the crls.pem already on disk (from before a restart) has been looked at. */
  private crlsAdopted = false;
  /** Whether the operator was told what to do since the agent last needed new evidence: once is enough. */
  private reattestLogged = false;
  /** When the pass after an issuance is due: the planned renewal or the next ARI poll, whichever is first. */
  private afterIssue: Date | null = null;

  private constructor(
    private readonly opts: AgentOptions,
    private readonly trust: Trust,
    private readonly out: AtomicDir,
    private readonly accountKey: KeyObject,
  ) {
    this.backoff = new Backoff({ baseMs: opts.backoff.baseMs, capMs: opts.backoff.capMs });
    this.crls = new CrlKeeper({
      fetch: (issuerId) =>
        fetchFromCa(opts.caUrl, `/crl/${issuerId}.crl`, this.trust.roots.pem, 10_000, MAX_CRL_BYTES),
      maxIntervalMs: () => this.bundleRefreshMs(),
      log: opts.log,
    });
  }

  static async open(opts: AgentOptions, trust: Trust): Promise<Agent> {
    await ensureDir(opts.stateDir, 0o700);
    const out = await AtomicDir.open(opts.outDir);
    return new Agent(opts, trust, out, await accountKey(opts.stateDir));
  }

  /**
   * One pass: refresh the bundle when due, then enroll (no valid certificate)
   * or renew (due, forced, or pulled forward by ARI). Returns when the next
   * pass is due. Throws on failure, leaving the files as they were.
   */
  async cycle(force = false): Promise<{ renewed: boolean; next: Date }> {
    const now = new Date();
    let bundleChanged = false;
    let feedChanged = false;
    const refreshDue =
      this.trust.updatedAt === null ||
      now.getTime() - this.trust.updatedAt.getTime() >= this.bundleRefreshMs();
    if (refreshDue) {
      bundleChanged = await this.trust.refresh();
      this.status.bundleUpdatedAt = this.trust.updatedAt;
    }
    // The feed is synced with the bundle (and retried soon while there is none); republishing it
    // renews the file's time, which feed-file readers take as its age.
    if (refreshDue || (this.feed === null && now.getTime() - this.feedAttemptAt >= FEED_RETRY_MS)) {
      this.feedAttemptAt = now.getTime();
      feedChanged = await this.syncFeed();
    }
    const held = await this.held();
    this.status.certificateNotAfter = held?.notAfter ?? null;
    if (held === null || held.notAfter.getTime() <= now.getTime()) {
      const why = await this.opts.evidence.unavailable();
      if (why !== null)
        throw this.reattestNeeded(
          held ? `the certificate expired at ${held.notAfter.toISOString()}, and ${why}` : why,
        );
      await this.issue(() => this.enroll());
      return { renewed: true, next: this.wakeAt(this.afterIssue ?? now) };
    }
    const { at, recheck } = await this.renewalPlan(held, now);
    if (force || at.getTime() <= now.getTime()) {
      await this.issue(() => this.renew(held));
      return { renewed: true, next: this.wakeAt(this.afterIssue ?? now) };
    }
    const crlsChanged = await this.refreshCrls(held.chain, now);
    if (bundleChanged || feedChanged || crlsChanged)
      await this.publish(held.chainPem, await this.currentKeyPem());
    // Servers load bundle.pem and crls.pem only when told to: a new root (root prepare, retire) or CRL
    // not loaded fails handshakes, and a loaded CRL past its nextUpdate refuses every peer. feed.bin
    // alone does not reload: its readers (verify/ FeedFile) watch the file.
    if (bundleChanged || crlsChanged) await this.reload();
    this.status.state = "ok";
    this.status.nextRenewal = at;
    return { renewed: false, next: this.wakeAt(new Date(Math.min(at.getTime(), recheck.getTime()))) };
  }

  /**
   * The agent's own certificate and key while valid, and the roots it trusts:
   * a node agent (agent/workload) authenticates to the CA's agent API with them.
   */
  async ownCredentials(): Promise<{ chainPem: string; keyPem: string } | null> {
    const held = await this.held();
    if (held === null || held.notAfter.getTime() <= Date.now()) return null;
    return { chainPem: held.chainPem, keyPem: await this.currentKeyPem() };
  }

  trustedRootsPem(): string {
    return this.trust.roots.pem;
  }

  /** `at`, or sooner when a CRL is due. */
  private wakeAt(at: Date): Date {
    const crlDue = this.opts.output.crls ? this.crls.nextDue() : null;
    return crlDue !== null && crlDue < at ? crlDue : at;
  }

  /**
   * Fetches the CRLs that are due for the CAs of `chain` and of the feed's
   * signer (agent/crls.ts). Never throws: a CRL that cannot be had must not
   * stop a renewal, and the last good ones are kept. Returns whether they changed.
   */
  private async refreshCrls(chain: Buffer[], now: Date): Promise<boolean> {
    if (!this.opts.output.crls) return false;
    try {
      const roots = pemDecodeAll(this.trust.roots.pem, "CERTIFICATE", "roots");
      const issuers = crlIssuers([chain, this.feedChain], roots);
      // After a rotation, peers present the old intermediate until they renew, and a CRL-checking
      // server refuses a chain through a CA whose CRL it lacks: keep the CRLs of intermediates the
      // agent has left while the feed still lists unexpired certificates of theirs.
      for (const [id, issuer] of this.crlIssuersWanted)
        if (!issuers.has(id) && this.feedIssuerIds.has(id)) issuers.set(id, issuer);
      this.crlIssuersWanted = issuers;
      if (!this.crlsAdopted) {
        this.crlsAdopted = true;
        const onDisk = (await this.out.readCurrent())?.get(CRLS_FILE);
        if (onDisk) this.crls.adopt(onDisk.toString("utf8"), issuers, now);
      }
      const changed = await this.crls.refresh(issuers, now);
      this.status.crlsNextUpdate = this.crls.earliestNextUpdate();
      return changed;
    } catch (err) {
      this.opts.log.warn("could not work out which CRLs to keep; keeping the last ones", {
        error: (err as Error).message,
      });
      return false;
    }
  }

  /** Repeats cycle() until `stop` resolves; `wake` lets SIGHUP force a renewal. */
  async run(control: {
    stopped: () => boolean;
    sleep: (ms: number) => Promise<"timeout" | "wake" | "stop">;
    forced: () => boolean;
  }): Promise<void> {
    while (!control.stopped()) {
      let waitMs: number;
      try {
        const { next } = await this.cycle(control.forced());
        this.backoff.reset();
        waitMs = Math.max(0, next.getTime() - Date.now());
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        this.status.lastError = message;
        this.status.renewalsFailed++;
        if (this.status.state !== "reattest-needed") {
          const expired =
            this.status.certificateNotAfter !== null &&
            this.status.certificateNotAfter.getTime() <= Date.now();
          this.status.state = expired || this.status.certificateNotAfter === null ? "expired" : "failing";
        }
        // Retries never wait past the current certificate's expiry; once it has expired, only the cap bounds them.
        const now = new Date();
        const notAfter = this.status.certificateNotAfter;
        waitMs = this.backoff.next(now, notAfter && notAfter > now ? notAfter : null);
        // Waiting for new evidence was logged once, with what to do; each retry need not say it again.
        const level = this.status.state === "reattest-needed" ? "debug" : "warn";
        this.opts.log[level]("renewal failed; keeping the current files and retrying", {
          error: message,
          retryInSeconds: Math.round(waitMs / 100) / 10,
          attempt: this.backoff.attempts,
          certificateNotAfter: this.status.certificateNotAfter?.toISOString() ?? null,
        });
      }
      waitMs = Math.min(waitMs, this.bundleRefreshMs());
      const woke =
        this.status.state === "reattest-needed"
          ? await this.sleepUntilEvidence(waitMs, control.sleep)
          : await control.sleep(waitMs);
      if (woke === "stop") return;
    }
  }

  /**
   * The agent cannot get a certificate with the evidence it has (the CA
   * refused the current one and the join token is spent): /health turns 503
   * with state reattest-needed, and the operator is told once what to do.
   */
  private reattestNeeded(why: string): StintError {
    this.status.state = "reattest-needed";
    if (!this.reattestLogged) {
      this.reattestLogged = true;
      this.opts.log.error("the agent needs new attestation evidence to get a certificate", {
        reason: why,
        spiffeId: this.opts.spiffeId,
      });
    }
    return new StintError("ERR_ATTESTATION", why);
  }

  /**
   * Sleeps like `sleep`, but looks at the evidence every second and wakes as
   * soon as it can attest again (a new token written to the token file), so
   * no signal or restart is needed.
   */
  private async sleepUntilEvidence(
    ms: number,
    sleep: (ms: number) => Promise<"timeout" | "wake" | "stop">,
  ): Promise<"timeout" | "wake" | "stop"> {
    const until = Date.now() + ms;
    for (;;) {
      const r = await sleep(Math.max(0, Math.min(EVIDENCE_POLL_MS, until - Date.now())));
      if (r !== "timeout") return r;
      if ((await this.opts.evidence.unavailable().catch(() => "unreadable")) === null) {
        this.opts.log.info("new attestation evidence found; attesting again");
        this.backoff.reset();
        return "wake";
      }
      if (Date.now() >= until) return "timeout";
    }
  }

  /** How often to refetch the bundle: the configured interval, or sooner if the CA's refresh hint says so. */
  private bundleRefreshMs(): number {
    return Math.min(this.opts.bundleRefreshMs, this.trust.refreshHintMs ?? Number.POSITIVE_INFINITY);
  }

  /** The certificate in the output directory, if its key matches it; anything else counts as none. */
  private async held(): Promise<Held | null> {
    const files = await this.out.readCurrent();
    const chainPem = files?.get("cert.pem")?.toString("utf8");
    const keyPem = files?.get("key.pem")?.toString("utf8");
    if (!chainPem || !keyPem) return null;
    if (!checkMatchingPair(chainPem, keyPem)) {
      this.opts.log.warn(
        "the output directory holds a certificate and key that do not match; enrolling again",
        { outDir: this.opts.outDir },
      );
      return null;
    }
    const chain = pemDecodeAll(chainPem, "CERTIFICATE", "cert.pem");
    const leaf = new X509Certificate(chain[0]);
    this.status.spiffeId = leaf.subjectAltName?.match(/URI:(spiffe:\/\/[^,\s]+)/)?.[1] ?? null;
    return { chainPem, chain, leaf, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo) };
  }

  private async currentKeyPem(): Promise<string> {
    const key = (await this.out.readCurrent())?.get("key.pem");
    if (!key) throw new StintError("ERR_FILE", `${this.opts.outDir} lost its key.pem`);
    return key.toString("utf8");
  }

  /** When to renew `held`: inside the CA's ARI window if it offers one (asked again at its Retry-After), else at the configured fraction. */
  private async renewalPlan(held: Held, now: Date): Promise<{ at: Date; recheck: Date }> {
    let window: { start: Date; end: Date } | null = null;
    let recheck = new Date(now.getTime() + this.bundleRefreshMs());
    try {
      const info = await (await this.acme()).renewalInfo(held.chain[0]);
      window = { start: info.start, end: info.end };
      // ±20% so agents enrolled together do not poll together.
      recheck = new Date(now.getTime() + info.retryAfterSeconds * 1000 * (0.8 + 0.4 * Math.random()));
    } catch (err) {
      // Not fatal: without ARI the fraction of the lifetime decides, and the CA may just be down for now.
      this.opts.log.debug("renewal information unavailable", { error: (err as Error).message });
    }
    const key = `${held.leaf.serialNumber}/${window?.start.toISOString() ?? ""}/${window?.end.toISOString() ?? ""}`;
    if (this.plan?.key !== key) {
      const at = renewalTime({
        notBefore: held.notBefore,
        notAfter: held.notAfter,
        now,
        ari: window,
        fraction: this.opts.renewFraction,
        jitter: this.opts.renewJitter,
        retryMarginMs: retryRoundsMs(this.opts.backoff),
      });
      this.plan = { key, at };
    }
    return { at: this.plan.at, recheck };
  }

  private async acme(): Promise<AcmeClient> {
    const roots = this.trust.roots.pem;
    if (this.client === null || this.clientRoots !== roots) {
      this.client?.close();
      this.client = await AcmeClient.connect({
        directoryUrl: `${this.opts.caUrl.replace(/\/$/, "")}/acme/directory`,
        ca: roots,
        accountKey: this.accountKey,
      });
      this.clientRoots = roots;
    }
    return this.client;
  }

  /** Enrollment: order, attest-01 with the configured evidence, finalize. */
  private async enroll(): Promise<{ chainPem: string; key: KeyObject }> {
    const client = await this.acme();
    if (client.accountUrl === undefined) await client.newAccount();
    const key = newKey(this.opts.keyType);
    const { spiffeId, dnsNames } = this.opts;
    const { pem } = await client.obtainCertificate({
      identifiers: [
        { type: "spiffe", value: spiffeId },
        ...dnsNames.map((value) => ({ type: "dns" as const, value })),
      ],
      csrDer: buildCsr({ key, spiffeId, dnsNames: [...dnsNames] }),
      authorize: async (_authz, challenge) => {
        const answered = await client.attest(
          challenge.url,
          this.opts.evidence.attestor,
          await this.opts.evidence.evidence(challenge.token, client.thumbprint),
        );
        // Recorded as soon as the CA accepts it: a join token is spent even if finalize fails later.
        if ((answered as { status?: string }).status === "valid") await this.opts.evidence.used();
        return answered;
      },
    });
    await this.opts.evidence.used(); // also when validation was delayed and polled

    this.opts.log.info("enrolled", { spiffeId, attestor: this.opts.evidence.attestor });
    return { chainPem: pem, key };
  }

  /** renew-with-certificate; when the CA refuses the current certificate (revoked, entry gone), attest again if the evidence allows it. */
  private async renew(held: Held): Promise<{ chainPem: string; key: KeyObject }> {
    const client = await this.acme();
    const key = newKey(this.opts.keyType);
    const currentKey = createPrivateKey(await this.currentKeyPem());
    try {
      const csr = buildCsr({ key, spiffeId: this.opts.spiffeId, dnsNames: [...this.opts.dnsNames] });
      return { chainPem: await client.renewWithCertificate(held.chain, currentKey, csr), key };
    } catch (err) {
      if (!isProblem(err, "unauthorized")) throw err;
      const why = await this.opts.evidence.unavailable();
      if (why !== null)
        throw this.reattestNeeded(
          `the CA refused to renew the current certificate (${(err as Error).message}), and ${why}`,
        );
      this.opts.log.warn("the CA refused to renew the current certificate; attesting again", {
        error: (err as Error).message,
      });
      return this.enroll();
    }
  }

  /** Gets a certificate, checks it, switches the files, runs the hook. */
  private async issue(get: () => Promise<{ chainPem: string; key: KeyObject }>): Promise<void> {
    // A try while new evidence is needed must not flip /health to healthy for its duration.
    if (this.status.state !== "reattest-needed") this.status.state = "renewing";
    const { chainPem, key } = await get();
    const keyPem = key.export({ type: "pkcs8", format: "pem" }) as string;
    this.checkChain(chainPem, keyPem);
    // A new issuer's CRL is fetched before the switch, so the set never names a CA without its CRL.
    await this.refreshCrls(pemDecodeAll(chainPem, "CERTIFICATE", "chain"), new Date());
    await this.publish(chainPem, keyPem);
    const leaf = new X509Certificate(pemDecodeAll(chainPem, "CERTIFICATE", "chain")[0]);
    this.status.state = "ok";
    this.reattestLogged = false;
    this.status.lastRenewal = new Date();
    this.status.lastError = null;
    this.status.renewalsOk++;
    this.status.certificateNotAfter = new Date(leaf.validTo);
    this.plan = null;
    const plan = await this.renewalPlan(await this.held().then((h) => h!), new Date());
    this.status.nextRenewal = plan.at;
    // Ask ARI again at its Retry-After even before the planned renewal: a revocation or taint moves the window.
    this.afterIssue = new Date(Math.min(plan.at.getTime(), plan.recheck.getTime()));
    this.opts.log.info("certificate switched", {
      serial: leaf.serialNumber.toLowerCase(),
      notAfter: leaf.validTo,
      nextRenewal: this.status.nextRenewal.toISOString(),
    });
    await this.reload();
  }

  /** What the CA sent must be a matching pair that chains to the roots the agent trusts, or nothing is written. */
  private checkChain(chainPem: string, keyPem: string): void {
    if (!checkMatchingPair(chainPem, keyPem))
      throw new StintError("ERR_BAD_CSR", "the CA returned a certificate for another key");
    const chain = pemDecodeAll(chainPem, "CERTIFICATE", "chain").map((d) => new X509Certificate(d));
    for (let i = 0; i + 1 < chain.length; i++) {
      if (!chain[i].verify(chain[i + 1].publicKey))
        throw new StintError("ERR_UNAUTHORIZED", "the CA returned a chain whose links do not verify");
    }
    const roots = pemDecodeAll(this.trust.roots.pem, "CERTIFICATE", "roots").map(
      (d) => new X509Certificate(d),
    );
    const top = chain[chain.length - 1];
    if (!roots.some((r) => top.checkIssued(r) && top.verify(r.publicKey))) {
      throw new StintError(
        "ERR_UNAUTHORIZED",
        "the CA returned a chain that does not lead to a trusted root",
      );
    }
  }

  private async publish(chainPem: string, keyPem: string): Promise<void> {
    const files = credentialFiles({
      chainPem,
      keyPem,
      bundlePem: this.trust.roots.pem,
      combined: this.opts.output.combined,
      pkcs12:
        this.opts.output.pkcs12Password === null ? undefined : { password: this.opts.output.pkcs12Password },
    });
    if (this.feed) files[FEED_FILE] = { data: this.feed, mode: 0o644 };
    const crls = this.opts.output.crls ? this.crls.pem() : null;
    if (crls !== null) files[CRLS_FILE] = { data: crls, mode: 0o644 };
    await this.out.publish(files);
  }

  /**
   * Fetches the CA's revocation feed for services that read it from the output
   * directory (verify/ FeedFile). Only a feed that verifies against the trusted
   * roots is kept; a failure keeps the last one and is not fatal.
   */
  private async syncFeed(): Promise<boolean> {
    try {
      const envelope = await fetchFromCa(
        this.opts.caUrl,
        "/feed",
        this.trust.roots.pem,
        10_000,
        MAX_FEED_BYTES,
      );
      const doc = openSignedFeed(envelope, this.trust.roots.pem, new URL(this.opts.spiffeId).host);
      if (doc.kind !== "snapshot")
        throw new StintError("ERR_MALFORMED", "the CA sent a delta for a plain GET /feed");
      this.feed = envelope;
      this.feedChain = parseSignedFeed(envelope).chain;
      this.feedIssuerIds = new Set(doc.issuers.map((i) => i.issuerId));
      return true;
    } catch (err) {
      this.opts.log.warn("could not sync the revocation feed; keeping the last one", {
        error: (err as Error).message,
      });
      return false;
    }
  }

  /** The reload hook: its outcome is logged, never fatal (the files are already switched). */
  private async reload(): Promise<void> {
    const { exec, signal, pid, pidFile } = this.opts.hook;
    if (exec) {
      const r = await runHook(exec);
      const fields = { command: exec[0], code: r.code, signal: r.signal, error: r.error };
      if (r.code === 0) this.opts.log.info("reload command ran", fields);
      else this.opts.log.warn("reload command failed", fields);
    }
    if (signal) {
      try {
        const target = await signalProcess(signal, pid > 0 ? { pid } : { pidFile });
        this.opts.log.info("reload signal sent", { signal, pid: target.pid });
      } catch (err) {
        this.opts.log.warn("reload signal failed", { signal, error: (err as Error).message });
      }
    }
  }
}
