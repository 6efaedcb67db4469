import { createPublicKey, type KeyObject } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { StintError } from "../../common/errors";
import * as der from "../../formats/der";
import { keyAlgorithmOf } from "../keys";
import type { KeyAlgorithm } from "../spki";

/** What a token key pair is made from and how its public half reads back. */

const CURVES = {
  "ec-p256": { oid: "1.2.840.10045.3.1.7", crv: "P-256", size: 32 },
  "ec-p384": { oid: "1.3.132.0.34", crv: "P-384", size: 48 },
} as const;

const RSA_BITS = { "rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096 } as const;

export interface KeyPairTemplate {
  mechanism: pkcs11js.Mechanism;
  publicTemplate: pkcs11js.Template;
  privateTemplate: pkcs11js.Template;
}

/** CKM and templates for `alg`; ERR_CONFIG for Ed25519, which SoftHSM and many HSMs do not sign with over PKCS#11 2.40. */
export function keyPairTemplate(alg: KeyAlgorithm, label: string, id: Buffer): KeyPairTemplate {
  const common = [
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: id },
  ];
  // The private half signs and nothing else, and never leaves the token.
  const privateTemplate: pkcs11js.Template = [
    ...common,
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_SIGN, value: true },
  ];
  const publicTemplate: pkcs11js.Template = [
    ...common,
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_VERIFY, value: true },
  ];
  if (alg === "ec-p256" || alg === "ec-p384") {
    return {
      mechanism: { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      publicTemplate: [...publicTemplate, { type: pkcs11js.CKA_EC_PARAMS, value: der.oid(CURVES[alg].oid) }],
      privateTemplate: [...privateTemplate, { type: pkcs11js.CKA_DERIVE, value: false }],
    };
  }
  if (alg === "rsa-2048" || alg === "rsa-3072" || alg === "rsa-4096") {
    return {
      mechanism: { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN },
      publicTemplate: [
        ...publicTemplate,
        { type: pkcs11js.CKA_MODULUS_BITS, value: RSA_BITS[alg] },
        { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
      ],
      privateTemplate: [
        ...privateTemplate,
        { type: pkcs11js.CKA_DECRYPT, value: false },
        { type: pkcs11js.CKA_UNWRAP, value: false },
      ],
    };
  }
  throw new StintError(
    "ERR_CONFIG",
    `${alg} keys are not supported in a PKCS#11 token here; use ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096`,
  );
}

/** The attributes publicKeyFrom reads from a public key object. */
export const PUBLIC_ATTRIBUTES = [
  pkcs11js.CKA_KEY_TYPE,
  pkcs11js.CKA_EC_PARAMS,
  pkcs11js.CKA_EC_POINT,
  pkcs11js.CKA_MODULUS,
  pkcs11js.CKA_PUBLIC_EXPONENT,
] as const;

function ulong(value: Buffer): number {
  return value.length >= 8 ? Number(value.readBigUInt64LE(0)) : value.readUInt32LE(0);
}

/** The EC point from CKA_EC_POINT: a DER OCTET STRING around 04||X||Y (PKCS#11 2.40), or the bare point some tokens give. */
function ecPoint(value: Buffer, size: number): Buffer {
  if (value.length === 1 + 2 * size && value[0] === 0x04) return value;
  const t = der.expectTlv(value, 0, der.Tag.OCTET_STRING, "CKA_EC_POINT");
  const point = der.contents(value, t);
  if (t.end !== value.length || point.length !== 1 + 2 * size || point[0] !== 0x04) {
    throw new StintError(
      "ERR_KEY_CORRUPT",
      "the token's CKA_EC_POINT is not an uncompressed point on the key's curve",
    );
  }
  return point;
}

const b64u = (b: Buffer) => b.toString("base64url");

/** A node KeyObject from a public key object's attributes (keyed by CKA_* number). */
export function publicKeyFrom(attrs: Map<number, Buffer>): { publicKey: KeyObject; algorithm: KeyAlgorithm } {
  const keyType = attrs.get(pkcs11js.CKA_KEY_TYPE);
  let publicKey: KeyObject;
  if (keyType && ulong(keyType) === pkcs11js.CKK_EC) {
    const params = attrs.get(pkcs11js.CKA_EC_PARAMS) ?? Buffer.alloc(0);
    const curve = Object.values(CURVES).find((c) => der.oid(c.oid).equals(params));
    if (!curve) throw new StintError("ERR_POLICY_KEY", "the token's EC key is not on P-256 or P-384");
    const point = ecPoint(attrs.get(pkcs11js.CKA_EC_POINT) ?? Buffer.alloc(0), curve.size);
    const x = point.subarray(1, 1 + curve.size);
    const y = point.subarray(1 + curve.size);
    publicKey = createPublicKey({
      key: { kty: "EC", crv: curve.crv, x: b64u(x), y: b64u(y) },
      format: "jwk",
    });
  } else if (keyType && ulong(keyType) === pkcs11js.CKK_RSA) {
    const n = attrs.get(pkcs11js.CKA_MODULUS);
    const e = attrs.get(pkcs11js.CKA_PUBLIC_EXPONENT);
    if (!n || !e) throw new StintError("ERR_KEY_CORRUPT", "the token's RSA key has no modulus or exponent");
    publicKey = createPublicKey({ key: { kty: "RSA", n: b64u(n), e: b64u(e) }, format: "jwk" });
  } else {
    throw new StintError("ERR_POLICY_KEY", "the token's key is neither EC nor RSA");
  }
  return { publicKey, algorithm: keyAlgorithmOf(publicKey) };
}

/** Bytes of the signature C_Sign writes for `alg`: r||s for ECDSA, the modulus size for RSA. */
export function signatureSize(alg: KeyAlgorithm): number {
  if (alg === "ec-p256" || alg === "ec-p384") return 2 * CURVES[alg].size;
  if (alg === "rsa-2048" || alg === "rsa-3072" || alg === "rsa-4096") return RSA_BITS[alg] / 8;
  throw new StintError("ERR_CONFIG", `${alg} keys are not supported in a PKCS#11 token here`);
}
