import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseDuration } from "../common/duration";
import { StintError } from "../common/errors";
import { fileError } from "../common/files";
import { pemDecodeAll } from "../formats/pem";
import type { AllowRule } from "../verify/authorize";
import { openVerifier } from "../verify/open";
import { type Command, flagValue, parseFlags, printJson } from "./command";

const FLAGS = {
  bundle: { type: "string" },
  feed: { type: "string" },
  usage: { type: "string" },
  allow: { type: "string", multiple: true },
  "max-feed-age": { type: "string" },
  "feed-state": { type: "string" },
  "clock-skew": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw fileError(err, path, `read ${what}`);
  }
}

/**
 * Where `stint verify` remembers the highest feed sequence it has seen, so a
 * later run refuses an older feed (XDG Base Directory: state belongs in
 * $XDG_STATE_HOME, by default ~/.local/state).
 */
export function defaultFeedStateFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME?.startsWith("/") ? env.XDG_STATE_HOME : join(homedir(), ".local", "state");
  return join(base, "stint", "feed-state.json");
}

/** The trust domain of the leaf's SPIFFE ID, for the default allow rule. */
function trustDomainOf(leafDer: Buffer): string | null {
  const uri = new X509Certificate(leafDer).subjectAltName?.match(/URI:spiffe:\/\/([^/,\s]+)/);
  return uri?.[1] ?? null;
}

export const verify: Command = {
  name: "verify",
  summary: "check a certificate chain against the trust bundle and the revocation feed",
  examples: [
    "stint verify cert.pem --bundle bundle.pem --feed https://ca.example.com:8443",
    "stint verify cert.pem --bundle bundle.pem --feed https://ca:8443 --usage server --allow spiffe://stint.internal/web",
  ],
  help: () =>
    [
      "usage: stint verify CERT.pem --bundle BUNDLE.pem [--feed URL|FILE] [options]",
      "",
      "Validates the chain in CERT.pem (leaf first, then intermediates) as a Stint verifier does:",
      "signatures, validity, CA constraints, key usage, SPIFFE rules, the allow rules, and, with",
      "--feed, revocation. Prints the verdict and the reason; exits 0 when accepted, 1 when refused.",
      "Without --feed, revocation is not checked, and a line on stderr says so.",
      "",
      "options:",
      "  --bundle FILE              trusted roots (PEM), e.g. the agent's bundle.pem (required)",
      "  --feed URL|FILE            the CA's origin (https://ca:8443, fetches /feed) or a feed file",
      "  --usage client|server      check the leaf for client or server use (default client)",
      "  --allow RULE               a SPIFFE ID, a pattern (spiffe://td/ns/*/sa/web), or td:<trust domain>;",
      "                             repeat for more (default: any ID in the certificate's trust domain)",
      "  --max-feed-age DURATION    also refuse a feed the CA signed longer ago than this (by default the",
      "                             feed's own nextUpdate alone decides; past it every certificate is refused)",
      "  --feed-state FILE          where the highest feed sequence seen is kept, so an older feed is refused",
      "                             later (default $XDG_STATE_HOME/stint/feed-state.json, ~/.local/state/...)",
      "  --clock-skew DURATION      tolerance on validity times (default 30s)",
      "  --json                     print {ok, code, spiffeId, reason, note, revocation} as JSON;",
      '                             revocation is "checked" with --feed, else "not-checked"',
      "  -h, --help                 this help",
    ].join("\n"),
  async run(argv) {
    const parsed = parseFlags(argv, FLAGS, true);
    const positionals = parsed.positionals;
    const values = parsed.values as {
      bundle?: string;
      feed?: string;
      usage?: string;
      allow?: string[];
      "max-feed-age"?: string;
      "feed-state"?: string;
      "clock-skew"?: string;
      json?: boolean;
    };
    if (positionals.length !== 1)
      throw new StintError(
        "ERR_USAGE",
        "give exactly one certificate file: stint verify CERT.pem --bundle BUNDLE.pem",
      );
    if (!values.bundle) throw new StintError("ERR_USAGE", "--bundle is required: the trusted roots (PEM)");
    const usage = values.usage ?? "client";
    if (usage !== "client" && usage !== "server")
      throw new StintError("ERR_USAGE", "--usage is client or server");
    // Every flag is checked before any file is read: a usage mistake is reported as one.
    const maxFeedAge =
      values["max-feed-age"] === undefined
        ? undefined
        : flagValue("verify", "max-feed-age", () => parseDuration(values["max-feed-age"] as string));
    const clockSkew = flagValue("verify", "clock-skew", () => parseDuration(values["clock-skew"] ?? "30s"));
    const chainPem = await readText(positionals[0], "the certificate");
    const chain = pemDecodeAll(chainPem, "CERTIFICATE", positionals[0]);
    if (chain.length === 0) throw new StintError("ERR_PEM", `${positionals[0]} holds no certificate`);
    const bundle = await readText(values.bundle, "the trust bundle");

    const domain = trustDomainOf(chain[0]);
    const allow: AllowRule[] = (values.allow ?? []).map((r) =>
      r.startsWith("td:") ? { trustDomain: r.slice(3) } : r,
    );
    if (allow.length === 0 && domain) allow.push({ trustDomain: domain });
    const feed = values.feed
      ? /^https:\/\//.test(values.feed)
        ? { feedUrl: values.feed }
        : { feedFile: values.feed }
      : {};
    const verifier = await openVerifier({
      bundle,
      usage,
      allow,
      ...feed,
      feedStateFile: values.feed ? (values["feed-state"] ?? defaultFeedStateFile()) : undefined,
      maxFeedAge: values.feed ? maxFeedAge : undefined,
      clockSkew,
    });
    try {
      const result = verifier.verify(chain);
      // An accepted chain without a feed may still be revoked: say so, where scripts and people both see it.
      const revocation = values.feed ? "checked" : "not-checked";
      if (values.json) printJson({ ...result, revocation });
      else {
        const note = result.ok && result.note ? ` (${result.note})` : "";
        console.log(`${result.ok ? "OK" : "REFUSED"} ${result.spiffeId ?? "-"}: ${result.reason}${note}`);
        if (!values.feed) {
          console.error(
            "stint verify: revocation was not checked (no --feed); a revoked certificate would pass. " +
              "Pass --feed https://CA:PORT (or a feed file) to check it",
          );
        }
      }
      return result.ok ? 0 : 1;
    } finally {
      verifier.close();
    }
  },
};
