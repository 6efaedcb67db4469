import { generateKeyPairSync } from "node:crypto";
import type { Authority } from "../ca/authority";
import type { Logger } from "../common/logger";

/**
 * The CA's own HTTPS certificate, issued by its active intermediate and
 * renewed by the server itself at two thirds of its lifetime. The key lives
 * only in memory: a fresh one per certificate, never written to disk.
 */

export interface TlsMaterial {
  key: string;
  /** Leaf then intermediates. */
  cert: string;
  serial: string;
  notAfter: Date;
}

/** When to renew a certificate valid from notBefore to notAfter: at two thirds of its lifetime. */
export function renewalTime(notBefore: Date, notAfter: Date): Date {
  const life = notAfter.getTime() - notBefore.getTime();
  return new Date(notBefore.getTime() + Math.floor((life * 2) / 3));
}

/** After a failed renewal, retry soon but never later than a tenth of the time left. */
export function retryDelayMs(now: Date, notAfter: Date): number {
  return Math.max(1000, Math.min(30_000, Math.floor((notAfter.getTime() - now.getTime()) / 10)));
}

export class ServerIdentity {
  private timer: NodeJS.Timeout | null = null;
  private current: { material: TlsMaterial; install: (m: TlsMaterial) => void } | null = null;

  constructor(
    private readonly authority: Authority,
    private readonly names: readonly string[],
    private readonly ttlMs: number,
    private readonly log: Logger,
  ) {}

  async issue(now = new Date()): Promise<TlsMaterial> {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const issued = await this.authority.issueServerCertificate(
      {
        spki: publicKey.export({ format: "der", type: "spki" }),
        keyAlgorithm: "ec-p256",
        keyDescription: "EC P-256 key",
        names: this.names,
        ttlMs: this.ttlMs,
      },
      now,
    );
    return {
      key: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      cert: issued.chainPem,
      serial: issued.serial,
      notAfter: issued.notAfter,
    };
  }

  /**
   * Keeps renewing, handing each new certificate to `install`; the first is
   * `initial`. A rotation renews at once, so the server's own chain moves to
   * the new issuer (and its root) with the workloads'.
   */
  keepFresh(initial: TlsMaterial, notBefore: Date, install: (m: TlsMaterial) => void): void {
    this.schedule(renewalTime(notBefore, initial.notAfter).getTime() - Date.now(), initial, install);
    this.authority.onIssuersChanged(() => {
      if (this.current) this.schedule(0, this.current.material, this.current.install);
    });
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.current = null;
  }

  private schedule(delayMs: number, current: TlsMaterial, install: (m: TlsMaterial) => void): void {
    if (this.timer) clearTimeout(this.timer);
    this.current = { material: current, install };
    this.timer = setTimeout(
      async () => {
        const now = new Date();
        try {
          const next = await this.issue(now);
          install(next);
          this.log.info("server certificate renewed", {
            serial: next.serial,
            notAfter: next.notAfter.toISOString(),
          });
          this.schedule(renewalTime(now, next.notAfter).getTime() - Date.now(), next, install);
        } catch (err) {
          this.log.error("server certificate renewal failed; retrying", { error: err });
          this.schedule(retryDelayMs(now, current.notAfter), current, install);
        }
      },
      Math.max(0, delayMs),
    );
    this.timer.unref();
  }
}
