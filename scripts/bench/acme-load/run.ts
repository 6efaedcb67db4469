import { readFileSync } from "node:fs";
import type { Identifier } from "../../../agent/acme-client";
import { type ChallengeType, type LoadResult, type Mode, type Names, runLoad, type Target } from "./load";
import { mintJoinTokens } from "./servers";

/**
 * What a run is made of, shared by the command line (acme-load.ts) and the
 * comparison (compare.ts): its settings, the names certificates ask for and
 * the join tokens that authorize them, and the load with those settings.
 */

/** A mistake in the command line, or in a file it names: one line with the usage, exit 2. */
export class UsageError extends Error {}

export interface Settings {
  mode: Mode;
  challenge?: ChallengeType;
  count: number;
  concurrency: number;
  warmup: number;
  pollMs: number;
  dnsSuffix: string;
  http01Port: number;
  /** Sample the server's RSS every this many measured certificates (0: only at the end). */
  rssEvery: number;
  /** Makes names unique across runs against one long-lived server. */
  runId: string;
  /** Read the order before finalizing after a valid attest-01 (the agent before issue 13). */
  readOrderFirst?: boolean;
  /** --compare: the Stint build to start (another commit's dist/cli/main.js); default this one. */
  stintMain?: string;
}

export const log = (line: string) => process.stderr.write(`bench:acme: ${line}\n`);

/** DNS names for http-01: c<i>-<run>.<suffix>. */
export function dnsNames(s: Settings, http01: Map<string, string>): Names {
  return {
    challenge: "http-01",
    identifiers: (i) => [{ type: "dns", value: `c${i}-${s.runId}.${s.dnsSuffix}` }],
    http01,
  };
}

export interface JoinToken {
  spiffeId: string;
  token: string;
}

export async function mintTokens(
  s: Settings,
  dataDir: string,
  origin: string,
  trustDomain: string,
  n: number,
): Promise<JoinToken[]> {
  const ids = Array.from({ length: n }, (_, i) => `spiffe://${trustDomain}/bench/${s.runId}/${i}`);
  const tokens = await mintJoinTokens(dataDir, origin, ids, log);
  return ids.map((spiffeId, i) => ({ spiffeId, token: tokens[i] }));
}

export function tokenNames(tokens: JoinToken[], needed: number): Names {
  if (tokens.length < needed)
    throw new UsageError(`this run needs ${needed} join tokens; the tokens file has ${tokens.length}`);
  return {
    challenge: "attest-01",
    identifiers: (i): Identifier[] => [{ type: "spiffe", value: tokens[i].spiffeId }],
    joinToken: (i) => tokens[i].token,
  };
}

/** A JSON array of {spiffeId, token}, or `stint token create --json` outputs one after another. */
export function readTokens(path: string): JoinToken[] {
  const text = readText(path).trim();
  let parsed: unknown;
  try {
    // The CLI's documents are flat objects, so "}{" only ever falls between two of them.
    parsed = JSON.parse(text.startsWith("[") ? text : `[${text.replace(/}\s*{/g, "},{")}]`);
  } catch {
    throw new UsageError(
      `${path} is not a JSON array of join tokens nor \`stint token create --json\` output`,
    );
  }
  const ok = (t: unknown): t is JoinToken =>
    typeof t === "object" &&
    t !== null &&
    typeof (t as JoinToken).spiffeId === "string" &&
    typeof (t as JoinToken).token === "string";
  if (!Array.isArray(parsed) || !parsed.every(ok))
    throw new UsageError(`${path}: every join token needs "spiffeId" and "token"`);
  return parsed.map(({ spiffeId, token }) => ({ spiffeId, token }));
}

/** Certificates that need names: every one in full mode; in renew mode only each worker's first. */
export const namesNeeded = (s: Settings, mode: Mode) =>
  mode === "full" ? s.warmup + s.count : s.concurrency;

export function challengeNote(challenge: ChallengeType, pebble: boolean): string {
  if (pebble) return "http-01 with PEBBLE_VA_ALWAYS_VALID=1: pebble marks it valid without fetching";
  return challenge === "attest-01"
    ? "attest-01 with join_token: one token per certificate, made beforehand through the admin API (POST /admin/join-tokens, what `stint token create --json` does), not measured"
    : "http-01: the server fetches the key authorization from the generator's responder on 127.0.0.1";
}

/** The load of `s` against `target`. */
export function load(target: Target, s: Settings, mode: Mode, names: Names): Promise<LoadResult> {
  return runLoad({
    target,
    mode,
    names,
    concurrency: s.concurrency,
    count: s.count,
    warmup: s.warmup,
    pollMs: s.pollMs,
    rssEvery: s.rssEvery,
    readOrderFirst: s.readOrderFirst,
    log,
  });
}

export function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}
