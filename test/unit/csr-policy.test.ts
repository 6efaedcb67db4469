import { generateKeyPairSync } from "node:crypto";
import { rmSync } from "node:fs";
import { parseCsr } from "../../ca/csr";
import { checkLeafRequest, type IssuancePolicy, normalizeIp } from "../../ca/policy";
import { KEY_ALGORITHMS } from "../../ca/spki";
import { type OpensslKeyType, opensslCsr, tempDir } from "../helpers/openssl";

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const policy: IssuancePolicy = {
  trustDomain: "example.org",
  defaultTtlMs: 3_600_000,
  minTtlMs: 60_000,
  maxTtlMs: 86_400_000,
  backdateMs: 30_000,
  dnsSuffixes: ["svc.example.org"],
  keyTypes: KEY_ALGORITHMS,
};
const now = new Date("2026-11-23T10:00:00.500Z");

describe("parseCsr (CSRs made by OpenSSL)", () => {
  it.each<OpensslKeyType>(["ec-p256", "ec-p384", "ed25519", "rsa-2048"])(
    "reads a %s CSR and checks its signature",
    (keyType) => {
      const { der } = opensslCsr(dir, {
        keyType,
        name: keyType,
        sans: ["URI:spiffe://example.org/web", "DNS:web.svc.example.org", "IP:10.1.2.3", "IP:2001:db8::1"],
      });
      const csr = parseCsr(der);
      expect(csr.keyAlgorithm).toBe(keyType);
      expect(csr.uris).toEqual(["spiffe://example.org/web"]);
      expect(csr.dnsNames).toEqual(["web.svc.example.org"]);
      expect(csr.ipAddresses).toEqual(["10.1.2.3", "2001:db8::1"]);
      expect(csr.requestsCa).toBe(false);
    },
  );

  it("notices a request for CA:TRUE", () => {
    const { der } = opensslCsr(dir, {
      name: "ca",
      sans: ["URI:spiffe://example.org/x"],
      extraExt: ["basicConstraints=critical,CA:TRUE"],
    });
    expect(parseCsr(der).requestsCa).toBe(true);
  });

  it("refuses a CSR whose signature does not match its key", () => {
    const { der } = opensslCsr(dir, { name: "tampered", sans: ["URI:spiffe://example.org/x"] });
    der[der.length - 5] ^= 0x01;
    expect(() => parseCsr(der)).toThrow(
      expect.objectContaining({
        code: "ERR_BAD_CSR",
        message: "CSR signature does not verify with the key it carries",
      }),
    );
  });

  it("refuses bytes that are not a CSR with a specific message", () => {
    expect(() => parseCsr(Buffer.from("not a csr"))).toThrow(
      expect.objectContaining({
        code: "ERR_BAD_CSR",
        message: expect.stringMatching(/^CSR is not valid DER/),
      }),
    );
    const { der } = opensslCsr(dir, { name: "trailing", sans: ["URI:spiffe://example.org/x"] });
    expect(() => parseCsr(Buffer.concat([der, Buffer.from([0])]))).toThrow(
      "CSR has trailing bytes after the request",
    );
  });
});

describe("issuance policy", () => {
  const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
    format: "der",
    type: "spki",
  });
  const base = {
    spiffeId: "spiffe://example.org/web",
    spki,
    keyAlgorithm: "ec-p256" as const,
    keyDescription: "EC key",
  };

  it("approves a request within policy, backdating notBefore and flooring to seconds", () => {
    const ok = checkLeafRequest(policy, { ...base, dnsNames: ["WEB.svc.example.org."] }, now);
    expect(ok.dnsNames).toEqual(["web.svc.example.org"]);
    expect(ok.notBefore.toISOString()).toBe("2026-11-23T09:59:30.000Z");
    expect(ok.notAfter.toISOString()).toBe("2026-11-23T11:00:00.000Z");
  });

  it.each([
    [
      { dnsNames: ["evil.example.com"] },
      "ERR_POLICY_DNS",
      'DNS name "evil.example.com" is outside policy (allowed suffixes: svc.example.org); add its suffix to policy.dnsSuffixes',
    ],
    [
      { dnsNames: ["*.svc.example.org"] },
      "ERR_POLICY_DNS",
      "is not a valid DNS name (wildcards are not issued)",
    ],
    [{ dnsNames: ["xsvc.example.org"] }, "ERR_POLICY_DNS", "outside policy"],
    [
      { ttlMs: 2 * 86_400_000 },
      "ERR_POLICY_TTL",
      "requested lifetime 2d is beyond the policy maximum 1d (policy.maxTtl)",
    ],
    [{ ttlMs: 1000 }, "ERR_POLICY_TTL", "is below the policy minimum"],
    [{ spiffeId: "spiffe://other.org/web" }, "ERR_POLICY_SPIFFE", "outside this CA's trust domain"],
    [{ ipAddresses: ["10.0.0.1"] }, "ERR_POLICY_IP", "IP address SANs are not issued to workloads"],
    [
      { keyAlgorithm: null, keyDescription: "EC key on curve 1.3.132.0.10" },
      "ERR_POLICY_KEY",
      "EC key on curve 1.3.132.0.10 is not allowed",
    ],
  ])("refuses %j", (change, code, message) => {
    expect(() => checkLeafRequest(policy, { ...base, ...change }, now)).toThrow(
      expect.objectContaining({ code, message: expect.stringContaining(message) }),
    );
  });

  it("says so when no DNS names are allowed at all", () => {
    expect(() =>
      checkLeafRequest({ ...policy, dnsSuffixes: [] }, { ...base, dnsNames: ["a.b"] }, now),
    ).toThrow("(none allowed)");
  });

  it("normalizes IP text so names compare as strings", () => {
    expect(normalizeIp("2001:0db8:0:0:0:0:0:1")).toBe("2001:db8::1");
    expect(normalizeIp("::1")).toBe("::1");
    expect(normalizeIp("::ffff:10.0.0.1")).toBe("::ffff:a00:1");
    expect(() => normalizeIp("300.1.1.1")).toThrow("is not an IP address");
  });
});
