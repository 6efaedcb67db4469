import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AGENT_CONFIG } from "../cli/agent-config";
import { CA_CONFIG } from "../cli/ca-config";
import { type ConfigDecl, renderMarkdownTable } from "../common/config";

/**
 * Regenerates the parts of README.md that come from declarations in code, so
 * the names users read never drift from the names the code accepts.
 *   npm run docs          rewrite README.md
 *   npm run docs -- --check   exit 1 if README.md is out of date
 */

/** Each generated table sits between <!-- generated:NAME --> and <!-- /generated:NAME --> markers. */
const TABLES: Record<string, readonly ConfigDecl[]> = {
  "ca-config": CA_CONFIG,
  "agent-config": AGENT_CONFIG,
};

export function renderReadme(readme: string): string {
  let out = readme;
  for (const [name, decls] of Object.entries(TABLES)) {
    const start = `<!-- generated:${name} -->`;
    const end = `<!-- /generated:${name} -->`;
    const from = out.indexOf(start);
    const to = out.indexOf(end);
    if (from < 0 || to < from) throw new Error(`README.md lacks the ${start} … ${end} markers`);
    out = out.slice(0, from + start.length) + "\n" + renderMarkdownTable(decls) + out.slice(to);
  }
  return out;
}

if (require.main === module) {
  const path = join(__dirname, "..", "..", "README.md");
  const current = readFileSync(path, "utf8");
  const wanted = renderReadme(current);
  if (process.argv.includes("--check")) {
    if (current !== wanted) {
      console.error("README.md is out of date with the config declarations; run: npm run docs");
      process.exitCode = 1;
    }
  } else if (current !== wanted) {
    writeFileSync(path, wanted);
    console.log("README.md updated");
  }
}
