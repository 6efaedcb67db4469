import type { GeneralName, NameConstraints } from "../formats/x509";

/**
 * RFC 5280 4.2.1.10 name constraints for the name types SPIFFE paths use:
 * URI (matched on the host, which for spiffe:// is the trust domain), DNS
 * and IP. A permitted list of a type binds every name of that type; an
 * excluded subtree refuses any name inside it.
 */

type Checked = Extract<GeneralName, { type: "uri" | "dns" | "ip" }>;

const isChecked = (n: GeneralName): n is Checked => n.type === "uri" || n.type === "dns" || n.type === "ip";

const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
const IPV4_LITERAL = /^\d+\.\d+\.\d+\.\d+$/;

/** Why `host` is not a host name (RFC 1034 labels; "_" allowed as SPIFFE trust domains and Go allow it), or null. */
function hostProblem(host: string): string | null {
  if (host.length === 0) return "it is empty";
  if (host.length > 253) return "it is longer than 253 characters";
  if (IPV4_LITERAL.test(host)) return "it is an IP address, not a host name";
  const bad = host.split(".").find((label) => !LABEL.test(label));
  if (bad === undefined) return null;
  return bad === ""
    ? "it has an empty label (a leading, trailing or doubled dot)"
    : `label "${bad.slice(0, 63)}" is not a DNS label`;
}

/**
 * Why a SAN is not a valid name of its type (RFC 5280 4.2.1.6), or null: a
 * dNSName is a host name, with "*" allowed as its whole leftmost label (so
 * ".example.com" is refused); an iPAddress is 4 or 16 octets.
 */
export function sanProblem(name: GeneralName): string | null {
  if (name.type === "dns") {
    const why = hostProblem(name.value.startsWith("*.") ? name.value.slice(2) : name.value);
    return why && `dNSName "${name.value.slice(0, 100)}" is not a valid DNS name: ${why}`;
  }
  if (name.type === "ip" && name.value.length !== 4 && name.value.length !== 16) {
    return `iPAddress SAN has ${name.value.length} octets; it must have 4 or 16`;
  }
  return null;
}

/**
 * Why a name constraint base is not valid for its type (RFC 5280 4.2.1.10),
 * or null. DNS: "", or a host name with an optional leading "." (as Go reads
 * it: only names below). URI: a host or, with a leading ".", a domain; never
 * a URI ("spiffe://example.org" would match nothing, so an excluded subtree
 * written that way would exclude nothing). IP: address and a contiguous
 * mask, 8 or 32 octets.
 */
export function constraintProblem(base: GeneralName): string | null {
  if (base.type === "dns" || base.type === "uri") {
    if (base.type === "dns" && base.value === "") return null;
    const host = base.value.startsWith(".") ? base.value.slice(1) : base.value;
    const why = hostProblem(host);
    const kind = base.type === "dns" ? "DNS" : "URI";
    return (
      why &&
      `${kind} name constraint "${base.value.slice(0, 100)}" is not a valid ${base.type === "dns" ? "DNS name" : "host or domain"}: ${why}`
    );
  }
  if (base.type === "ip") {
    const half = base.value.length / 2;
    if (half !== 4 && half !== 16) {
      return `IP name constraint has ${base.value.length} octets; it must have 8 or 32 (address and mask)`;
    }
    const mask = [...base.value.subarray(half)].map((b) => b.toString(2).padStart(8, "0")).join("");
    if (mask.includes("01")) return `IP name constraint ${showBase(base)} has a mask that is not contiguous`;
  }
  return null;
}

/** The first constrained name type this module does not process, or null. */
export function unsupportedConstraint(nc: NameConstraints): string | null {
  for (const n of [...nc.permitted, ...nc.excluded]) {
    if (!isChecked(n)) return n.type === "other" ? `tag 0x${n.tag.toString(16)}` : n.type;
  }
  return null;
}

/** Why `names` break `nc`, or null when they satisfy it. */
export function nameConstraintProblem(names: readonly GeneralName[], nc: NameConstraints): string | null {
  for (const name of names) {
    if (!isChecked(name)) continue;
    const permitted = nc.permitted.filter((b): b is Checked => b.type === name.type);
    const excluded = nc.excluded.filter((b): b is Checked => b.type === name.type);
    if (permitted.length === 0 && excluded.length === 0) continue;
    if (name.type === "uri" && uriHost(name.value) === null) {
      return `URI ${name.value} has no host name to check against the URI name constraints`;
    }
    if (permitted.length > 0 && !permitted.some((base) => matches(base, name))) {
      return `${show(name)} is outside the permitted ${name.type.toUpperCase()} subtrees (${permitted.map(showBase).join(", ")})`;
    }
    const hit = excluded.find((base) => matches(base, name));
    if (hit)
      return `${show(name)} is inside the excluded ${name.type.toUpperCase()} subtree ${showBase(hit)}`;
  }
  return null;
}

/** The host of a URI with an authority ("spiffe://td/..." → "td"); null without one or for IP literals. */
function uriHost(uri: string): string | null {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^@/?#]*@)?([^:/?#[\]]*)(?:[:/?#]|$)/.exec(uri);
  return m && m[1] !== "" ? m[1].toLowerCase() : null;
}

function matches(base: Checked, name: Checked): boolean {
  if (base.type === "ip" || name.type === "ip") {
    return base.type === "ip" && name.type === "ip" && ipMatches(base.value, name.value);
  }
  const b = base.value.toLowerCase();
  if (name.type === "uri") {
    // A URI base is a host, or with a leading "." any host below that domain (not the domain itself).
    const host = uriHost(name.value);
    if (host === null) return false;
    return b.startsWith(".") ? host.endsWith(b) : host === b;
  }
  const n = name.value.toLowerCase();
  if (b === "") return true;
  // A DNS base matches itself and every name below it; ".example.org" only the names below.
  return b.startsWith(".") ? n.endsWith(b) : n === b || n.endsWith(`.${b}`);
}

function ipMatches(base: Buffer, ip: Buffer): boolean {
  if (base.length !== ip.length * 2) return false;
  for (let i = 0; i < ip.length; i++) {
    const mask = base[ip.length + i];
    if ((ip[i] & mask) !== (base[i] & mask)) return false;
  }
  return true;
}

function ipText(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join(".");
  const groups: string[] = [];
  for (let i = 0; i + 1 < bytes.length; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return groups.join(":");
}

const show = (n: Checked): string =>
  n.type === "ip" ? `IP address ${ipText(n.value)}` : `${n.type === "uri" ? "URI" : "DNS name"} ${n.value}`;

function showBase(b: Checked): string {
  if (b.type !== "ip") return b.value === "" ? '""' : b.value;
  const half = b.value.length / 2;
  return `${ipText(b.value.subarray(0, half))}/${ipText(b.value.subarray(half))}`;
}
