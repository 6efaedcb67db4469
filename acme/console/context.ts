import type { Authority } from "../../ca/authority";
import type { Published } from "../../ca/feed";
import type { WindowFractions } from "../../ca/renewal";
import type { RotationContext } from "../../ca/rotation";
import type { CaStore } from "../../ca/store/open";
import { StintError } from "../../common/errors";
import type { Logger } from "../../common/logger";
import type { Params } from "../router";
import type { ConsoleUser } from "./auth";
import type { ProgressHistory } from "./progress";
import type { ConsoleSessions } from "./sessions";

/** What the console is given by `stint ca serve`, and what each page handler gets. */

export interface ConsoleDeps {
  authority: Authority;
  store: CaStore;
  log: Logger;
  /** The revocation feed's latest snapshot; the Revocations view shows its sequence, size and age. */
  feed?: { current(): Published };
  /** Told after revocations commit, so the feed publishes them at once (as the admin API does). */
  onRevoked?: () => Promise<void>;
  /** The normal renewal window (renewal.window), for the Fleet view's late renewals; ca/renewal.ts's default when absent. */
  renewalWindow?: WindowFractions;
  /** Rotation steps run with this context (it holds the passphrase); absent, rotate is not offered. */
  rotation?: (actor: string) => RotationContext;
}

export interface ConsoleState extends ConsoleDeps {
  sessions: ConsoleSessions;
  progress: ProgressHistory;
}

export interface PageRequest {
  console: ConsoleState;
  user: ConsoleUser;
  url: URL;
  params: Params;
  now: Date;
}

/** Query parameters the page knows, each at most once (a misspelt filter must not silently show everything). */
export function query(url: URL, allowed: readonly string[]): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [name, value] of url.searchParams) {
    if (!allowed.includes(name)) {
      throw new StintError(
        "ERR_MALFORMED",
        `unknown query parameter "${name.slice(0, 40)}"; allowed: ${allowed.join(", ")}`,
      );
    }
    if (out[name] !== undefined) throw new StintError("ERR_MALFORMED", `query parameter ${name} given twice`);
    out[name] = value.trim() === "" ? undefined : value.trim();
  }
  return out;
}

/** A serial as shown anywhere (colons, upper case) in the store's form, or ERR_MALFORMED. */
export function serialParam(text: string): string {
  const hex = text.replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{2,80}$/.test(hex)) {
    throw new StintError(
      "ERR_MALFORMED",
      `"${text.slice(0, 80)}" is not a certificate serial number (hex digits)`,
    );
  }
  return hex.length % 2 === 0 ? hex : `0${hex}`;
}
