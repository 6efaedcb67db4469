import type { GeneralName, NameConstraints } from "../formats/x509";

/**
 * RFC 5280 4.2.1.10 name constraints for the name types SPIFFE paths use:
 * URI (matched on the host, which for spiffe:// is the trust domain), DNS
 * and IP. A permitted list of a type binds every name of that type; an
 * excluded subtree refuses any name inside it.
 */

type Checked = Extract<GeneralName, { type: "uri" | "dns" | "ip" }>;

const isChecked = (n: GeneralName): n is Checked => n.type === "uri" || n.type === "dns" || n.type === "ip";

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
