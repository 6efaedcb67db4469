import { isStintError, StintError } from "../common/errors";
import { parseSpiffeId, trustDomainProblem } from "../formats/spiffe";

// Which verified SPIFFE IDs may in: deny by default, allow by rule.
//   "spiffe://td/ns/prod/sa/web"   exactly this ID
//   "spiffe://td/ns/*/sa/web"      `*` is one whole path segment
//   "spiffe://td/ns/prod/**"       `**` (last only) is one or more trailing segments,
//                                  so it does not match spiffe://td/ns/prod itself
//   { trustDomain: "td" }          every ID in the trust domain
// Wildcards stand for whole segments only ("web-*" is refused) and never for
// the trust domain, so a rule cannot reach across trust domains by accident.

export type AllowRule = string | { spiffeId: string } | { trustDomain: string } | { pattern: string };

export type AuthorizeResult = { ok: true; rule: string } | { ok: false; reason: string };

export interface Authorizer {
  /** The rules in canonical text form, for logs and status pages. */
  readonly rules: readonly string[];
  /** `spiffeId` must already be verified (it comes from a validated chain). */
  check(spiffeId: string): AuthorizeResult;
}

interface Pattern {
  text: string;
  trustDomain: string;
  /** Literal segments, "*" or, last only, "**". */
  segments: string[];
}

const WILDCARD_SEGMENT = /^(\*|\*\*)$/;

/** Compiles allow rules; ERR_CONFIG with the offending rule when one is not valid. */
export function compileAllow(rules: AllowRule | readonly AllowRule[]): Authorizer {
  const list: readonly AllowRule[] = Array.isArray(rules) ? rules : [rules as AllowRule];
  const exact = new Set<string>();
  const domains = new Set<string>();
  const patterns: Pattern[] = [];
  const texts: string[] = [];
  for (const [i, rule] of list.entries()) {
    const where = `allow rule ${i + 1}`;
    if (typeof rule === "string") {
      if (rule.includes("*")) patterns.push(compilePattern(rule, where));
      else exact.add(compileExact(rule, where));
    } else if (rule && typeof rule === "object" && "trustDomain" in rule) {
      const problem = trustDomainProblem(String(rule.trustDomain));
      if (problem) throw new StintError("ERR_CONFIG", `${where}: ${problem}`);
      domains.add(rule.trustDomain);
    } else if (rule && typeof rule === "object" && "spiffeId" in rule) {
      exact.add(compileExact(rule.spiffeId, where));
    } else if (rule && typeof rule === "object" && "pattern" in rule) {
      patterns.push(compilePattern(rule.pattern, where));
    } else {
      throw new StintError(
        "ERR_CONFIG",
        `${where}: expected a SPIFFE ID or pattern string, {spiffeId}, {trustDomain} or {pattern}`,
      );
    }
  }
  texts.push(...exact, ...[...domains].map((td) => `trust domain ${td}`), ...patterns.map((p) => p.text));

  return {
    rules: texts,
    check(spiffeId: string): AuthorizeResult {
      if (exact.has(spiffeId)) return { ok: true, rule: spiffeId };
      const id = safeParse(spiffeId);
      if (id) {
        if (domains.has(id.trustDomain)) return { ok: true, rule: `trust domain ${id.trustDomain}` };
        const segments = id.path === "" ? [] : id.path.slice(1).split("/");
        const hit = patterns.find(
          (p) => p.trustDomain === id.trustDomain && segmentsMatch(p.segments, segments),
        );
        if (hit) return { ok: true, rule: hit.text };
      }
      return { ok: false, reason: `SPIFFE ID ${spiffeId} is not authorized here: no allow rule matches it` };
    },
  };
}

function safeParse(text: string): ReturnType<typeof parseSpiffeId> | null {
  try {
    return parseSpiffeId(text);
  } catch {
    return null;
  }
}

function compileExact(text: unknown, where: string): string {
  if (typeof text !== "string") throw new StintError("ERR_CONFIG", `${where}: a SPIFFE ID must be a string`);
  try {
    return parseSpiffeId(text).uri;
  } catch (err) {
    throw new StintError("ERR_CONFIG", `${where}: ${isStintError(err) ? err.message : "not a SPIFFE ID"}`);
  }
}

function compilePattern(text: unknown, where: string): Pattern {
  if (typeof text !== "string") throw new StintError("ERR_CONFIG", `${where}: a pattern must be a string`);
  const bad = (why: string): never => {
    throw new StintError("ERR_CONFIG", `${where}: pattern "${text.slice(0, 100)}" ${why}`);
  };
  if (!text.startsWith("spiffe://")) bad('must start with "spiffe://"');
  const rest = text.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (trustDomain.includes("*")) bad("has a wildcard in the trust domain; name the trust domain exactly");
  const problem = trustDomainProblem(trustDomain);
  if (problem) bad(`has a bad trust domain: ${problem}`);
  const segments = slash < 0 ? [] : rest.slice(slash + 1).split("/");
  for (const [i, seg] of segments.entries()) {
    if (seg.includes("*") && !WILDCARD_SEGMENT.test(seg)) {
      bad(`segment "${seg}" mixes "*" with other characters; wildcards stand for whole segments`);
    }
    if (seg === "**" && i !== segments.length - 1) bad('may use "**" only as its last segment');
    if (!seg.includes("*")) {
      // A literal segment must be one a SPIFFE ID can have; check it through the ID grammar.
      safeParse(`spiffe://${trustDomain}/${seg}`) ?? bad(`segment "${seg}" cannot appear in a SPIFFE ID`);
    }
  }
  return { text, trustDomain, segments };
}

function segmentsMatch(pattern: readonly string[], id: readonly string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === "**") return id.length > i;
    if (i >= id.length) return false;
    if (pattern[i] !== "*" && pattern[i] !== id[i]) return false;
  }
  return pattern.length === id.length;
}
