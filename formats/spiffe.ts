import { StintError } from "../common/errors";

/**
 * SPIFFE IDs (spiffe/spiffe standards/SPIFFE-ID.md), parsed one way for the
 * CA and the verifiers. The strict grammar matters: an ID that two parsers
 * read differently is an authorization bypass.
 */

export interface SpiffeId {
  trustDomain: string;
  /** "" or "/seg/seg"; no trailing slash, no "." or ".." segments. */
  path: string;
  /** The canonical string form, spiffe://<trustDomain><path>. */
  uri: string;
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const MAX_LENGTH = 2048;

/** Validates a trust domain name; returns a reason or undefined when fine. */
export function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return "trust domain is empty";
  if (td.length > 255) return "trust domain is longer than 255 characters";
  if (!TRUST_DOMAIN.test(td)) return `trust domain "${td}" may contain only a-z, 0-9, ".", "-" and "_"`;
  return undefined;
}

export function parseSpiffeId(text: string): SpiffeId {
  const fail = (why: string): never => {
    throw new StintError("ERR_POLICY_SPIFFE", `"${text.slice(0, 100)}" is not a SPIFFE ID: ${why}`);
  };
  if (text.length > MAX_LENGTH) fail(`longer than ${MAX_LENGTH} characters`);
  if (!text.startsWith("spiffe://")) fail('it must start with "spiffe://"');
  const rest = text.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? "" : rest.slice(slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) fail(tdProblem);
  if (path !== "") {
    const segments = path.slice(1).split("/");
    for (const seg of segments) {
      if (seg === "") fail("the path has an empty segment or a trailing slash");
      if (seg === "." || seg === "..") fail('the path may not contain "." or ".." segments');
      if (!SEGMENT.test(seg)) fail(`path segment "${seg}" may contain only A-Z, a-z, 0-9, ".", "-" and "_"`);
    }
  }
  return { trustDomain, path, uri: `spiffe://${trustDomain}${path}` };
}

/** Parses and insists the ID is in `trustDomain` with a non-empty path (workload IDs name a workload). */
export function parseWorkloadId(text: string, trustDomain: string): SpiffeId {
  const id = parseSpiffeId(text);
  if (id.trustDomain !== trustDomain) {
    throw new StintError(
      "ERR_POLICY_SPIFFE",
      `SPIFFE ID ${id.uri} is outside this CA's trust domain "${trustDomain}"`,
    );
  }
  if (id.path === "") {
    throw new StintError(
      "ERR_POLICY_SPIFFE",
      `SPIFFE ID ${id.uri} names the trust domain, not a workload; add a path`,
    );
  }
  return id;
}
