import { existsSync } from "node:fs";
import { dirname, join } from "node:path";

/**
 * The checkout's files that are not TypeScript (the protos, the native addon)
 * sit at the package root; this module runs from agent/workload in tests and
 * from dist/agent/workload when built, so it looks upward for them.
 */
export function packageFile(relative: string): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error(`${relative} is missing from the Stint installation`);
  }
}
