import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Debian's SoftHSM module (package softhsm2); .ci/run installs it. */
export const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";

export interface SoftHsmToken {
  /** The PKCS#11 module to load. */
  module: string;
  tokenLabel: string;
  /** The user PIN. */
  pin: string;
  soPin: string;
  /** Environment for child processes: SOFTHSM2_CONF pointing at this token's configuration. */
  env: Record<string, string>;
  /** The temp dir holding softhsm2.conf and tokens/. */
  dir: string;
  /** Where SoftHSM keeps this token's objects (directories.tokendir). */
  tokenDir: string;
  /** Points this process's SoftHSM at this token's configuration again (before opening it in-process, when a test made several). */
  activate(): void;
  cleanup(): void;
}

/**
 * The process.env native code sees. Jest gives each test file a copy of
 * process.env, so setting a variable there never reaches getenv(3) in a
 * loaded library; a core module's Function constructor belongs to the host
 * realm, where `process` is the real one.
 */
function hostEnv(): NodeJS.ProcessEnv {
  const hostFunction = readFileSync.constructor as FunctionConstructor;
  return (hostFunction("return process")() as NodeJS.Process).env;
}

/**
 * A SoftHSM token of its own for one test: its own softhsm2.conf and token
 * directory, so tests never share objects or sessions. SOFTHSM2_CONF is also
 * set for in-process use: SoftHSM reads it at C_Initialize, so a process
 * sees one token's configuration at a time (activate() switches back, to be
 * called while no Pkcs11Token is open in the process).
 */
export function softHsmToken(opts: { label?: string; pin?: string; soPin?: string } = {}): SoftHsmToken {
  const dir = mkdtempSync(join(tmpdir(), "stint-softhsm-"));
  const tokenDir = join(dir, "tokens");
  mkdirSync(tokenDir);
  const conf = join(dir, "softhsm2.conf");
  writeFileSync(
    conf,
    `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
  );
  const env = { SOFTHSM2_CONF: conf };
  const activate = () => {
    process.env.SOFTHSM2_CONF = conf;
    hostEnv().SOFTHSM2_CONF = conf;
  };
  activate();
  const tokenLabel = opts.label ?? "stint-test";
  const pin = opts.pin ?? "1234-test-pin";
  const soPin = opts.soPin ?? "so-5678-test";
  execFileSync(
    "softhsm2-util",
    ["--init-token", "--free", "--label", tokenLabel, "--pin", pin, "--so-pin", soPin],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  return {
    module: SOFTHSM_MODULE,
    tokenLabel,
    pin,
    soPin,
    env,
    dir,
    tokenDir,
    activate,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
