import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

/**
 * The console's one stylesheet and one script, read from acme/console/static
 * in the package (tsc copies no .css or .js there into dist/, so they are
 * found by walking up from this module to the package root), once at start.
 */

export interface StaticFile {
  type: string;
  body: Buffer;
  etag: string;
}

const FILES = { "console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8" };

function staticDir(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, "acme", "console", "static");
    if (existsSync(join(candidate, "console.css"))) return candidate;
    if (dirname(dir) === dir) throw new Error(`acme/console/static not found above ${__dirname}`);
  }
}

export function loadStatic(): Map<string, StaticFile> {
  const dir = staticDir();
  const out = new Map<string, StaticFile>();
  for (const [name, type] of Object.entries(FILES)) {
    const body = readFileSync(join(dir, name));
    out.set(name, {
      type,
      body,
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 16)}"`,
    });
  }
  return out;
}
