import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ConfigOf,
  configSummary,
  declareConfig,
  envName,
  flagName,
  flagOptions,
  loadConfig,
  renderHelp,
  renderMarkdownTable,
  suggest,
} from "../../common/config";
import { StintError } from "../../common/errors";

const DECLS = declareConfig([
  { key: "name", type: "string", default: "alpha", description: "A name." },
  {
    key: "retries",
    type: "int",
    default: 3,
    description: "How often.",
    validate: (v) => (v < 0 ? "must be ≥ 0" : undefined),
  },
  { key: "verbose", type: "bool", default: false, description: "Chatty." },
  {
    key: "policy.maxTtl",
    type: "duration",
    default: "24h",
    description: "Longest lifetime.",
    flag: "max-ttl",
  },
  { key: "policy.dnsSuffixes", type: "list", default: [], description: "Allowed suffixes." },
  { key: "log.level", type: "enum", enumValues: ["debug", "info"], default: "info", description: "Level." },
  {
    key: "token",
    type: "string",
    default: "",
    secret: true,
    description: "A secret.",
    validate: (v) => (v.length > 3 ? `${v} is too long` : undefined),
  },
]);
type Cfg = ConfigOf<typeof DECLS>;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "stint-config-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Runs fn and returns the thrown error, asserting it is ERR_CONFIG. */
function configError(fn: () => unknown): StintError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(StintError);
    expect((err as StintError).code).toBe("ERR_CONFIG");
    return err as StintError;
  }
  throw new Error("expected an ERR_CONFIG error");
}

describe("names", () => {
  it("generates env and flag names by the documented rule", () => {
    const d = { key: "policy.dnsSuffixes", type: "list", default: [], description: "" } as const;
    expect(envName(d)).toBe("STINT_POLICY_DNS_SUFFIXES");
    expect(flagName(d)).toBe("policy-dns-suffixes");
    expect(flagName(DECLS[3])).toBe("max-ttl");
    expect(flagName(DECLS[6])).toBeUndefined(); // secrets get no flag
    expect(envName({ ...d, env: false })).toBeUndefined();
  });

  it("gives parseArgs options for every flag", () => {
    expect(flagOptions(DECLS)).toEqual({
      name: { type: "string", multiple: false },
      retries: { type: "string", multiple: false },
      verbose: { type: "boolean" },
      "max-ttl": { type: "string", multiple: false },
      "policy-dns-suffixes": { type: "string", multiple: true },
      "log-level": { type: "string", multiple: false },
    });
  });
});

describe("declareConfig", () => {
  it.each([
    [
      [{ key: "Bad", type: "string", default: "", description: "" }],
      'config declaration "Bad": keys are dotted camelCase words',
    ],
    [
      [
        { key: "a", type: "string", default: "", description: "" },
        { key: "a", type: "string", default: "", description: "" },
      ],
      'config declaration a: key "a" is declared twice',
    ],
    [
      [
        { key: "a", type: "string", default: "", description: "" },
        { key: "b", type: "string", default: "", description: "", env: "STINT_A" },
      ],
      "config declaration b: environment variable STINT_A is declared twice",
    ],
    [
      [{ key: "a", type: "duration", default: "5", description: "" }],
      'config declaration a: default "5" is not a duration; use a number with a unit, e.g. 90s, 10m, 1h',
    ],
    [
      [{ key: "a", type: "enum", enumValues: ["x"], default: "y", description: "" }],
      'config declaration a: default "y" is not one of x',
    ],
    [
      [{ key: "a", type: "string", default: "", description: "", secret: true, flag: "a" }],
      "config declaration a: a secret may not have a flag (argv is public)",
    ],
    [
      [
        { key: "a", type: "string", default: "", description: "" },
        { key: "a.b", type: "string", default: "", description: "" },
      ],
      "config declaration a: is both a setting and a section",
    ],
  ] as const)("rejects bad declarations (%#)", (decls, message) => {
    expect(configError(() => declareConfig(decls)).message).toBe(message);
  });
});

describe("loadConfig", () => {
  const none = { env: {}, flags: {} };

  it("returns typed, frozen defaults", () => {
    const cfg: Cfg = loadConfig(DECLS, none);
    expect(cfg).toEqual({
      name: "alpha",
      retries: 3,
      verbose: false,
      "policy.maxTtl": 86_400_000,
      "policy.dnsSuffixes": [],
      "log.level": "info",
      token: "",
    });
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg["policy.dnsSuffixes"])).toBe(true);
    const level: "debug" | "info" = cfg["log.level"];
    expect(level).toBe("info");
  });

  it("applies flag > env > file > default with a YAML file", () => {
    const path = file(
      "p.yaml",
      "name: from-file\nretries: 5\npolicy:\n  maxTtl: 2h\n  dnsSuffixes: [.a.example, .b.example]\nlog:\n  level: debug\n",
    );
    const env = { STINT_RETRIES: "7", STINT_POLICY_MAX_TTL: "3h", STINT_VERBOSE: "true" };
    const flags = { "max-ttl": "90m" };
    const cfg = loadConfig(DECLS, { file: path, env, flags });
    expect(cfg).toMatchObject({
      name: "from-file",
      retries: 7,
      verbose: true,
      "policy.maxTtl": 5_400_000,
      "policy.dnsSuffixes": [".a.example", ".b.example"],
      "log.level": "debug",
    });
  });

  it("reads JSON files the same way", () => {
    const path = file("p.json", JSON.stringify({ name: "j", verbose: true, policy: { maxTtl: "10m" } }));
    const cfg = loadConfig(DECLS, { file: path, env: { STINT_NAME: "e" }, flags: {} });
    expect(cfg).toMatchObject({ name: "e", verbose: true, "policy.maxTtl": 600_000 });
  });

  it("splits lists from env and from repeated flags", () => {
    const env = { STINT_POLICY_DNS_SUFFIXES: " .a , .b ,," };
    expect(loadConfig(DECLS, { env, flags: {} })["policy.dnsSuffixes"]).toEqual([".a", ".b"]);
    const flags = { "policy-dns-suffixes": [".c", ".d,.e"] };
    expect(loadConfig(DECLS, { env, flags })["policy.dnsSuffixes"]).toEqual([".c", ".d", ".e"]);
  });

  it("treats an empty file as setting nothing", () => {
    expect(loadConfig(DECLS, { file: file("empty.yml", "# nothing\n"), ...none }).name).toBe("alpha");
  });

  it("names an unknown key and suggests the right one", () => {
    const path = file("typo.yaml", "polcy:\n  maxTtl: 1h\n");
    expect(configError(() => loadConfig(DECLS, { file: path, ...none })).message).toBe(
      `config file ${path}: unknown key "polcy.maxTtl" (did you mean "policy.maxTtl"?)`,
    );
    const flat = file("flat.yaml", "maxTtl: 1h\n");
    expect(configError(() => loadConfig(DECLS, { file: flat, ...none })).message).toBe(
      `config file ${flat}: unknown key "maxTtl" (did you mean "policy.maxTtl"?)`,
    );
    const far = file("far.yaml", "colour: red\n");
    expect(configError(() => loadConfig(DECLS, { file: far, ...none })).message).toBe(
      `config file ${far}: unknown key "colour"`,
    );
  });

  it("names the source and key of a bad value", () => {
    const path = file("bad.yaml", "policy:\n  maxTtl: abc\n");
    const hint = "is not a duration; use a number with a unit, e.g. 90s, 10m, 1h";
    expect(configError(() => loadConfig(DECLS, { file: path, ...none })).message).toBe(
      `config file ${path}: policy.maxTtl: "abc" ${hint}`,
    );
    const bare = file("bare.yaml", "policy:\n  maxTtl: 3600\n");
    expect(configError(() => loadConfig(DECLS, { file: bare, ...none })).message).toBe(
      `config file ${bare}: policy.maxTtl: 3600 ${hint}`,
    );
    expect(
      configError(() => loadConfig(DECLS, { env: { STINT_POLICY_MAX_TTL: "abc" }, flags: {} })).message,
    ).toBe(`environment STINT_POLICY_MAX_TTL: "abc" ${hint}`);
    expect(configError(() => loadConfig(DECLS, { env: {}, flags: { "max-ttl": "abc" } })).message).toBe(
      `flag --max-ttl: "abc" ${hint}`,
    );
  });

  it("checks a value even when a higher source overrides it", () => {
    const path = file("shadowed.yaml", "retries: lots\n");
    expect(
      configError(() => loadConfig(DECLS, { file: path, env: {}, flags: { retries: "2" } })).message,
    ).toBe(`config file ${path}: retries: "lots" is not a whole number`);
  });

  it.each([
    [{ STINT_RETRIES: "1.5" }, {}, 'environment STINT_RETRIES: "1.5" is not a whole number'],
    [{ STINT_RETRIES: "-1" }, {}, "environment STINT_RETRIES: must be ≥ 0"],
    [{ STINT_VERBOSE: "maybe" }, {}, 'environment STINT_VERBOSE: "maybe" is not true or false'],
    [{ STINT_LOG_LEVEL: "trace" }, {}, 'environment STINT_LOG_LEVEL: "trace" is not one of debug, info'],
    [{}, { "log-level": "trace" }, 'flag --log-level: "trace" is not one of debug, info'],
    [{}, { "max-ttl": true }, "flag --max-ttl: needs a value"],
    [{}, { name: ["a", "b"] }, "flag --name: given more than once"],
    [{}, { verbose: "sure" }, 'flag --verbose: "sure" is not true or false'],
  ])("rejects env %j flags %j", (env, flags, message) => {
    expect(configError(() => loadConfig(DECLS, { env, flags })).message).toBe(message);
  });

  it.each([
    ["types.yaml", "name: 12\n", "name: expected text, got a number (quote it)"],
    ["types2.yaml", "verbose: [1]\n", "verbose: a list is not true or false"],
    ["types2b.yaml", "retries: {a: 1}\n", "retries: a mapping is not a whole number"],
    [
      "types2c.yaml",
      "policy:\n  maxTtl: true\n",
      "policy.maxTtl: true is not a duration; use a number with a unit, e.g. 90s, 10m, 1h",
    ],
    [
      "types2d.yaml",
      "policy:\n  maxTtl:\n",
      "policy.maxTtl: an empty value is not a duration; use a number with a unit, e.g. 90s, 10m, 1h",
    ],
    ["types3.yaml", "policy:\n  dnsSuffixes: [1]\n", "policy.dnsSuffixes: item 1 is a number, not text"],
    ["types4.yaml", "policy: 5\n", "policy must be a mapping of policy.* settings, not a number"],
    ["types5.yaml", "- a\n", "the top level must be a mapping of keys to values"],
    ["types6.yaml", "name: a\nname: b\n", "line 2: Map keys must be unique"],
    [
      "types7.yaml",
      "name: [a\n",
      "line 2: Flow sequence in block collection must be sufficiently indented and end with a ]",
    ],
    ["types8.yaml", "name: *nope\n", "Unresolved alias (the anchor must be set before the alias): nope"],
    ["types9.yaml", "policy.maxTtl: 1h\npolicy:\n  maxTtl: 2h\n", "policy.maxTtl is set twice"],
    ["types10.json", '{\n  "name": "a",\n}', "line 3: Expected double-quoted property name"],
    ["types10b.json", '{"token": hunter2}', "not valid JSON"],
    ["types11.toml", "name = 1", "unsupported file type; use .yaml, .yml or .json"],
  ])("rejects file %s in one line naming it", (name, text, message) => {
    const path = file(name, text);
    const err = configError(() => loadConfig(DECLS, { file: path, ...none }));
    expect(err.message).toBe(`config file ${path}: ${message}`);
    expect(err.message).not.toContain("\n");
  });

  it("names a missing file", () => {
    const path = join(dir, "missing.yaml");
    expect(configError(() => loadConfig(DECLS, { file: path, ...none })).message).toBe(
      `config file ${path}: cannot read it (no such file)`,
    );
  });

  it("never echoes a secret value", () => {
    const secret = "hunter2-very-secret";
    const fromEnv = configError(() => loadConfig(DECLS, { env: { STINT_TOKEN: secret }, flags: {} }));
    expect(fromEnv.message).toBe("environment STINT_TOKEN: the value is invalid");
    const path = file("secret.yaml", `token: [${secret}]\n`);
    const fromFile = configError(() => loadConfig(DECLS, { file: path, ...none }));
    expect(fromFile.message).toBe(`config file ${path}: token: expected text, got a list (quote it)`);
    const ok = loadConfig(DECLS, { env: { STINT_TOKEN: "abc" }, flags: {} });
    expect(ok.token).toBe("abc");
    expect(JSON.stringify(configSummary(DECLS, ok))).not.toContain("abc");
    for (const text of [renderHelp(DECLS), renderMarkdownTable(DECLS)]) expect(text).not.toContain("hunter2");
  });

  it("runs the cross-field check with origins", () => {
    const err = configError(() =>
      loadConfig(DECLS, {
        env: { STINT_RETRIES: "9" },
        flags: {},
        check: (cfg, origin) =>
          cfg.retries > 5 ? `retries ${cfg.retries} (${origin("retries")}) is too many` : undefined,
      }),
    );
    expect(err.message).toBe("config: retries 9 (environment STINT_RETRIES) is too many");
  });

  it("summarizes with readable durations and no secrets", () => {
    const cfg = loadConfig(DECLS, { env: { STINT_TOKEN: "abc" }, flags: {} });
    expect(configSummary(DECLS, cfg)).toMatchObject({
      "policy.maxTtl": "1d",
      token: "[redacted]",
      retries: 3,
    });
  });
});

describe("suggest", () => {
  const keys = ["policy.maxTtl", "policy.minTtl", "trustDomain"];
  it.each([
    ["policy.maxttl", "policy.maxTtl"],
    ["trustdomian", "trustDomain"],
    ["minTtl", "policy.minTtl"],
    ["listen", undefined],
  ])("%s → %s", (name, want) => {
    expect(suggest(name, keys)).toBe(want);
  });
});

describe("generated docs", () => {
  it("renders a deterministic markdown table", () => {
    const table = renderMarkdownTable(DECLS);
    expect(renderMarkdownTable(DECLS)).toBe(table);
    expect(table).toBe(
      [
        "| Key | Flag | Environment | Type | Default | Description |",
        "|---|---|---|---|---|---|",
        "| `name` | `--name` | `STINT_NAME` | string | `alpha` | A name. |",
        "| `retries` | `--retries` | `STINT_RETRIES` | int | `3` | How often. |",
        "| `verbose` | `--verbose` | `STINT_VERBOSE` | bool | `false` | Chatty. |",
        "| `policy.maxTtl` | `--max-ttl` | `STINT_POLICY_MAX_TTL` | duration | `24h` | Longest lifetime. |",
        "| `policy.dnsSuffixes` | `--policy-dns-suffixes` | `STINT_POLICY_DNS_SUFFIXES` | list | (none) | Allowed suffixes. |",
        "| `log.level` | `--log-level` | `STINT_LOG_LEVEL` | enum: debug, info | `info` | Level. |",
        "| `token` | — | `STINT_TOKEN` | string | (secret) | A secret. |",
        "",
      ].join("\n"),
    );
  });

  it("renders aligned help", () => {
    expect(renderHelp(DECLS.slice(0, 4))).toBe(
      [
        "Settings (flags override environment, which overrides the config file):",
        "  --name <value>        STINT_NAME            default alpha",
        "      name: A name.",
        "  --retries <n>         STINT_RETRIES         default 3",
        "      retries: How often.",
        "  --verbose             STINT_VERBOSE         default false",
        "      verbose: Chatty.",
        "  --max-ttl <duration>  STINT_POLICY_MAX_TTL  default 24h",
        "      policy.maxTtl: Longest lifetime.",
        "",
      ].join("\n"),
    );
  });
});
