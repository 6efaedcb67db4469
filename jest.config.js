/** Tests run from TypeScript sources through swc; end-to-end suites spawn the built CLI in dist/. */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: { "^.+\\.ts$": ["@swc/jest", { jsc: { target: "es2022", parser: { syntax: "typescript" } } }] },
  testTimeout: 60000,
  maxWorkers: 2,
  globalSetup: "<rootDir>/test/global-setup.js",
  // The helper's default export stops the throwaway PostgreSQL the setup started.
  globalTeardown: "<rootDir>/test/helpers/postgres.ts",
};
