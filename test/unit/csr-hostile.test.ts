import { generateKeyPairSync, sign } from "node:crypto";
import { problemFor } from "../../acme/problem";
import { buildCsr } from "../../agent/csr";
import { parseCsr } from "../../ca/csr";
import { isStintError } from "../../common/errors";
import * as der from "../../formats/der";
import { seeded } from "../../scripts/bench/seeded";
import { opensslCsr, tempDir } from "../helpers/openssl";

/**
 * Malformed CSRs are the client's fault: every structural problem is
 * ERR_BAD_CSR (400 badCSR) with a reason, never another exception (which the
 * edge would answer with 500). Each request below is built by hand with
 * formats/der.ts and signed with a real key, so the parser's structure
 * checks, not the signature, are what refuses it.
 */

const key = generateKeyPairSync("ec", { namedCurve: "P-256" });
const SPKI = key.publicKey.export({ type: "spki", format: "der" });
const ECDSA_SHA256 = der.sequence(der.oid("1.2.840.10045.4.3.2"));
const OID = {
  extensionRequest: "1.2.840.113549.1.9.14",
  challengePassword: "1.2.840.113549.1.9.7",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  rsa: "1.2.840.113549.1.1.1",
};

const sanValue = der.sequence(der.tlv(der.contextTag(6, false), Buffer.from("spiffe://example.org/web")));
const ext = (oid: string, value: Buffer, critical?: Buffer) =>
  der.sequence(der.oid(oid), ...(critical ? [critical] : []), der.octetString(value));
/** The [0] attributes holding one extensionRequest with these extensions. */
const extensionRequest = (...extensions: Buffer[]) =>
  der.explicit(0, der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(...extensions))));

interface Parts {
  infoFields?: Buffer[];
  spki?: Buffer;
  attributes?: Buffer | null;
  sigAlg?: Buffer;
  signature?: Buffer;
}

/** A request from parts, the request info signed by the P-256 key unless a signature is given. */
function csr(p: Parts = {}): Buffer {
  const attributes =
    p.attributes === undefined ? extensionRequest(ext(OID.subjectAltName, sanValue)) : p.attributes;
  const fields = p.infoFields ?? [
    der.smallInteger(0),
    der.sequence(),
    p.spki ?? SPKI,
    ...(attributes === null ? [] : [attributes]),
  ];
  const info = der.sequence(...fields);
  const signature = p.signature ?? der.bitString(sign("sha256", info, key.privateKey));
  return der.sequence(info, p.sigAlg ?? ECDSA_SHA256, signature);
}

const rsaSpki = (bits: Buffer) =>
  der.sequence(der.sequence(der.oid(OID.rsa), der.nullValue()), der.tlv(der.Tag.BIT_STRING, bits));

it("the hand-built good request parses, so each refusal below is for its one change", () => {
  expect(parseCsr(csr())).toMatchObject({ keyAlgorithm: "ec-p256", uris: ["spiffe://example.org/web"] });
  expect(parseCsr(csr({ attributes: null })).uris).toEqual([]);
  expect(parseCsr(csr({ attributes: der.explicit(0, Buffer.alloc(0)) })).uris).toEqual([]);
});

const shapes: [string, Parts, string][] = [
  // The four shapes of the 143 answers of 500 (Cannot read properties of undefined (reading 'valueStart')).
  [
    "an extensionRequest with an empty attribute set",
    { attributes: der.explicit(0, der.sequence(der.oid(OID.extensionRequest), der.set())) },
    "CSR has an attribute with an empty set of values",
  ],
  [
    "another attribute with an empty set",
    { attributes: der.explicit(0, der.sequence(der.oid(OID.challengePassword), der.set())) },
    "CSR has an attribute with an empty set of values",
  ],
  [
    "an empty extensionRequest",
    { attributes: extensionRequest() },
    "CSR has an empty extensionRequest (RFC 5280: at least one extension)",
  ],
  [
    "an empty signature algorithm identifier",
    { sigAlg: der.sequence() },
    "CSR signature algorithm is not an OID with optional parameters",
  ],
  [
    "a signature algorithm that is not a SEQUENCE",
    { sigAlg: der.oid("1.2.840.10045.4.3.2") },
    "CSR signature algorithm is not an OID with optional parameters",
  ],
  [
    "a signature algorithm SEQUENCE holding no OID",
    { sigAlg: der.sequence(der.nullValue()) },
    "CSR signature algorithm is not an OID with optional parameters",
  ],
  [
    "an empty public key algorithm identifier",
    { spki: der.sequence(der.sequence(), der.bitString(Buffer.from([4, 1, 2]))) },
    "CSR is not valid DER: SubjectPublicKeyInfo algorithm identifier is not an OID with optional parameters",
  ],
  [
    "a public key algorithm identifier that is not a SEQUENCE",
    { spki: der.sequence(der.oid(OID.rsa), der.bitString(Buffer.from([1]))) },
    "CSR is not valid DER: SubjectPublicKeyInfo is not an algorithm and a BIT STRING",
  ],
  [
    "an RSA key with no bits",
    { spki: rsaSpki(Buffer.from([0])) },
    "CSR is not valid DER: SubjectPublicKeyInfo has no public key bits",
  ],
  [
    "an RSA key with an empty BIT STRING",
    { spki: rsaSpki(Buffer.alloc(0)) },
    "CSR is not valid DER: SubjectPublicKeyInfo has no public key bits",
  ],
  [
    "an RSA key that is an empty SEQUENCE",
    { spki: rsaSpki(Buffer.concat([Buffer.from([0]), der.sequence()])) },
    "CSR is not valid DER: SubjectPublicKeyInfo RSA key is not exactly a modulus and an exponent",
  ],
  // Their neighbours: every other place the structure can be short, long or of the wrong type.
  ["attributes that are not tagged [0]", { attributes: der.set() }, "CSR attributes are not tagged [0]"],
  [
    "an attribute that is not a SEQUENCE",
    { attributes: der.explicit(0, der.oid(OID.extensionRequest)) },
    "CSR has an attribute that is not a type and a SET of values",
  ],
  [
    "an attribute without values",
    { attributes: der.explicit(0, der.sequence(der.oid(OID.extensionRequest))) },
    "CSR has an attribute that is not a type and a SET of values",
  ],
  [
    "an empty attribute",
    { attributes: der.explicit(0, der.sequence()) },
    "CSR has an attribute that is not a type and a SET of values",
  ],
  [
    "an extensionRequest value that is not a SEQUENCE",
    {
      attributes: der.explicit(
        0,
        der.sequence(der.oid(OID.extensionRequest), der.set(der.octetString(sanValue))),
      ),
    },
    "CSR extensionRequest must hold one SEQUENCE of extensions",
  ],
  [
    "two extensionRequest attributes",
    {
      attributes: der.explicit(
        0,
        Buffer.concat([
          der.sequence(
            der.oid(OID.extensionRequest),
            der.set(der.sequence(ext(OID.subjectAltName, sanValue))),
          ),
          der.sequence(
            der.oid(OID.extensionRequest),
            der.set(der.sequence(ext(OID.subjectAltName, sanValue))),
          ),
        ]),
      ),
    },
    "CSR has more than one extensionRequest attribute",
  ],
  [
    "an empty extension",
    { attributes: extensionRequest(der.sequence()) },
    "CSR has an extension that is not an OID, an optional critical flag and an OCTET STRING",
  ],
  [
    "an extension without a value",
    { attributes: extensionRequest(der.sequence(der.oid(OID.subjectAltName))) },
    "CSR has an extension that is not an OID, an optional critical flag and an OCTET STRING",
  ],
  [
    "an extension whose value is not an OCTET STRING",
    { attributes: extensionRequest(der.sequence(der.oid(OID.subjectAltName), sanValue)) },
    "CSR has an extension that is not an OID, an optional critical flag and an OCTET STRING",
  ],
  [
    "an empty critical flag",
    { attributes: extensionRequest(ext(OID.subjectAltName, sanValue, der.tlv(der.Tag.BOOLEAN))) },
    "CSR has an extension that is not an OID, an optional critical flag and an OCTET STRING",
  ],
  [
    "a repeated subjectAltName",
    { attributes: extensionRequest(ext(OID.subjectAltName, sanValue), ext(OID.subjectAltName, sanValue)) },
    "CSR repeats extension 2.5.29.17 (RFC 5280 4.2: at most one of each)",
  ],
  [
    "an empty subjectAltName",
    { attributes: extensionRequest(ext(OID.subjectAltName, der.sequence())) },
    "CSR has an empty subjectAltName (RFC 5280 4.2.1.6: at least one name)",
  ],
  [
    "an empty subjectAltName value",
    { attributes: extensionRequest(ext(OID.subjectAltName, Buffer.alloc(0))) },
    "CSR is not valid DER: truncated value",
  ],
  [
    "a subjectAltName with trailing bytes",
    { attributes: extensionRequest(ext(OID.subjectAltName, Buffer.concat([sanValue, Buffer.from([0, 0])]))) },
    "CSR subjectAltName has trailing bytes",
  ],
  [
    "an empty basicConstraints value",
    { attributes: extensionRequest(ext(OID.basicConstraints, Buffer.alloc(0))) },
    "CSR is not valid DER: truncated value",
  ],
  [
    "a basicConstraints cA flag of no octets",
    { attributes: extensionRequest(ext(OID.basicConstraints, der.sequence(der.tlv(der.Tag.BOOLEAN)))) },
    "CSR basicConstraints cA is not a one-octet BOOLEAN",
  ],
  [
    "a request info of two fields",
    { infoFields: [der.smallInteger(0), der.sequence()] },
    "CSR request info is not a version, a subject, a public key and attributes",
  ],
  [
    "a request info with a fifth field",
    {
      infoFields: [
        der.smallInteger(0),
        der.sequence(),
        SPKI,
        der.explicit(0, Buffer.alloc(0)),
        der.nullValue(),
      ],
    },
    "CSR request info is not a version, a subject, a public key and attributes",
  ],
  [
    "a subject that is not a SEQUENCE",
    { infoFields: [der.smallInteger(0), der.nullValue(), SPKI] },
    "CSR request info is not a version, a subject, a public key and attributes",
  ],
  [
    "a signature that is not a BIT STRING",
    { signature: der.octetString(Buffer.from([0, 1, 2])) },
    "CSR is not a PKCS#10 request (request info, signature algorithm, signature)",
  ],
  [
    "an empty signature",
    { signature: der.tlv(der.Tag.BIT_STRING) },
    "CSR signature does not verify with the key it carries",
  ],
  [
    "signature parameters that are not NULL",
    { sigAlg: der.sequence(der.oid("1.2.840.10045.4.3.2"), der.oid(OID.rsa)) },
    "CSR signature algorithm has parameters; none or NULL are accepted",
  ],
  [
    "an RSA signature label on an EC key",
    { sigAlg: der.sequence(der.oid("1.2.840.113549.1.1.11"), der.nullValue()) },
    "CSR signature algorithm does not fit its key (EC key on curve prime256v1)",
  ],
];

describe("each malformed shape is badCSR with its reason", () => {
  it.each(shapes)("%s", (_name, parts, message) => {
    let thrown: unknown;
    try {
      parseCsr(csr(parts));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({ code: "ERR_BAD_CSR", message });
    expect(problemFor(thrown).problem).toMatchObject({
      status: 400,
      type: "urn:ietf:params:acme:error:badCSR",
    });
  });
});

describe("truncated and bit-flipped requests", () => {
  /** Every outcome is a parsed request or ERR_BAD_CSR; anything else would be a 500 at the edge. */
  function outcome(bytes: Buffer): "parsed" | "badCSR" {
    try {
      parseCsr(bytes);
      return "parsed";
    } catch (err) {
      if (isStintError(err, "ERR_BAD_CSR")) return "badCSR";
      throw new Error(`CSR ${bytes.toString("hex")} threw ${String(err)}`);
    }
  }

  const dir = tempDir("stint-csr-fuzz-");
  const requests: [string, Buffer][] = [
    [
      "the agent's P-256 request",
      buildCsr({
        key: key.privateKey,
        spiffeId: "spiffe://example.org/web",
        dnsNames: ["web.example.org"],
        requestCa: true,
      }),
    ],
    [
      "an OpenSSL RSA-2048 request",
      opensslCsr(dir, { keyType: "rsa-2048", sans: ["DNS:a.example.org", "URI:spiffe://example.org/a"] }).der,
    ],
  ];

  it.each(requests)("%s: every truncation is badCSR", (_name, good) => {
    expect(outcome(good)).toBe("parsed");
    for (let n = 0; n < good.length; n++) expect(outcome(good.subarray(0, n))).toBe("badCSR");
  });

  it.each(requests)("%s: 3,000 bit flips are each parsed or badCSR", (_name, good) => {
    const rand = seeded(good.length);
    const seen = { parsed: 0, badCSR: 0 };
    for (let i = 0; i < 3000; i++) {
      const bytes = Buffer.from(good);
      // One to three flips; structure bytes (tags, lengths) sit early, so bias towards them.
      for (let f = 1 + Math.floor(rand() * 3); f > 0; f--) {
        const at = Math.floor(rand() ** 2 * bytes.length);
        bytes[at] ^= 1 << Math.floor(rand() * 8);
      }
      seen[outcome(bytes)]++;
    }
    expect(seen.parsed + seen.badCSR).toBe(3000);
    expect(seen.badCSR).toBeGreaterThan(0);
  });
});
