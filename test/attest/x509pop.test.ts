import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AttestationContext } from "../../acme/attest/attestor";
import { loadX509PopConfig, X509PopAttestor } from "../../acme/attest/x509pop";
import { parseSelector } from "../../ca/entries";
import { signX509Pop, x509PopMessage } from "../../formats/x509pop";
import { type OpensslKeyType, openssl, tempDir } from "../helpers/openssl";
import { stintError } from "./helpers";

/** Certificates made by OpenSSL, the independent tool, with explicit extensions for every case. */
const dir = tempDir("stint-x509pop-");
const CONFIG = join(dir, "openssl.cnf");
writeFileSync(
  CONFIG,
  `[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ca0]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
[nc]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign
nameConstraints = critical,permitted;DNS:example.org
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth,serverAuth
subjectAltName = DNS:Node-1.Example.org,URI:spiffe://example.org/bootstrap/node-1,IP:10.0.0.1
[leaf_ke]
keyUsage = critical,keyEncipherment
[leaf_server]
extendedKeyUsage = serverAuth
[leaf_plain]
subjectAltName = DNS:plain.example.org
`,
);

const GENPKEY: Record<OpensslKeyType, string[]> = {
  "ec-p256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  "ec-p384": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
  ed25519: ["-algorithm", "ED25519"],
  "rsa-2048": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  "rsa-3072": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
  "rsa-4096": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
};

interface Made {
  keyPath: string;
  certPath: string;
  key: KeyObject;
  cert: X509Certificate;
  /** Standard base64 DER, as the evidence carries it. */
  b64: string;
}

let serial = 1;
function make(
  name: string,
  subject: string,
  section: string,
  issuer?: Made,
  keyType: OpensslKeyType = "ec-p256",
  days = 1,
): Made {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.pem`);
  openssl(["genpkey", ...GENPKEY[keyType], "-out", keyPath]);
  if (!issuer) {
    openssl([
      "req",
      "-x509",
      "-new",
      "-key",
      keyPath,
      "-subj",
      subject,
      "-days",
      "3650",
      "-config",
      CONFIG,
      "-extensions",
      section,
      "-out",
      certPath,
    ]);
  } else {
    const csrPath = join(dir, `${name}.csr`);
    openssl(["req", "-new", "-key", keyPath, "-subj", subject, "-config", CONFIG, "-out", csrPath]);
    openssl([
      "x509",
      "-req",
      "-in",
      csrPath,
      "-CA",
      issuer.certPath,
      "-CAkey",
      issuer.keyPath,
      "-set_serial",
      String(serial++),
      "-days",
      String(days),
      "-extfile",
      CONFIG,
      "-extensions",
      section,
      "-out",
      certPath,
    ]);
  }
  const cert = new X509Certificate(readFileSync(certPath));
  return {
    keyPath,
    certPath,
    key: createPrivateKey(readFileSync(keyPath)),
    cert,
    b64: cert.raw.toString("base64"),
  };
}

const root = make("root", "/CN=Bootstrap Root/O=Example", "ca");
const inter = make("inter", "/CN=Bootstrap Intermediate", "ca", root, "ec-p384", 30);
const leaf = make("leaf", "/CN=node-1", "leaf", root);
const deepLeaf = make("deep", "/CN=node-2", "leaf", inter, "ed25519");
const otherRoot = make("other", "/CN=Other Root", "ca");
const foreignLeaf = make("foreign", "/CN=node-1", "leaf", otherRoot);

// An hour in: inside every certificate's validity, including those made later by individual tests.
const NOW = new Date(Date.now() + 3_600_000);
const ctx: AttestationContext = {
  spiffeId: "spiffe://example.org/node-1",
  token: "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
  accountThumbprint: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
  account: "https://ca.test/acme/acct/1",
  now: NOW,
};
const attestor = new X509PopAttestor({ bundle: [otherRoot.cert, root.cert] });
const evidence = (chain: Made[], signer: KeyObject = chain[0].key, c = ctx) => ({
  chain: chain.map((m) => m.b64),
  signature: signX509Pop(signer, c.token, c.accountThumbprint),
});
/** OpenSSL's own SHA-256 fingerprint, to check ours independently. */
const fingerprintOf = (m: Made) =>
  openssl(["x509", "-noout", "-fingerprint", "-sha256", "-in", m.certPath])
    .split("=")[1]
    .trim()
    .replace(/:/g, "")
    .toLowerCase();

describe("x509pop: accepted proofs", () => {
  it("grants exactly CN, SANs (DNS lowercased, URI; IP ignored) and the anchoring CA fingerprint", async () => {
    const result = await attestor.attest(evidence([leaf]), ctx);
    expect(result).toEqual({
      selectors: [
        "x509pop:subject:cn:node-1",
        "x509pop:san:dns:node-1.example.org",
        "x509pop:san:uri:spiffe://example.org/bootstrap/node-1",
        `x509pop:ca:fingerprint:${fingerprintOf(root)}`,
      ],
      reusable: true,
      evidence: `x509pop:sha256:${fingerprintOf(leaf)}`,
    });
    for (const s of result.selectors) expect(parseSelector(s)).toBe(s);
  });

  it("names the presented certificate by its fingerprint, also when it refuses the proof", async () => {
    const noted: string[] = [];
    const lone = new X509PopAttestor({ bundle: [root.cert] });
    await expect(
      lone.attest(evidence([foreignLeaf]), { ...ctx, reference: (r) => noted.push(r) }),
    ).rejects.toMatchObject({ code: "ERR_ATTESTATION" });
    expect(noted).toEqual([`x509pop:sha256:${fingerprintOf(foreignLeaf)}`]);
  });

  it("follows leaf → intermediate → bootstrap CA, with or without the CA in the chain", async () => {
    for (const chain of [
      [deepLeaf, inter],
      [deepLeaf, inter, root],
    ]) {
      const result = await attestor.attest(evidence(chain), ctx);
      expect(result.selectors[0]).toBe("x509pop:subject:cn:node-2");
      expect(result.selectors.at(-1)).toBe(`x509pop:ca:fingerprint:${fingerprintOf(root)}`);
    }
  });

  it.each(["ec-p384", "rsa-2048"] as const)("verifies a %s leaf key's proof", async (keyType) => {
    const m = make(`leaf-${keyType}`, "/CN=node-3", "leaf_plain", root, keyType);
    expect((await attestor.attest(evidence([m]), ctx)).selectors).toEqual([
      "x509pop:subject:cn:node-3",
      "x509pop:san:dns:plain.example.org",
      `x509pop:ca:fingerprint:${fingerprintOf(root)}`,
    ]);
  });

  it("signs exactly stint-x509pop:<token>.<thumbprint>", () => {
    expect(x509PopMessage("tok", "thumb").toString("utf8")).toBe("stint-x509pop:tok.thumb");
  });
});

describe("x509pop: refused proofs", () => {
  const refused = (ev: unknown, message: string | RegExp, c = ctx) =>
    expect(attestor.attest(ev, c)).rejects.toEqual(stintError("ERR_ATTESTATION", message));
  const POP =
    /^proof-of-possession signature does not verify: it must be the leaf key's signature over "stint-x509pop:<challenge token>\.<account key thumbprint>" for this challenge and account$/;

  it("refuses a certificate from another CA", async () => {
    const lone = new X509PopAttestor({ bundle: [root.cert] });
    await expect(lone.attest(evidence([foreignLeaf]), ctx)).rejects.toEqual(
      stintError(
        "ERR_ATTESTATION",
        "certificate does not chain to a configured bootstrap CA (leaf issuer: CN=Other Root)",
      ),
    );
    // Naming the bootstrap CA at the end of the chain does not make it one.
    await expect(lone.attest(evidence([foreignLeaf, otherRoot]), ctx)).rejects.toEqual(
      stintError("ERR_ATTESTATION", /^certificate does not chain to a configured bootstrap CA/),
    );
    await expect(lone.attest(evidence([foreignLeaf, root]), ctx)).rejects.toEqual(
      stintError(
        "ERR_ATTESTATION",
        "certificate does not chain to a configured bootstrap CA (leaf issuer: CN=Other Root)",
      ),
    );
    await expect(attestor.attest(evidence([deepLeaf, root]), ctx)).rejects.toEqual(
      stintError(
        "ERR_ATTESTATION",
        "certificate does not chain to a configured bootstrap CA (leaf issuer: CN=Bootstrap Intermediate)",
      ),
    );
  });

  it("refuses an expired leaf, and one not yet valid", async () => {
    const later = { ...ctx, now: new Date(NOW.getTime() + 2 * 86_400_000) };
    const end = new Date(leaf.cert.validTo).toISOString();
    await refused(
      evidence([leaf], leaf.key, later),
      `certificate expired at ${end} (leaf, CN=node-1)`,
      later,
    );
    const earlier = { ...ctx, now: new Date(NOW.getTime() - 2 * 3_600_000) };
    await refused(
      evidence([leaf], leaf.key, earlier),
      /^certificate is not valid before .* \(leaf, CN=node-1\)$/,
      earlier,
    );
  });

  it("refuses a proof made for another challenge token or another account", async () => {
    await refused(evidence([leaf], leaf.key, { ...ctx, token: "another-token" }), POP);
    await refused(evidence([leaf], leaf.key, { ...ctx, accountThumbprint: "another-account" }), POP);
    await refused(evidence([leaf], deepLeaf.key), POP);
  });

  it("refuses a CA certificate as the leaf, even a bootstrap CA with its own key", async () => {
    await refused(
      evidence([inter, root]),
      "the leaf certificate (CN=Bootstrap Intermediate) is a CA certificate; x509pop needs an end-entity certificate",
    );
    await refused(
      evidence([root]),
      /^the leaf certificate \(CN=Bootstrap Root, O=Example\) is a CA certificate/,
    );
  });

  it("refuses leaves whose key usage or extended key usage exclude this use", async () => {
    const ke = make("leaf-ke", "/CN=ke", "leaf_ke", root);
    await refused(evidence([ke]), "the leaf certificate (CN=ke) key usage does not include digitalSignature");
    const server = make("leaf-server", "/CN=srv", "leaf_server", root);
    await refused(
      evidence([server]),
      "the leaf certificate (CN=srv) extended key usage does not include clientAuth",
    );
  });

  it("honours path length constraints and refuses critical name constraints rather than ignore them", async () => {
    const capped = make("capped", "/CN=Capped", "ca0", root, "ec-p256", 30);
    const below = make("below", "/CN=Below", "ca", capped, "ec-p256", 10);
    const under = make("under", "/CN=under", "leaf_plain", below);
    await refused(
      evidence([under, below, capped]),
      "intermediate 2 certificate (CN=Capped) path length constraint 0 does not allow 1 intermediate(s) below it",
    );
    const nc = make("nc", "/CN=Constrained", "nc", root, "ec-p256", 30);
    const ncLeaf = make("nc-leaf", "/CN=nc", "leaf_plain", nc);
    await refused(
      evidence([ncLeaf, nc]),
      "intermediate 1 certificate (CN=Constrained) has critical extension(s) x509pop does not process: nameConstraints (2.5.29.30)",
    );
  });

  it("refuses a chain whose links do not connect", async () => {
    await refused(
      evidence([leaf, inter]),
      "certificate chain is broken: intermediate 1 (CN=Bootstrap Intermediate) did not issue leaf (CN=node-1)",
    );
  });

  it.each([
    [
      "no chain",
      { chain: [], signature: "AAAA" },
      "x509pop evidence chain must be a list of 1 to 4 base64 DER certificates, leaf first",
    ],
    [
      "five certificates",
      { chain: Array(5).fill(leaf.b64), signature: "AAAA" },
      "x509pop evidence chain must be a list of 1 to 4 base64 DER certificates, leaf first",
    ],
    [
      "base64url in the chain",
      { chain: [leaf.cert.raw.toString("base64url")], signature: "AAAA" },
      "x509pop evidence chain[0] is not base64 (standard alphabet, padded, as in x5c)",
    ],
    [
      "a chain entry that is no certificate",
      { chain: ["AAAA"], signature: "AAAA" },
      "x509pop evidence chain[0] is not a DER X.509 certificate",
    ],
    [
      "a signature in standard base64",
      { chain: [leaf.b64], signature: "ab+/" },
      "x509pop evidence signature is not base64url",
    ],
    ["an empty signature", { chain: [leaf.b64], signature: "" }, "x509pop evidence signature is empty"],
    [
      "a missing signature",
      { chain: [leaf.b64] },
      'x509pop evidence must have exactly the members {"chain": …, "signature": …}; missing: signature',
    ],
  ])("calls evidence with %s malformed", async (_why, ev, message) => {
    await expect(attestor.attest(ev, ctx)).rejects.toEqual(stintError("ERR_MALFORMED", message));
  });
});

describe("x509pop configuration", () => {
  it("loads a bundle file of CA certificates", async () => {
    const path = join(dir, "bundle.pem");
    writeFileSync(path, readFileSync(root.certPath, "utf8") + readFileSync(otherRoot.certPath, "utf8"));
    const loaded = await loadX509PopConfig({ bundleFile: path });
    expect(loaded.bundle.map((c) => c.subject)).toEqual(["CN=Bootstrap Root\nO=Example", "CN=Other Root"]);
    expect((await new X509PopAttestor(loaded).attest(evidence([leaf]), ctx)).selectors).toHaveLength(4);
  });

  it("refuses a bundle holding a non-CA certificate, or none", async () => {
    await expect(loadX509PopConfig({ bundleFile: leaf.certPath })).rejects.toEqual(
      stintError("ERR_CONFIG", "x509pop attestor: bootstrap CA 1 (CN=node-1) is not a CA certificate"),
    );
    const empty = join(dir, "empty.pem");
    writeFileSync(empty, "nothing here\n");
    await expect(loadX509PopConfig({ bundleFile: empty })).rejects.toEqual(
      stintError(
        "ERR_CONFIG",
        /^x509pop attestor: .*empty\.pem: x509pop bootstrap CA bundle .*empty\.pem: no "CERTIFICATE" PEM block found$/,
      ),
    );
    expect(() => new X509PopAttestor({ bundle: [] })).toThrow(
      stintError("ERR_CONFIG", "x509pop attestor: the bootstrap CA bundle is empty"),
    );
  });
});
