import { createHash } from "node:crypto";
import { StintError } from "../common/errors";
import { parseWorkloadId } from "../formats/spiffe";

/**
 * Registration entries (the SPIRE model): an entry names a SPIFFE ID and the
 * selectors a workload must have proven to obtain it. Selectors are compared
 * as exact strings, so their syntax is declared once, here, and both the
 * admin side (parseSelector) and the attestors (selectorProblem) check it.
 */

export interface RegistrationEntry {
  id: string;
  spiffeId: string;
  selectors: string[];
  dnsNames: string[];
  /** Certificate lifetime for this entry; null means the policy default. */
  ttlMs: number | null;
  createdAt: Date;
}

/** SPIFFE paths under /stint are the CA's own (its server and admin certificates). */
export const RESERVED_PATH = "/stint";

/**
 * A SPIFFE ID a workload may enroll for (an entry may name, an order may ask
 * for): in this trust domain, with a path, outside the CA's reserved paths, so
 * no entry or order can ever lead to an admin certificate. Returns the canonical URI.
 */
export function parseEnrollableId(text: string, trustDomain: string): string {
  const id = parseWorkloadId(text, trustDomain);
  if (id.path === RESERVED_PATH || id.path.startsWith(`${RESERVED_PATH}/`)) {
    throw new StintError(
      "ERR_POLICY_SPIFFE",
      `SPIFFE IDs under spiffe://${id.trustDomain}${RESERVED_PATH}/ are reserved for the CA's own certificates; choose another path`,
    );
  }
  return id.uri;
}

/** One selector kind: its fixed prefix and what may follow it. */
interface SelectorKind {
  prefix: string;
  value: RegExp;
  /** What the value must be, for messages. */
  hint: string;
}

// Kubernetes object names (DNS-1123 subdomain): namespaces are stricter labels, but a superset is safe here.
const K8S_NAME = /^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$/;
const DNS_LABEL = "[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?";
const DNS_NAME = new RegExp(`^(?:\\*\\.)?${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);

const SELECTOR_KINDS: readonly SelectorKind[] = [
  { prefix: "join_token:", value: /^[0-9a-f]{16}$/, hint: "the token id, 16 lowercase hex digits" },
  { prefix: "k8s:ns:", value: K8S_NAME, hint: "a Kubernetes namespace name" },
  { prefix: "k8s:sa:", value: K8S_NAME, hint: "a Kubernetes service account name" },
  { prefix: "k8s:pod:", value: K8S_NAME, hint: "a Kubernetes pod name" },
  { prefix: "x509pop:subject:cn:", value: /^[^\p{Cc}]{1,256}$/u, hint: "a subject common name" },
  { prefix: "x509pop:san:dns:", value: DNS_NAME, hint: "a lowercase DNS name" },
  { prefix: "x509pop:san:uri:", value: /^[\x21-\x7e]{1,2048}$/, hint: "a URI without spaces" },
  {
    prefix: "x509pop:ca:fingerprint:",
    value: /^[0-9a-f]{64}$/,
    hint: "the SHA-256 of the CA certificate's DER, 64 lowercase hex digits",
  },
];

const MAX_SELECTOR_LENGTH = 2100;

/** Why `text` is not a valid selector, or null when it is one. Never throws. */
export function selectorProblem(text: unknown): string | null {
  if (typeof text !== "string") return "a selector must be a string";
  if (text.length > MAX_SELECTOR_LENGTH) return `a selector may be at most ${MAX_SELECTOR_LENGTH} characters`;
  const shown = JSON.stringify(text.slice(0, 80));
  const kind = SELECTOR_KINDS.find((k) => text.startsWith(k.prefix));
  if (!kind) {
    const known = SELECTOR_KINDS.map((k) => `${k.prefix}<…>`).join(", ");
    return `selector ${shown} is not of a known type; selectors are "<type>:<value>", one of: ${known}`;
  }
  if (!kind.value.test(text.slice(kind.prefix.length))) {
    return `selector ${shown}: after "${kind.prefix}" comes ${kind.hint}`;
  }
  return null;
}

/** Checks a selector's syntax; `code` is ERR_CONFIG for files and ERR_MALFORMED for API requests. */
export function parseSelector(text: unknown, code: "ERR_CONFIG" | "ERR_MALFORMED" = "ERR_MALFORMED"): string {
  const problem = selectorProblem(text);
  if (problem) throw new StintError(code, problem);
  return text as string;
}

/** An entry's selector list: each checked, duplicates removed, sorted; an empty list is refused (it could never match). */
export function parseSelectors(
  list: unknown,
  code: "ERR_CONFIG" | "ERR_MALFORMED" = "ERR_MALFORMED",
): string[] {
  if (!Array.isArray(list)) throw new StintError(code, "selectors must be a list of strings");
  if (list.length === 0) {
    throw new StintError(code, "an entry needs at least one selector; an entry with none never authorizes");
  }
  return [...new Set(list.map((s) => parseSelector(s, code)))].sort();
}

/** An entry authorizes when ALL its selectors are among the produced ones; an entry with no selectors never matches. */
export function entryMatches(
  entry: Pick<RegistrationEntry, "selectors">,
  produced: readonly string[],
): boolean {
  if (entry.selectors.length === 0) return false;
  const have = new Set(produced);
  return entry.selectors.every((s) => have.has(s));
}

/**
 * The entry that authorizes `spiffeId` for these selectors, or null. When
 * several do, the most specific (most selectors) wins, then the oldest, then
 * the lowest id, so the choice (and so the TTL and DNS names) is deterministic.
 */
export function findAuthorizingEntry(
  entries: readonly RegistrationEntry[],
  spiffeId: string,
  produced: readonly string[],
): RegistrationEntry | null {
  let best: RegistrationEntry | null = null;
  for (const entry of entries) {
    if (entry.spiffeId !== spiffeId || !entryMatches(entry, produced)) continue;
    if (best === null || preferred(entry, best)) best = entry;
  }
  return best;
}

function preferred(a: RegistrationEntry, b: RegistrationEntry): boolean {
  if (a.selectors.length !== b.selectors.length) return a.selectors.length > b.selectors.length;
  if (a.createdAt.getTime() !== b.createdAt.getTime()) return a.createdAt.getTime() < b.createdAt.getTime();
  return a.id < b.id;
}

/**
 * A digest of what an entry grants at one moment: its SPIFFE ID, selectors,
 * DNS names and TTL. A certificate records it, and issuance re-reads the
 * entry in the transaction that records the certificate and refuses if the
 * digest moved, so an entry deleted or changed meanwhile never lends its grant.
 */
export function entryHash(
  entry: Pick<RegistrationEntry, "spiffeId" | "selectors" | "dnsNames" | "ttlMs">,
): string {
  const text = JSON.stringify([
    entry.spiffeId,
    [...entry.selectors].sort(),
    [...entry.dnsNames].sort(),
    entry.ttlMs,
  ]);
  return `sha256:${createHash("sha256").update(text).digest("hex")}`;
}

/** What an attestation bound a certificate to: the entry's id, and its SPIFFE ID and selectors then. */
export interface AttestedEntry {
  entryId: string;
  spiffeId: string;
  entrySelectors: readonly string[];
}

/**
 * Why `entry` (as read now) no longer grants `dnsNames` to the holder of an
 * attestation made under it, or null when it does. An entry whose SPIFFE ID
 * or selectors changed is another entry: its holders must attest again.
 */
export function entryRefusal(
  entry: RegistrationEntry | null,
  attested: AttestedEntry,
  dnsNames: readonly string[],
): string | null {
  const which = `registration entry ${attested.entryId} for ${attested.spiffeId}`;
  if (entry === null) {
    return `${which} was deleted; attest again to be authorized by an entry that exists`;
  }
  const selectors = [...new Set(attested.entrySelectors)].sort();
  if (
    entry.spiffeId !== attested.spiffeId ||
    [...new Set(entry.selectors)].sort().join("\n") !== selectors.join("\n")
  ) {
    return `${which} changed its selectors since the attestation; attest again`;
  }
  const missing = dnsNames.filter((n) => !entry.dnsNames.includes(n));
  if (missing.length > 0) return `${which} no longer lists ${missing.join(", ")}`;
  return null;
}
