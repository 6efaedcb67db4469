import { StintError } from "../../common/errors";

/**
 * RFC 7512 `pkcs11:` URIs, the reference the store records for a key in a
 * token (IssuerRecord.keyPath). We write token, object and id; we read any
 * path attributes, but only those three select anything.
 */

export interface Pkcs11Uri {
  /** The token's label (CKA_LABEL of the token), or null when the URI does not name one. */
  token: string | null;
  /** The key object's CKA_LABEL. */
  object: string | null;
  /** The key object's CKA_ID. */
  id: Buffer | null;
}

const SCHEME = "pkcs11:";
const KNOWN = new Set([
  "token",
  "object",
  "id",
  "type",
  "manufacturer",
  "model",
  "serial",
  "library-manufacturer",
  "library-description",
  "library-version",
  "slot-manufacturer",
  "slot-description",
  "slot-id",
]);

export function isPkcs11Ref(ref: string): boolean {
  return ref.slice(0, SCHEME.length).toLowerCase() === SCHEME;
}

/** Percent-encodes all but RFC 3986 unreserved characters: always valid in a path attribute. */
function encode(text: string): string {
  return Array.from(Buffer.from(text, "utf8"), (b) =>
    /[A-Za-z0-9\-._~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : pct(b),
  ).join("");
}

const pct = (b: number) => `%${b.toString(16).padStart(2, "0").toUpperCase()}`;

export function formatPkcs11Uri(uri: { token: string; object: string; id: Buffer }): string {
  const id = Array.from(uri.id, pct).join("");
  return `${SCHEME}token=${encode(uri.token)};object=${encode(uri.object)};id=${id}`;
}

function decode(value: string, ref: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === "%") {
      const hex = value.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) throw bad(ref, "a % is not followed by two hex digits");
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(c, "utf8"));
    }
  }
  return Buffer.from(bytes);
}

function bad(ref: string, why: string): StintError {
  return new StintError("ERR_CONFIG", `bad PKCS#11 key reference "${ref.slice(0, 200)}": ${why}`);
}

/** Parses the path of a `pkcs11:` URI; the query (pin-source, module-path…) is refused, since the PIN and module come from settings. */
export function parsePkcs11Uri(ref: string): Pkcs11Uri {
  if (!isPkcs11Ref(ref)) throw bad(ref, "it does not start with pkcs11:");
  const rest = ref.slice(SCHEME.length);
  if (/[?#]/.test(rest))
    throw bad(
      ref,
      "query and fragment attributes are not accepted; the PIN and module come from keys.pkcs11",
    );
  const out: Pkcs11Uri = { token: null, object: null, id: null };
  const seen = new Set<string>();
  for (const part of rest.split(";")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    if (eq <= 0) throw bad(ref, `"${part.slice(0, 40)}" is not name=value`);
    const name = part.slice(0, eq).toLowerCase();
    if (!KNOWN.has(name)) throw bad(ref, `unknown attribute "${name.slice(0, 40)}"`);
    if (seen.has(name)) throw bad(ref, `attribute "${name}" appears twice`);
    seen.add(name);
    const value = decode(part.slice(eq + 1), ref);
    if (name === "id") out.id = value;
    else if (name === "token") out.token = value.toString("utf8");
    else if (name === "object") out.object = value.toString("utf8");
  }
  if (out.id === null && out.object === null) throw bad(ref, "it names no key (no id or object attribute)");
  if (out.id !== null && out.id.length === 0) throw bad(ref, "the id is empty");
  return out;
}
