import { userInfo } from "node:os";
import { CONSOLE_LOGIN_PATH, type ConsoleLogin } from "../acme/console";
import { StintError } from "../common/errors";
import { AdminClient, adminFlagOptions, adminHelp } from "./admin-client";
import { type Command, parseFlags, printJson } from "./command";

/** `stint console login`: a one-time URL into the security console, asked for with the admin certificate. */

const FLAGS = {
  user: { type: "string" },
  json: { type: "boolean" },
} as const;

function defaultUser(): string {
  try {
    return process.env.USER || userInfo().username || "admin";
  } catch {
    return "admin";
  }
}

export const consoleLogin: Command = {
  name: "console login",
  summary: "print a one-time URL that logs a browser into the security console",
  examples: ["stint console login", "stint console login --user alice --json"],
  help: () =>
    adminHelp(
      "stint console login [--user NAME] [--json] [options]",
      "Asks the CA for a one-time login code and prints the URL that trades it for a console session\n" +
        "(a cookie valid 15 minutes). The URL works once, within 2 minutes, on the server that made it.\n" +
        "Actions taken in that session are audited as console:NAME.",
      "  --user NAME                who is logging in, for the audit log (default: $USER)\n" +
        "  --json                     print {url, user, expiresAt} as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, adminFlagOptions(FLAGS));
    const user = (values.user as string | undefined) ?? defaultUser();
    if (!/^[\x21-\x7e]{1,64}$/.test(user)) {
      throw new StintError("ERR_USAGE", "--user must be 1 to 64 printable characters without spaces");
    }
    const client = await AdminClient.fromFlags(values);
    const login = await client.post<ConsoleLogin>(CONSOLE_LOGIN_PATH, { user });
    if (values.json) printJson(login);
    else {
      console.log(`Open this URL once, before ${login.expiresAt}, to log in as ${login.user}:`);
      console.log(`  ${login.url}`);
    }
    return 0;
  },
};
