import { isStintError } from "../common/errors";
import type { Logger } from "../common/logger";
import type { Registry } from "../common/metrics";
import { type Repetition, repeatEvery } from "../common/repeat";
import type { Authority } from "./authority";
import { BUNDLE_SEQUENCE, type RotationContext, revokeIssuer } from "./rotation";
import type { IssuerProgress, Store } from "./store";

/**
 * The server's side of rotation: rotation commands change the store (maybe
 * from another process or replica), and this notices, reloads the
 * authority's issuers, revokes tainted issuers whose deadline has passed, and
 * keeps /metrics showing where every issuer stands.
 */

/** The progress figures query every unexpired certificate of retired issuers: not on every poll. */
const FACTS_EVERY_MS = 5000;

export interface IssuerWatchOptions {
  authority: Authority;
  store: Store;
  log: Logger;
  metrics?: Registry;
  pollMs: number;
  /** What a deadline revocation runs as (the server's own keys and passphrase). */
  rotation: () => RotationContext;
  /** Called after the issuers changed (the feed is rebuilt for revoked issuers and the new signer). */
  onChange: () => Promise<void>;
}

export class IssuerWatch {
  private watch: Repetition | null = null;
  /** Live and unreplaced certificates of every intermediate that is not the active one, as of the last tick. */
  private progress = new Map<string, IssuerProgress>();
  private bundleSequence = 0;
  private factsAt = 0;
  private readonly changes?: ReturnType<Registry["counter"]>;

  constructor(private readonly opts: IssuerWatchOptions) {
    const m = opts.metrics;
    if (!m) return;
    this.changes = m.counter(
      "stint_issuer_changes_total",
      "Issuer changes this server has taken up (rotation, taint, revocation, root steps).",
    );
    m.gauge(
      "stint_issuer_state",
      "1 for each issuer, labelled with its kind and state.",
      ["issuer", "kind", "state"],
      (g) => {
        for (const i of opts.authority.allIssuers()) g.set(1, { issuer: i.id, kind: i.kind, state: i.state });
      },
    );
    m.gauge(
      "stint_issuer_revoked",
      "1 for each intermediate revoked with revoke-issuer.",
      ["issuer"],
      (g) => {
        for (const id of opts.authority.revokedIssuers()) g.set(1, { issuer: id });
      },
    );
    m.gauge(
      "stint_issuer_live_certificates",
      "Unexpired, unrevoked certificates of each intermediate other than the active one.",
      ["issuer"],
      (g) => {
        for (const [issuer, p] of this.progress) g.set(p.live, { issuer });
      },
    );
    m.gauge(
      "stint_issuer_unreplaced_certificates",
      "Of those, the ones whose SPIFFE ID has no newer certificate from another issuer: agents yet to move.",
      ["issuer"],
      (g) => {
        for (const [issuer, p] of this.progress) g.set(p.unreplaced, { issuer });
      },
    );
    m.callback(
      "stint_bundle_sequence",
      "Sequence number of the trust bundle served.",
      "gauge",
      () => this.bundleSequence,
    );
  }

  async start(): Promise<void> {
    await this.refreshFacts();
    this.watch = repeatEvery(
      this.opts.pollMs,
      () => this.tick(),
      (err) => this.opts.log.error("issuer reload failed; serving the previous issuers", { error: err }),
    );
  }

  stop(): void {
    this.watch?.stop();
    this.watch = null;
  }

  /** One look: reload if a rotation step happened, run due deadline revocations, refresh the figures. */
  async tick(now = new Date()): Promise<void> {
    let changed = await this.reloadAndReport();
    for (const id of this.opts.authority.taintsDue(now)) {
      try {
        const result = await revokeIssuer({ ...this.opts.rotation(), now, actor: "server" }, id, {
          force: true,
        });
        this.opts.log.warn("revoked a tainted issuer at its deadline", {
          issuer: id,
          unreplaced: result.progress.unreplaced,
          rootCrlSigned: result.rootCrlSigned,
        });
      } catch (err) {
        // Another replica got there first: the reload below shows its revocation.
        if (!isStintError(err, "ERR_ALREADY_REVOKED")) throw err;
      }
      changed = (await this.reloadAndReport()) || changed;
    }
    if (changed || now.getTime() - this.factsAt >= Math.max(this.opts.pollMs, FACTS_EVERY_MS)) {
      await this.refreshFacts(now);
    }
  }

  private async reloadAndReport(): Promise<boolean> {
    const { authority, log } = this.opts;
    const before = authority.activeIssuer.id;
    if (!(await authority.reload())) return false;
    this.changes?.inc();
    log.info("issuers changed", {
      activeIssuer: authority.activeIssuer.id,
      previousActiveIssuer: before,
      issuers: authority.allIssuers().map((i) => `${i.kind}:${i.id}:${i.state}`),
      revokedIssuers: authority.revokedIssuers(),
    });
    await this.opts.onChange();
    return true;
  }

  private async refreshFacts(now = new Date()): Promise<void> {
    const { authority, store } = this.opts;
    const progress = new Map<string, IssuerProgress>();
    for (const i of authority.allIssuers()) {
      if (i.kind !== "intermediate" || i.id === authority.activeIssuer.id || i.notAfter <= now) continue;
      progress.set(i.id, await store.issuerProgress(i.id, now));
    }
    this.progress = progress;
    this.bundleSequence = Number((await store.getMeta(BUNDLE_SEQUENCE)) ?? "1");
    this.factsAt = now.getTime();
  }
}
