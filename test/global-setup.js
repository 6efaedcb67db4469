const { execFileSync } = require("node:child_process");
// Jest transpiles files required from here, so the TypeScript helper loads as is.
const { globalSetup: startPostgres } = require("./helpers/postgres");

/**
 * End-to-end suites run the built `stint` CLI, so build it once before any suite starts.
 * Store suites need a PostgreSQL server; its URL reaches the workers through the environment.
 */
module.exports = async () => {
  execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"], {
    cwd: `${__dirname}/..`,
    stdio: "inherit",
  });
  await startPostgres();
};
