import { rmSync } from "node:fs";
import { KeyUsage, OID, readCertificate } from "../../formats/x509";
import { stintError } from "../attest/helpers";
import { tempDir } from "../helpers/openssl";
import { Pki, skiPrefix } from "./pki";

/** formats/x509.ts reads what OpenSSL wrote, field by field. */

const dir = tempDir("stint-x509-facts-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pki = new Pki(dir);
const root = pki.root("root");
const inter = pki.inter("inter", root, [
  "nameConstraints = critical,permitted;URI:example.org,permitted;IP:10.0.0.0/255.0.0.0,excluded;DNS:.evil.org",
  "extendedKeyUsage = clientAuth",
]);
const leaf = pki.leaf("leaf", inter, { san: "URI:spiffe://example.org/web,DNS:web.svc.local,IP:10.1.2.3" });

it("reads an intermediate's constraints, key usage and key identifiers", () => {
  const f = readCertificate(inter.der);
  expect(f).toMatchObject({
    version: 3,
    signatureAlgorithm: "1.2.840.10045.4.3.2",
    ca: true,
    pathLen: 0,
    keyUsage: KeyUsage.keyCertSign | KeyUsage.cRLSign,
    eku: [OID.clientAuth],
    cns: ["inter"],
    notBefore: new Date(inter.cert.validFrom),
    notAfter: new Date(inter.cert.validTo),
    nameConstraints: {
      permitted: [
        { type: "uri", value: "example.org" },
        { type: "ip", value: Buffer.from([10, 0, 0, 0, 255, 0, 0, 0]) },
      ],
      excluded: [{ type: "dns", value: ".evil.org" }],
    },
  });
  expect(f.subjectKeyId?.subarray(0, 8).toString("hex")).toBe(skiPrefix(inter));
  expect(f.authorityKeyId?.subarray(0, 8).toString("hex")).toBe(skiPrefix(root));
  expect(f.issuer.equals(readCertificate(root.der).subject)).toBe(true);
  expect(f.extensions.filter((e) => e.critical).map((e) => e.oid)).toEqual([
    OID.basicConstraints,
    OID.keyUsage,
    OID.nameConstraints,
  ]);
});

it("reads a leaf's SANs in order, and its serial", () => {
  const f = readCertificate(leaf.der);
  expect(f.sans).toEqual([
    { type: "uri", value: "spiffe://example.org/web" },
    { type: "dns", value: "web.svc.local" },
    { type: "ip", value: Buffer.from([10, 1, 2, 3]) },
  ]);
  expect(f).toMatchObject({
    ca: false,
    pathLen: null,
    uris: ["spiffe://example.org/web"],
    dns: ["web.svc.local"],
  });
  expect(f.serial.toString("hex").toUpperCase()).toBe(leaf.cert.serialNumber);
});

it("refuses trailing bytes and truncation", () => {
  expect(() => readCertificate(Buffer.concat([leaf.der, Buffer.from([0])]))).toThrow(
    stintError("ERR_DER", "DER: trailing bytes after the certificate"),
  );
  expect(() => readCertificate(leaf.der.subarray(0, leaf.der.length - 1))).toThrow(
    stintError("ERR_DER", /^DER: /),
  );
});

describe("strict reading of what path validation relies on", () => {
  const leafExtLines = ["basicConstraints = critical,CA:FALSE", "keyUsage = critical,digitalSignature"];
  const withExt = (name: string, extra: string[]) =>
    pki.make(name, { issuer: inter, subject: "/O=example.org", ext: [...leafExtLines, ...extra] });

  it("keeps the signature algorithm's parameters and reads authorityInfoAccess", () => {
    const f = readCertificate(
      withExt("aia", ["authorityInfoAccess = caIssuers;URI:http://ca.example.org/i.der"]).der,
    );
    expect(f.signatureParams).toBeNull();
    expect(f.authorityInfoAccess).toEqual([
      { method: "1.3.6.1.5.5.7.48.2", location: { type: "uri", value: "http://ca.example.org/i.der" } },
    ]);
  });

  it.each([
    ["an empty subjectAltName", "subjectAltName = DER:30:00", "DER: subjectAltName is empty"],
    ["an empty extendedKeyUsage", "extendedKeyUsage = DER:30:00", "DER: extKeyUsage is empty"],
    [
      "a SAN entry that is not a GeneralName",
      "subjectAltName = DER:30:03:0c:01:41",
      "DER: tag 0xc is not a GeneralName",
    ],
  ])("refuses %s", (name, line, message) => {
    const cert = withExt(name.replace(/\W+/g, "-"), [line]);
    expect(() => readCertificate(cert.der)).toThrow(stintError("ERR_DER", message));
  });

  it("refuses a basicConstraints cA that is not a DER BOOLEAN", () => {
    const odd = pki.make("bc-bool", {
      issuer: inter,
      subject: "/O=example.org",
      ext: ["basicConstraints = critical,DER:30:03:01:01:01"],
    });
    expect(() => readCertificate(odd.der)).toThrow(
      stintError("ERR_DER", "DER: basicConstraints cA is not a DER BOOLEAN"),
    );
  });
});
