import { readFileSync } from "node:fs";
import { parseDocument } from "yaml";
import { formatDuration, parseDuration } from "./duration";
import { StintError } from "./errors";

/**
 * Declarative configuration: every setting is declared once (key, type,
 * default, env, flag, help) and loading, validation, `--help` and the README
 * table all come from that declaration, so the names users see cannot drift.
 *
 * Naming rule when `env`/`flag` are not given (camelCase words split, dots
 * become separators):
 *   key "policy.maxTtl" → env STINT_POLICY_MAX_TTL, flag --policy-max-ttl.
 * `env: false` / `flag: false` turn a source off. Secrets get no generated
 * flag (argv is visible to every local user through `ps`) and may not declare one.
 *
 * Precedence: flags > environment > config file > default. Every value given
 * is checked, even one a higher source overrides, so a broken file never hides.
 */

type Check<V> = (value: V) => string | undefined;

/** `default` is written as users write it (durations as "24h"), so docs show it verbatim. */
interface Decl<T extends string, Default, Value> {
  readonly type: T;
  /** Dotted; each dot is one level of nesting in the config file. */
  readonly key: string;
  readonly default: Default;
  readonly description: string;
  readonly env?: string | false;
  readonly flag?: string | false;
  /** Never printed: not in help, docs, or error messages. */
  readonly secret?: boolean;
  /** Returns a problem ("must be ≥ 1") or undefined; runs on defaults too. */
  readonly validate?: Check<Value>;
}
/** Loads as milliseconds. */
export type DurationDecl = Decl<"duration", string, number>;
export type StringDecl = Decl<"string", string, string>;
export type IntDecl = Decl<"int", number, number>;
export type BoolDecl = Decl<"bool", boolean, boolean>;
export interface EnumDecl extends Decl<"enum", string, string> {
  readonly enumValues: readonly string[];
}
/** Env and flag values are comma-separated; a repeated flag also adds items. `enumValues` restricts members. */
export interface ListDecl extends Decl<"list", readonly string[], readonly string[]> {
  readonly enumValues?: readonly string[];
}
export type ConfigDecl = DurationDecl | StringDecl | IntDecl | BoolDecl | EnumDecl | ListDecl;

/** The loaded type of one declaration; durations are milliseconds. */
export type ValueOf<D> = D extends { type: "duration" | "int" }
  ? number
  : D extends { type: "bool" }
    ? boolean
    : D extends { type: "enum"; enumValues: readonly (infer E)[] }
      ? E
      : D extends { type: "list"; enumValues: readonly (infer E)[] }
        ? readonly E[]
        : D extends { type: "list" }
          ? readonly string[]
          : string;

/** Flat and keyed by the dotted key, so code reads `cfg["policy.maxTtl"]`: the same string users write. */
export type ConfigOf<T extends readonly ConfigDecl[]> = {
  readonly [D in T[number] as D["key"]]: ValueOf<D>;
};

/** As node:util parseArgs returns them. */
export type FlagValue = string | boolean | readonly (string | boolean)[];

export interface LoadOptions<C> {
  /** Path to a .yaml, .yml or .json file; named in errors as given. */
  file?: string;
  env: NodeJS.ProcessEnv;
  /** Parsed flags by name without "--". Names not declared here are ignored: the CLI parser owns unknown-flag errors. */
  flags: Readonly<Record<string, FlagValue | undefined>>;
  /** Cross-field rules; `origin(key)` names where a value came from, for the message. */
  check?: (cfg: C, origin: (key: keyof C & string) => string) => string | undefined;
}

const KEY = /^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$/;
const words = (key: string, sep: string) =>
  key.replace(/([a-z0-9])([A-Z])/g, `$1${sep}$2`).replace(/\./g, sep);

export function envName(decl: ConfigDecl): string | undefined {
  if (decl.env === false) return undefined;
  return decl.env ?? `STINT_${words(decl.key, "_").toUpperCase()}`;
}

export function flagName(decl: ConfigDecl): string | undefined {
  if (decl.flag === false || (decl.secret && decl.flag === undefined)) return undefined;
  return decl.flag ?? words(decl.key, "-").toLowerCase();
}

const fail = (message: string): never => {
  throw new StintError("ERR_CONFIG", message);
};

/**
 * Checks declarations once (at import) and returns them with literal types
 * kept, so `ConfigOf<typeof DECLS>` is exact. Mistakes here are programming
 * errors and throw ERR_CONFIG naming the declaration.
 */
export function declareConfig<const T extends readonly ConfigDecl[]>(decls: T): T {
  const seen = new Set<string>();
  const claim = (name: string, what: string, key: string) => {
    if (seen.has(name)) fail(`config declaration ${key}: ${what} is declared twice`);
    seen.add(name);
  };
  for (const d of decls) {
    if (!KEY.test(d.key))
      fail(`config declaration ${JSON.stringify(d.key)}: keys are dotted camelCase words`);
    claim(`key:${d.key}`, `key "${d.key}"`, d.key);
    const env = envName(d);
    const flag = flagName(d);
    if (env !== undefined) claim(`env:${env}`, `environment variable ${env}`, d.key);
    if (flag !== undefined) claim(`flag:${flag}`, `flag --${flag}`, d.key);
    if (d.secret && flag !== undefined)
      fail(`config declaration ${d.key}: a secret may not have a flag (argv is public)`);
    if (d.type === "enum" && d.enumValues.length === 0)
      fail(`config declaration ${d.key}: enumValues is empty`);
    const parsed = coerce(d, d.default);
    if ("problem" in parsed) fail(`config declaration ${d.key}: default ${parsed.problem}`);
  }
  for (const d of decls) {
    if (decls.some((o) => o.key.startsWith(`${d.key}.`))) {
      fail(`config declaration ${d.key}: is both a setting and a section`);
    }
  }
  return decls;
}

/** Loads, validates and freezes the configuration. Throws ERR_CONFIG with one line naming source and key. */
export function loadConfig<T extends readonly ConfigDecl[]>(
  decls: T,
  opts: LoadOptions<ConfigOf<T>>,
): ConfigOf<T> {
  const values = new Map<string, { value: unknown; origin: string }>();
  const set = (d: ConfigDecl, raw: unknown, origin: string, label: string) => {
    const r = coerce(d, raw);
    if ("problem" in r) fail(`${label}: ${r.problem}`);
    else values.set(d.key, { value: r.value, origin });
  };
  for (const d of decls) set(d, d.default, "default", `default for ${d.key}`);

  if (opts.file !== undefined) {
    const label = `config file ${opts.file}`;
    for (const [key, raw] of readConfigFile(opts.file, decls)) {
      set(decls.find((d) => d.key === key)!, raw, label, `${label}: ${key}`);
    }
  }
  for (const d of decls) {
    const name = envName(d);
    const raw = name === undefined ? undefined : opts.env[name];
    if (raw !== undefined) set(d, raw, `environment ${name}`, `environment ${name}`);
  }
  for (const d of decls) {
    const name = flagName(d);
    const raw = name === undefined ? undefined : opts.flags[name];
    if (raw === undefined) continue;
    const label = `flag --${name}`;
    if (raw === true && d.type !== "bool") fail(`${label}: needs a value`);
    if (Array.isArray(raw) && d.type !== "list") fail(`${label}: given more than once`);
    set(d, raw, label, label);
  }

  const cfg = Object.freeze(
    Object.fromEntries(
      decls.map((d) => {
        const v = values.get(d.key)!.value;
        return [d.key, Array.isArray(v) ? Object.freeze([...v]) : v];
      }),
    ),
  ) as ConfigOf<T>;
  const problem = opts.check?.(cfg, (key) => values.get(key)?.origin ?? "unknown");
  if (problem !== undefined) fail(`config: ${problem}`);
  return cfg;
}

type Coerced = { value: unknown } | { problem: string };

function kindOf(raw: unknown): string {
  if (raw === null || raw === undefined) return "an empty value";
  if (Array.isArray(raw)) return "a list";
  if (raw instanceof Uint8Array) return "binary data";
  if (typeof raw === "object") return "a mapping";
  return `a ${typeof raw}`;
}

function durationOrUndefined(text: string): number | undefined {
  try {
    return parseDuration(text);
  } catch {
    return undefined; // the caller words the message, hiding secret values
  }
}

/** Turns one raw value (text from env/flags, or a parsed file value) into the declared type. */
function coerce(d: ConfigDecl, raw: unknown): Coerced {
  const show = (v: unknown) =>
    d.secret ? "the value" : typeof v === "string" ? JSON.stringify(v.slice(0, 100)) : String(v);
  const scalar = typeof raw === "string" || typeof raw === "number" || typeof raw === "boolean";
  // Values are echoed so the user sees what was read, except secrets (and lists/mappings, named by kind).
  const what = scalar ? show(raw) : kindOf(raw);
  let value: unknown;
  switch (d.type) {
    case "duration":
      value = scalar ? durationOrUndefined(String(raw)) : undefined;
      if (value === undefined) {
        return { problem: `${what} is not a duration; use a number with a unit, e.g. 90s, 10m, 1h` };
      }
      break;
    case "int":
      value = typeof raw === "string" && /^-?\d{1,16}$/.test(raw.trim()) ? Number(raw.trim()) : raw;
      if (!Number.isSafeInteger(value)) return { problem: `${what} is not a whole number` };
      break;
    case "bool": {
      const text = typeof raw === "string" ? raw.trim().toLowerCase() : raw;
      if (text === true || text === "true" || text === "1" || text === "yes") value = true;
      else if (text === false || text === "false" || text === "0" || text === "no") value = false;
      else return { problem: `${what} is not true or false` };
      break;
    }
    case "string":
      if (typeof raw !== "string") return { problem: `expected text, got ${kindOf(raw)} (quote it)` };
      value = raw;
      break;
    case "enum":
      if (typeof raw !== "string" || !d.enumValues.includes(raw)) {
        return { problem: `${what} is not one of ${d.enumValues.join(", ")}` };
      }
      value = raw;
      break;
    case "list": {
      const items = typeof raw === "string" ? [raw] : Array.isArray(raw) ? raw : undefined;
      if (items === undefined) return { problem: `expected a list, got ${kindOf(raw)}` };
      const list: string[] = [];
      for (const [i, item] of items.entries()) {
        if (typeof item !== "string") return { problem: `item ${i + 1} is ${kindOf(item)}, not text` };
        // Env text is comma-separated; so may be each repeated flag or file item.
        for (const part of item.split(",")) if (part.trim() !== "") list.push(part.trim());
      }
      const bad = d.enumValues && list.find((m) => !d.enumValues!.includes(m));
      if (bad !== undefined) return { problem: `${show(bad)} is not one of ${d.enumValues!.join(", ")}` };
      value = list;
      break;
    }
  }
  const why = (d.validate as Check<unknown> | undefined)?.(value);
  if (why !== undefined) return { problem: d.secret ? "the value is invalid" : why };
  return { value };
}

/** Reads and flattens a config file to dotted keys, rejecting unknown ones. */
function readConfigFile(path: string, decls: readonly ConfigDecl[]): Map<string, unknown> {
  const label = `config file ${path}`;
  const lower = path.toLowerCase();
  const isJson = lower.endsWith(".json");
  if (!isJson && !lower.endsWith(".yaml") && !lower.endsWith(".yml")) {
    fail(`${label}: unsupported file type; use .yaml, .yml or .json`);
  }
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    fail(`${label}: cannot read it (${code === "ENOENT" ? "no such file" : (code ?? "error")})`);
  }
  const data = isJson ? parseJson(text, label) : parseYaml(text, label);
  const out = new Map<string, unknown>();
  if (data === null || data === undefined) return out; // an empty file sets nothing
  if (!isMapping(data)) fail(`${label}: the top level must be a mapping of keys to values`);
  const keys = decls.map((d) => d.key);
  const walk = (obj: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const path = prefix + k;
      if (keys.includes(path)) {
        if (out.has(path)) fail(`${label}: ${path} is set twice`);
        out.set(path, v);
      } else if (keys.some((key) => key.startsWith(`${path}.`))) {
        if (!isMapping(v))
          fail(`${label}: ${path} must be a mapping of ${path}.* settings, not ${kindOf(v)}`);
        walk(v as Record<string, unknown>, `${path}.`);
      } else {
        const unknown = firstLeaf(path, v);
        const guess = suggest(unknown, keys);
        fail(`${label}: unknown key ${JSON.stringify(unknown)}${guess ? ` (did you mean "${guess}"?)` : ""}`);
      }
    }
  };
  walk(data as Record<string, unknown>, "");
  return out;
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/** "polcy: {maxTtl: 1h}" reports "polcy.maxTtl", which is what the user meant to set. */
function firstLeaf(path: string, v: unknown): string {
  if (!isMapping(v)) return path;
  const first = Object.keys(v)[0];
  return first === undefined ? path : firstLeaf(`${path}.${first}`, v[first]);
}

function parseYaml(text: string, label: string): unknown {
  const doc = parseDocument(text);
  const err = doc.errors[0];
  if (err) {
    const line = err.linePos?.[0]?.line;
    const msg = err.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
    fail(`${label}: ${line === undefined ? "" : `line ${line}: `}${msg}`);
  }
  try {
    // toJS resolves aliases; its cap on alias expansion defends against "billion laughs" files.
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    return fail(`${label}: ${(e as Error).message}`);
  }
}

function parseJson(text: string, label: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    // V8 quotes a snippet of the input in some messages; drop it, as the file may hold secrets.
    const msg = (e as Error).message.replace(/^Unexpected token .*is not valid JSON$/s, "not valid JSON");
    const pos = /at position (\d+)/.exec(msg);
    const line = pos ? `line ${text.slice(0, Number(pos[1])).split("\n").length}: ` : "";
    return fail(`${label}: ${line}${msg.replace(/ in JSON at position \d+.*$/, "")}`);
  }
}

/** The closest declared key by edit distance, or one with the same last word in another section. */
export function suggest(name: string, keys: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 4)) + 1;
  for (const key of keys) {
    const d = editDistance(name.toLowerCase(), key.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [key, d];
  }
  if (best !== undefined) return best;
  const last = name.split(".").pop()!.toLowerCase();
  return keys.find((k) => k.split(".").pop()!.toLowerCase() === last);
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

// ---- Generated text: help, README table, and the flag list for the CLI parser ----

/** Options for node:util parseArgs covering every declared flag (lists may repeat). */
export function flagOptions(
  decls: readonly ConfigDecl[],
): Record<string, { type: "string" | "boolean"; multiple?: boolean }> {
  const out: Record<string, { type: "string" | "boolean"; multiple?: boolean }> = {};
  for (const d of decls) {
    const name = flagName(d);
    if (name !== undefined)
      out[name] = d.type === "bool" ? { type: "boolean" } : { type: "string", multiple: d.type === "list" };
  }
  return out;
}

function placeholder(d: ConfigDecl): string {
  switch (d.type) {
    case "bool":
      return "";
    case "duration":
      return " <duration>";
    case "int":
      return " <n>";
    case "list":
      return " <a,b,...>";
    default:
      return " <value>";
  }
}

/** The default as users would type it, or a parenthesized note when there is nothing to type. */
function defaultText(d: ConfigDecl): { text: string; literal: boolean } {
  if (d.secret) return { text: "(secret)", literal: false };
  if (Array.isArray(d.default)) {
    return d.default.length === 0
      ? { text: "(none)", literal: false }
      : { text: d.default.join(","), literal: true };
  }
  return d.default === "" ? { text: "(empty)", literal: false } : { text: String(d.default), literal: true };
}

function allowed(d: ConfigDecl): readonly string[] | undefined {
  return d.type === "enum" || d.type === "list" ? d.enumValues : undefined;
}

/** The settings block of `--help`: one aligned line of names and default, then the description. */
export function renderHelp(decls: readonly ConfigDecl[]): string {
  const rows = decls.map((d) => {
    const flag = flagName(d);
    return [
      flag === undefined ? "" : `--${flag}${placeholder(d)}`,
      envName(d) ?? "",
      `default ${defaultText(d).text}`,
    ];
  });
  const width = [0, 1].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = ["Settings (flags override environment, which overrides the config file):"];
  decls.forEach((d, i) => {
    const [flag, env, def] = rows[i]!;
    lines.push(`  ${flag!.padEnd(width[0]!)}  ${env!.padEnd(width[1]!)}  ${def}`.trimEnd());
    const values = allowed(d);
    const choice = d.type === "list" ? "Any of" : "One of";
    lines.push(`      ${d.key}: ${d.description}${values ? ` ${choice}: ${values.join(", ")}.` : ""}`);
  });
  return `${lines.join("\n")}\n`;
}

/** The README table; deterministic (declaration order, no timestamps) so a test can check README against it. */
export function renderMarkdownTable(decls: readonly ConfigDecl[]): string {
  const cell = (s: string) => s.replace(/\|/g, "\\|");
  const code = (s: string | undefined) => (s === undefined ? "—" : `\`${s}\``);
  const lines = ["| Key | Flag | Environment | Type | Default | Description |", "|---|---|---|---|---|---|"];
  for (const d of decls) {
    const flag = flagName(d);
    const values = allowed(d);
    const type = values ? `${d.type}: ${values.join(", ")}` : d.type;
    const def = defaultText(d);
    const row = [
      code(d.key),
      code(flag && `--${flag}`),
      code(envName(d)),
      type,
      def.literal ? code(def.text) : def.text,
      d.description,
    ];
    lines.push(`| ${row.map(cell).join(" | ")} |`);
  }
  return `${lines.join("\n")}\n`;
}

/** The effective settings for a startup log line: durations readable, secrets replaced. */
export function configSummary<T extends readonly ConfigDecl[]>(
  decls: T,
  cfg: ConfigOf<T>,
): Record<string, unknown> {
  const values = cfg as Record<string, unknown>;
  return Object.fromEntries(
    decls.map((d) => {
      const v = values[d.key];
      return [d.key, d.secret ? "[redacted]" : d.type === "duration" ? formatDuration(v as number) : v];
    }),
  );
}
