import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createVerifier } from "../../verify/verifier";
import { stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";

/** Certificates from a real `stint ca init` + `stint ca issue` pass the verifier as both client and server. */

const dir = tempDir("stint-verify-ca-");
const env = {
  STINT_CA_PASSPHRASE: "verify test passphrase",
  STINT_DATA_DIR: join(dir, "ca"),
  STINT_TRUST_DOMAIN: "example.org",
};
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("validates a Stint-issued X509-SVID and reads its issuer id and sequence", () => {
  expect(stint(["ca", "init"], env).code).toBe(0);
  const out = join(dir, "web");
  const issued = stint(
    ["ca", "issue", "--spiffe-id", "spiffe://example.org/ns/prod/sa/web", "--out", out],
    env,
  );
  expect(issued.code).toBe(0);
  const chain = readFileSync(join(out, "cert.pem"), "utf8");
  const bundle = readFileSync(join(out, "bundle.pem"), "utf8");
  const aki = openssl(["x509", "-noout", "-ext", "authorityKeyIdentifier", "-in", join(out, "cert.pem")]);
  const akiHex = (/([0-9A-F]{2}(?::[0-9A-F]{2})+)/.exec(aki)?.[1] ?? "").replace(/:/g, "").toLowerCase();

  for (const usage of ["client", "server"] as const) {
    const result = createVerifier({ bundle, usage, allow: { trustDomain: "example.org" } }).verify(chain);
    expect(result).toMatchObject({
      ok: true,
      spiffeId: "spiffe://example.org/ns/prod/sa/web",
      issuerId: akiHex.slice(0, 16),
      sequence: expect.any(Number),
    });
  }
});
