import { readFileSync } from "node:fs";
import { join } from "node:path";
import { renderReadme } from "../scripts/docs";
import { stint } from "./helpers/cli";

/** The README is generated from, and checked against, what the code declares. */

const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");

it("README's configuration table matches the declarations (run npm run docs to fix)", () => {
  expect(readme).toBe(renderReadme(readme));
});

it("README lists every command the CLI has", () => {
  const commands = [...stint(["--help"]).stdout.matchAll(/^ {2}stint (\S+(?: \S+){0,2}) {2}/gm)].map(
    (m) => m[1],
  );
  expect(commands.length).toBeGreaterThanOrEqual(4);
  for (const c of commands) expect(readme).toContain(`\`stint ${c}`);
});

it("README's first command installs and starts the CA, its second runs the tests", () => {
  const block = /## Quick start\s+```sh\n([^`]+)```/.exec(readme)?.[1].trim().split("\n") ?? [];
  expect(block[0]).toMatch(/^npm install && npm start\s/);
  expect(block[1]).toMatch(/^npm test\s/);
  const pkg = JSON.parse(readFileSync(join(__dirname, "..", "package.json"), "utf8"));
  // Its development CA is created on first run: only with --init does `ca serve` create one.
  expect(pkg.scripts.start).toContain("ca serve --init");
  // The whole suite, then the CA suites again with every CA key in SoftHSM (issue 15's matrix).
  expect(pkg.scripts.test).toBe("jest && npm run test:pkcs11");
  expect(pkg.scripts["test:pkcs11"]).toMatch(/^STINT_TEST_KEY_BACKEND=pkcs11 jest test\//);
});
