import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CA_CONFIG } from "../cli/ca-config";
import { renderMarkdownTable } from "../common/config";

/**
 * Regenerates the parts of README.md that come from declarations in code, so
 * the names users read never drift from the names the code accepts.
 *   npm run docs          rewrite README.md
 *   npm run docs -- --check   exit 1 if README.md is out of date
 */

const START = "<!-- generated:ca-config -->";
const END = "<!-- /generated:ca-config -->";

export function renderReadme(readme: string): string {
  const from = readme.indexOf(START);
  const to = readme.indexOf(END);
  if (from < 0 || to < from) throw new Error(`README.md lacks the ${START} … ${END} markers`);
  return readme.slice(0, from + START.length) + "\n" + renderMarkdownTable(CA_CONFIG) + readme.slice(to);
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
