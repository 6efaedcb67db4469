import { ADMIN_PATHS, type AdminJoinToken } from "../acme/admin";
import { StintError } from "../common/errors";
import { AdminClient, adminFlagOptions, adminHelp } from "./admin-client";
import { type Command, parseFlags, printJson } from "./command";

/** `stint token create`: a one-time join token and the entry it unlocks, through the admin API. */

const FLAGS = {
  "spiffe-id": { type: "string" },
  ttl: { type: "string" },
  "cert-ttl": { type: "string" },
  dns: { type: "string", multiple: true },
  json: { type: "boolean" },
} as const;

export const tokenCreate: Command = {
  name: "token create",
  summary: "create a one-time join token for one SPIFFE ID (shown once)",
  examples: [
    "stint token create --spiffe-id spiffe://stint.internal/batch",
    "stint token create --spiffe-id spiffe://stint.internal/batch --ttl 10m --cert-ttl 1h --json",
  ],
  help: () =>
    adminHelp(
      "stint token create --spiffe-id ID [--ttl 10m] [--cert-ttl 1h] [--dns NAME]... [--json] [options]",
      "Creates a join token (a one-time secret, stored only as a hash) and a registration entry whose\n" +
        "only selector is join_token:<token id>, so whoever presents the secret once may obtain a\n" +
        "certificate for the SPIFFE ID. The secret is printed once and cannot be shown again.",
      "  --spiffe-id ID             the identity the token is for (required)\n" +
        "  --ttl DURATION             how long the token may be used, e.g. 10m (default 10m, at most 24h)\n" +
        "  --cert-ttl DURATION        lifetime of the certificates issued for it (default policy.defaultTtl)\n" +
        "  --dns NAME                 a DNS name the certificates may carry; repeat for more\n" +
        "  --json                     print {id, token, spiffeId, expiresAt, entryId} as JSON",
    ),
  async run(argv) {
    const { values } = parseFlags(argv, adminFlagOptions(FLAGS));
    const spiffeId = values["spiffe-id"] as string | undefined;
    if (!spiffeId)
      throw new StintError("ERR_USAGE", "--spiffe-id is required (see stint token create --help)");
    const client = await AdminClient.fromFlags(values);
    const token = await client.post<AdminJoinToken>(ADMIN_PATHS.joinTokens, {
      spiffeId,
      ...(values.ttl ? { ttl: values.ttl } : {}),
      ...(values["cert-ttl"] ? { certTtl: values["cert-ttl"] } : {}),
      ...(values.dns ? { dnsNames: values.dns } : {}),
    });
    if (values.json) printJson(token);
    else {
      console.log(`Join token ${token.id} for ${token.spiffeId}, usable once until ${token.expiresAt}:`);
      console.log(`  ${token.token}`);
      console.log(
        `It is shown only now. Entry ${token.entryId} grants it (selector join_token:${token.id}).`,
      );
    }
    return 0;
  },
};
