// Builds the SO_PEERCRED addon from source at `npm ci` (package.json "install").
// Uses the node-gyp bundled with npm and this Node's installed headers, so
// nothing is downloaded; skips the work when the addon is newer than its sources.
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

if (process.platform !== "linux") {
  console.log("peercred: SO_PEERCRED is Linux-only; the Workload API socket will not be available");
  process.exit(0);
}

const dir = __dirname;
const addon = path.join(dir, "build", "Release", "peercred.node");
const sources = ["peercred.c", "binding.gyp"].map((f) => path.join(dir, f));
const mtime = (f) => fs.statSync(f).mtimeMs;
if (fs.existsSync(addon) && sources.every((s) => mtime(s) <= mtime(addon))) process.exit(0);

const prefix = path.resolve(path.dirname(process.execPath), "..");
const gyp =
  process.env.npm_config_node_gyp ||
  path.join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js");
const args = [gyp, "rebuild"];
// Headers installed next to this node (Debian/NodeSource: /usr/include/node) spare node-gyp a download.
if (fs.existsSync(path.join(prefix, "include", "node", "node_api.h"))) args.push(`--nodedir=${prefix}`);
try {
  execFileSync(process.execPath, args, { cwd: dir, stdio: ["ignore", "inherit", "inherit"] });
} catch {
  // Not fatal for the rest of Stint: only `stint agent --workload-api-socket` needs the addon, and it
  // refuses to start with a message saying so.
  console.warn(
    "peercred: could not build the SO_PEERCRED addon (needs gcc, make, python3 and Node's headers)",
  );
}
