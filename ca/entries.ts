import { createHash, randomBytes } from "node:crypto";
import { StintError } from "../common/errors";
import { parseWorkloadId } from "../formats/spiffe";

/**
 * Registration entries (the SPIRE model): an entry names a SPIFFE ID and the
 * selectors a workload must have proven to obtain it. Selectors are compared
 * as exact strings, so their syntax is declared once, here, and both the
 * admin side (parseSelector) and the attestors (selectorProblem) check it.
 */

/** A new registration entry id: 16 hex digits, as every entry the admin API and the console create gets. */
export const newEntryId = (): string => randomBytes(8).toString("hex");

export interface RegistrationEntry {
  id: string;
  spiffeId: string;
  selectors: string[];
  dnsNames: string[];
  /** Certificate lifetime for this entry; null means the policy default. */
  ttlMs: number | null;
  createdAt: Date;
  /** The node agent's SPIFFE ID: served only to it, through the agent API; null/absent for ordinary entries. */
  parent?: string | null;
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
// What useradd/groupadd accept (shadow-utils), which also keeps names free of separators and spaces.
const UNIX_NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,30}\$?$/;

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
  // Unix workload attestation by a node agent (the kernel's peer credentials and /proc); values as the kernel reports them.
  { prefix: "unix:uid:", value: /^(?:0|[1-9][0-9]{0,9})$/, hint: "a numeric user id" },
  { prefix: "unix:gid:", value: /^(?:0|[1-9][0-9]{0,9})$/, hint: "a numeric group id" },
  { prefix: "unix:user:", value: UNIX_NAME, hint: "a user name (letters, digits, ., _, -; at most 32)" },
  { prefix: "unix:group:", value: UNIX_NAME, hint: "a group name (letters, digits, ., _, -; at most 32)" },
  {
    prefix: "unix:path:",
    value: /^\/[^\p{Cc}]{0,4095}$/u,
    hint: "an absolute path to the executable, starting with /",
  },
  {
    prefix: "unix:sha256:",
    value: /^[0-9a-f]{64}$/,
    hint: "the SHA-256 of the executable, 64 lowercase hex digits",
  },
];

const MAX_SELECTOR_LENGTH = 4200;

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
    // A parented entry is its agent's to serve (acme/agent-api.ts): no ACME attestation ever lends it.
    if (entry.parent) continue;
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
  entry: Pick<RegistrationEntry, "spiffeId" | "selectors" | "dnsNames" | "ttlMs" | "parent">,
): string {
  // The parent only when there is one, so entries made before schema 6 keep their recorded hashes.
  const text = JSON.stringify([
    entry.spiffeId,
    [...entry.selectors].sort(),
    [...entry.dnsNames].sort(),
    entry.ttlMs,
    ...(entry.parent ? [entry.parent] : []),
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

/**
 * An entry's parent as an API request gives it (a node agent's SPIFFE ID in
 * this trust domain, or absent), checked against its selectors: unix:*
 * selectors are proven only by a node agent on the workload's host, so an
 * entry with them and no parent could never authorize anything.
 */
export function parseEntryParent(
  value: unknown,
  trustDomain: string,
  selectors: readonly string[],
): string | null {
  if (value !== undefined && value !== null && typeof value !== "string") {
    throw new StintError("ERR_MALFORMED", "parent must be a string: the node agent's SPIFFE ID");
  }
  const parent = value ? parseWorkloadId(value, trustDomain).uri : null;
  if (parent === null && selectors.some((s) => s.startsWith("unix:"))) {
    throw new StintError(
      "ERR_MALFORMED",
      "unix:* selectors are proven by a node agent: give the entry a parent (the agent's SPIFFE ID)",
    );
  }
  return parent;
}
