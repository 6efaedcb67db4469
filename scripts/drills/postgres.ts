import stopTestCluster, {
  createTestDatabase,
  globalSetup,
  type TestDatabase,
} from "../../test/helpers/postgres";

/**
 * A throwaway PostgreSQL database for a drill, from the same code the store
 * tests use (test/helpers/postgres.ts): the server in STINT_TEST_PG_URL when
 * one is given (as under jest), else a cluster of its own made with the
 * machine's PostgreSQL 15 binaries on 127.0.0.1 and removed afterwards.
 */
export async function throwawayDatabase(log: (line: string) => void): Promise<{
  db: TestDatabase;
  close(): Promise<void>;
}> {
  const adopted = process.env.STINT_TEST_PG_URL !== undefined;
  await globalSetup();
  if (!adopted) log("started a throwaway PostgreSQL 15 cluster on 127.0.0.1");
  let db: TestDatabase;
  try {
    db = await createTestDatabase();
  } catch (err) {
    await stopTestCluster();
    throw err;
  }
  return {
    db,
    close: async () => {
      await db.drop();
      // Stops only a cluster this process started; an adopted server is left running.
      await stopTestCluster();
    },
  };
}
