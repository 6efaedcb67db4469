const { execFileSync } = require("node:child_process");

/** End-to-end suites run the built `stint` CLI, so build it once before any suite starts. */
module.exports = async () => {
  execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"], {
    cwd: `${__dirname}/..`,
    stdio: "inherit",
  });
};
