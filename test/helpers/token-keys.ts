import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { STINT } from "./cli";
import type { SoftHsmToken } from "./softhsm";

/**
 * What the token says about each key (ca/pkcs11 Pkcs11Token.keyExposure:
 * CKA_SENSITIVE, CKA_EXTRACTABLE, and how C_GetAttributeValue on CKA_VALUE
 * answers), asked from a child process of the built CLI's modules, so
 * SoftHSM is never loaded into the test runner's worker (one that had loaded
 * it died with SIGABRT in a later suite).
 */
export function keyExposures(token: SoftHsmToken, refs: string[]): unknown[] {
  const pkcs11 = join(STINT, "..", "..", "ca", "pkcs11");
  const script = `
    const { Pkcs11Token } = require(${JSON.stringify(pkcs11)});
    (async () => {
      const t = await Pkcs11Token.open(JSON.parse(process.env.SETTINGS));
      const out = [];
      for (const ref of JSON.parse(process.env.REFS)) out.push(await t.keyExposure(ref));
      await t.close();
      process.stdout.write(JSON.stringify(out));
    })().catch((err) => { console.error(err.message); process.exit(1); });`;
  const settings = {
    module: token.module,
    tokenLabel: token.tokenLabel,
    slot: null,
    pin: token.pin,
    sessions: 1,
  };
  const r = spawnSync(process.execPath, ["-e", script], {
    encoding: "utf8",
    env: {
      ...token.env,
      PATH: process.env.PATH ?? "",
      SETTINGS: JSON.stringify(settings),
      REFS: JSON.stringify(refs),
    },
  });
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
  return JSON.parse(r.stdout) as unknown[];
}

/** What keyExposures says of a key that never leaves its token. */
export const NOT_EXTRACTABLE = {
  sensitive: true,
  extractable: false,
  neverExtractable: true,
  secretRead: "CKR_ATTRIBUTE_SENSITIVE",
};
