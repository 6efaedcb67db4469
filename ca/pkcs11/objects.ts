import * as pkcs11js from "pkcs11js";
import { StintError } from "../../common/errors";
import { ckrName, isCkr } from "./ckr";
import { PUBLIC_ATTRIBUTES, publicKeyFrom } from "./public-key";

/** Finding key objects on a session and reading their attributes. */

export type Handle = Buffer;

/** Up to `max` objects matching `template`. */
export function findObjects(
  api: pkcs11js.PKCS11,
  session: Handle,
  template: pkcs11js.Template,
  max = 2,
): Handle[] {
  api.C_FindObjectsInit(session, template);
  try {
    return api.C_FindObjects(session, max);
  } finally {
    api.C_FindObjectsFinal(session);
  }
}

export function keyTemplate(cls: number, id: Buffer | null, label: string | null): pkcs11js.Template {
  const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: cls }];
  if (id !== null) template.push({ type: pkcs11js.CKA_ID, value: id });
  if (label !== null) template.push({ type: pkcs11js.CKA_LABEL, value: label });
  return template;
}

function readAttributes(api: pkcs11js.PKCS11, session: Handle, handle: Handle, types: readonly number[]) {
  const out = new Map<number, Buffer>();
  for (const a of api.C_GetAttributeValue(
    session,
    handle,
    types.map((type) => ({ type })),
  )) {
    if (Buffer.isBuffer(a.value)) out.set(a.type, a.value);
  }
  return out;
}

/** The public key of a key object (a public key object, or an RSA private key, which carries n and e). */
export function readPublicKey(api: pkcs11js.PKCS11, session: Handle, handle: Handle) {
  const [keyType] = readAttributes(api, session, handle, [pkcs11js.CKA_KEY_TYPE]).values();
  const isEc = keyType !== undefined && Number(keyType.readBigUInt64LE(0)) === pkcs11js.CKK_EC;
  const wanted = PUBLIC_ATTRIBUTES.filter(
    (t) =>
      t === pkcs11js.CKA_KEY_TYPE ||
      (isEc
        ? t === pkcs11js.CKA_EC_PARAMS || t === pkcs11js.CKA_EC_POINT
        : t === pkcs11js.CKA_MODULUS || t === pkcs11js.CKA_PUBLIC_EXPONENT),
  );
  return publicKeyFrom(readAttributes(api, session, handle, wanted));
}

function readBool(api: pkcs11js.PKCS11, session: Handle, handle: Handle, type: number): boolean {
  const [value] = readAttributes(api, session, handle, [type]).values();
  return value !== undefined && value[0] !== 0;
}

/** How well a private key object is shut in its token (the "not extractable" check). */
export interface KeyExposure {
  sensitive: boolean;
  extractable: boolean;
  alwaysSensitive: boolean;
  neverExtractable: boolean;
  /** The attribute holding the secret: CKA_VALUE (EC) or CKA_PRIVATE_EXPONENT (RSA). */
  secretAttribute: "CKA_VALUE" | "CKA_PRIVATE_EXPONENT";
  /** What C_GetAttributeValue answered for it: the refusal (CKR_ATTRIBUTE_SENSITIVE) or "returned" if the token gave the bytes out. */
  secretRead: string;
}

export function probeExposure(api: pkcs11js.PKCS11, session: Handle, handle: Handle): KeyExposure {
  const [keyType] = readAttributes(api, session, handle, [pkcs11js.CKA_KEY_TYPE]).values();
  const isRsa = keyType !== undefined && Number(keyType.readBigUInt64LE(0)) === pkcs11js.CKK_RSA;
  const secretAttribute = isRsa ? "CKA_PRIVATE_EXPONENT" : "CKA_VALUE";
  let secretRead = "returned";
  try {
    const type = isRsa ? pkcs11js.CKA_PRIVATE_EXPONENT : pkcs11js.CKA_VALUE;
    const [value] = readAttributes(api, session, handle, [type]).values();
    value?.fill(0);
  } catch (err) {
    secretRead = ckrName(err);
  }
  return {
    sensitive: readBool(api, session, handle, pkcs11js.CKA_SENSITIVE),
    extractable: readBool(api, session, handle, pkcs11js.CKA_EXTRACTABLE),
    alwaysSensitive: readBool(api, session, handle, pkcs11js.CKA_ALWAYS_SENSITIVE),
    neverExtractable: readBool(api, session, handle, pkcs11js.CKA_NEVER_EXTRACTABLE),
    secretAttribute,
    secretRead,
  };
}

/** One line for a refused login; the PIN itself never appears. */
export function loginError(err: unknown, label: string): StintError {
  const ckr = ckrName(err);
  const token = `the PKCS#11 token "${label}"`;
  if (isCkr(err, "CKR_PIN_INCORRECT")) {
    return new StintError(
      "ERR_KEY_UNAVAILABLE",
      `${token} refused the PIN (CKR_PIN_INCORRECT); check STINT_PKCS11_PIN or the PIN file`,
    );
  }
  if (isCkr(err, "CKR_PIN_LOCKED")) {
    return new StintError(
      "ERR_KEY_UNAVAILABLE",
      `${token} is locked (CKR_PIN_LOCKED) after too many wrong PINs; its security officer must unlock it`,
    );
  }
  if (isCkr(err, "CKR_PIN_EXPIRED")) {
    return new StintError(
      "ERR_KEY_UNAVAILABLE",
      `the PIN of ${token} has expired (CKR_PIN_EXPIRED); set a new one with the token's tools`,
    );
  }
  if (isCkr(err, "CKR_PIN_INVALID", "CKR_PIN_LEN_RANGE")) {
    return new StintError(
      "ERR_KEY_UNAVAILABLE",
      `${token} refused the PIN as malformed (${ckr}); check STINT_PKCS11_PIN or the PIN file`,
    );
  }
  return new StintError("ERR_KEY_UNAVAILABLE", `cannot log in to ${token} (${ckr})`);
}
