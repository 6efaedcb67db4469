import * as prom from "prom-client";
import { formatValue, processMetrics, Registry } from "../../common/metrics";

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\\\\\|\\\\"|\\\\n)*"';
const VALUE = "(?:[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?|[+-]Inf|NaN)";
const GRAMMAR = {
  help: new RegExp(`^# HELP (${NAME}) (?:[^\\\\\\n]|\\\\\\\\|\\\\n)*$`),
  type: new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`),
  sample: new RegExp(`^(${NAME})(?:\\{(?:${LABEL}(?:,${LABEL})*,?)?\\})? (${VALUE})(?: -?\\d+)?$`),
};

/**
 * Checks text exposition format 0.0.4 the way Prometheus' parser does, line by
 * line: grammar, one HELP/TYPE per family before its samples, and histogram
 * buckets cumulative with +Inf equal to _count.
 */
function checkExposition(text: string): void {
  expect(text.endsWith("\n")).toBe(true);
  const types = new Map<string, string>();
  const buckets = new Map<string, number[]>();
  const counts = new Map<string, number>();
  for (const line of text.slice(0, -1).split("\n")) {
    const help = GRAMMAR.help.exec(line);
    const type = GRAMMAR.type.exec(line);
    const sample = GRAMMAR.sample.exec(line);
    if (!help && !type && !sample) throw new Error(`line does not parse: ${JSON.stringify(line)}`);
    if (type) {
      expect(types.has(type[1]!)).toBe(false);
      types.set(type[1]!, type[2]!);
    }
    if (sample) {
      const name = sample[1]!;
      const family = name.replace(/_(bucket|sum|count)$/, "");
      const familyType = types.get(name) ?? types.get(family);
      if (familyType === undefined) throw new Error(`sample before TYPE: ${line}`);
      if (familyType === "histogram") {
        const series =
          family +
          line
            .slice(name.length)
            .replace(/([{,])le="[^"]*"/, (_m, sep: string) => (sep === "{" ? "{" : ""))
            .replace(/ .*$/, "")
            .replace("{}", "");
        const value = Number(sample[2]!.replace("Inf", "Infinity"));
        if (name.endsWith("_bucket")) buckets.set(series, [...(buckets.get(series) ?? []), value]);
        if (name.endsWith("_count")) counts.set(series, value);
      }
    }
  }
  for (const [series, values] of buckets) {
    for (const [i, v] of values.entries()) expect(v).toBeGreaterThanOrEqual(values[i - 1] ?? 0);
    expect(values.at(-1)).toBe(counts.get(series));
  }
}

describe("Registry", () => {
  it("renders a small registry exactly", () => {
    const r = new Registry();
    const requests = r.counter("stint_http_requests_total", "HTTP requests by route and status.", [
      "route",
      "code",
    ]);
    const issued = r.counter("stint_certificates_issued_total", "Certificates issued.");
    const issuers = r.gauge("stint_issuers", "Issuers by state.", ["state"], (g) => {
      g.set(1, { state: "active" });
      g.set(2, { state: "retired" });
    });
    const latency = r.histogram(
      "stint_issuance_seconds",
      "Time to issue\none certificate \\ record it.",
      ["profile"],
      [0.01, 0.1, 1],
    );
    requests.inc({ route: "/health", code: "200" });
    requests.inc({ route: "/health", code: "200" }, 2);
    requests.inc({ route: 'we"ird\\path\n', code: "404" });
    latency.observe(0.005, { profile: "leaf" });
    latency.observe(0.05, { profile: "leaf" });
    latency.observe(0.1, { profile: "leaf" });
    latency.observe(3, { profile: "leaf" });
    expect(issued.get()).toBe(0);
    expect(issuers.get({ state: "active" })).toBe(0);
    const text = r.render();
    expect(text).toBe(
      [
        "# HELP stint_http_requests_total HTTP requests by route and status.",
        "# TYPE stint_http_requests_total counter",
        'stint_http_requests_total{route="/health",code="200"} 3',
        'stint_http_requests_total{route="we\\"ird\\\\path\\n",code="404"} 1',
        "# HELP stint_certificates_issued_total Certificates issued.",
        "# TYPE stint_certificates_issued_total counter",
        "stint_certificates_issued_total 0",
        "# HELP stint_issuers Issuers by state.",
        "# TYPE stint_issuers gauge",
        'stint_issuers{state="active"} 1',
        'stint_issuers{state="retired"} 2',
        "# HELP stint_issuance_seconds Time to issue\\none certificate \\\\ record it.",
        "# TYPE stint_issuance_seconds histogram",
        'stint_issuance_seconds_bucket{profile="leaf",le="0.01"} 1',
        'stint_issuance_seconds_bucket{profile="leaf",le="0.1"} 3',
        'stint_issuance_seconds_bucket{profile="leaf",le="1"} 3',
        'stint_issuance_seconds_bucket{profile="leaf",le="+Inf"} 4',
        'stint_issuance_seconds_sum{profile="leaf"} 3.155',
        'stint_issuance_seconds_count{profile="leaf"} 4',
        "",
      ].join("\n"),
    );
    checkExposition(text);
  });

  it("renders unlabelled histograms and gauges", () => {
    const r = new Registry();
    const h = r.histogram("wait_seconds", "Wait.", [], [1]);
    const g = r.gauge("queue_depth", "Depth.");
    h.observe(2);
    g.inc();
    g.inc(undefined, 4);
    g.dec();
    const text = r.render();
    expect(text).toBe(
      [
        "# HELP wait_seconds Wait.",
        "# TYPE wait_seconds histogram",
        'wait_seconds_bucket{le="1"} 0',
        'wait_seconds_bucket{le="+Inf"} 1',
        "wait_seconds_sum 2",
        "wait_seconds_count 1",
        "# HELP queue_depth Depth.",
        "# TYPE queue_depth gauge",
        "queue_depth 4",
        "",
      ].join("\n"),
    );
    checkExposition(text);
  });

  it("refills collected gauges so vanished label sets disappear", () => {
    const r = new Registry();
    let states = ["active", "prepared"];
    r.gauge("stint_issuers", "Issuers.", ["state"], (g) => {
      for (const s of states) g.set(1, { state: s });
    });
    expect(r.render()).toContain('state="prepared"');
    states = ["active"];
    expect(r.render()).not.toContain('state="prepared"');
  });

  it("returns the same metric for the same definition and refuses a different one", () => {
    const r = new Registry();
    const a = r.counter("x_total", "X.", ["a"]);
    expect(r.counter("x_total", "X.", ["a"])).toBe(a);
    expect(() => r.counter("x_total", "X.", ["b"])).toThrow(
      "metric x_total is already registered with a different definition",
    );
    expect(() => r.gauge("x_total", "X.", ["a"])).toThrow("already registered");
    const h = r.histogram("h_seconds", "H.", [], [1, 2]);
    expect(r.histogram("h_seconds", "H.", [], [1, 2])).toBe(h);
    expect(() => r.histogram("h_seconds", "H.", [], [1, 3])).toThrow("already registered");
  });

  it("refuses misuse with a plain message", () => {
    const r = new Registry();
    expect(() => r.counter("bad-name_total", "x")).toThrow('metric name "bad-name_total" is not valid');
    expect(() => r.counter("requests", "x")).toThrow("counter requests: counter names end in _total");
    expect(() => r.gauge("g", "x", ["__reserved"])).toThrow('metric g: label name "__reserved" is not valid');
    expect(() => r.histogram("h", "x", ["le"])).toThrow('histogram h: "le" is reserved');
    expect(() => r.histogram("h2", "x", [], [1, 1])).toThrow(
      "buckets must be finite and strictly increasing",
    );
    const c = r.counter("c_total", "x", ["a", "b"]);
    expect(() => c.inc({ a: "1" } as { a: string; b: string })).toThrow(
      'metric c_total: label "b" is missing',
    );
    expect(() => c.inc({ a: "1", b: "2", z: "3" } as { a: string; b: string })).toThrow(
      "metric c_total: labels must be exactly [a, b]",
    );
    expect(() => c.inc({ a: "1", b: "2" }, -1)).toThrow("counter c_total: cannot increase by -1");
  });

  it("reuses one series per label set", () => {
    const r = new Registry();
    const c = r.counter("c_total", "x", ["route"]);
    for (let i = 0; i < 1000; i++) c.inc({ route: i % 2 ? "/a" : "/b" });
    expect(c.get({ route: "/a" })).toBe(500);
    expect(
      r
        .render()
        .split("\n")
        .filter((l) => l.startsWith("c_total")),
    ).toHaveLength(2);
  });

  it("formats special values", () => {
    expect([
      formatValue(Number.NaN),
      formatValue(Infinity),
      formatValue(-Infinity),
      formatValue(1e-7),
    ]).toEqual(["NaN", "+Inf", "-Inf", "1e-7"]);
    const r = new Registry();
    r.gauge("g", "x").set(Number.NaN);
    checkExposition(r.render());
  });

  it("adds process metrics that parse", () => {
    const r = new Registry();
    processMetrics(r);
    const text = r.render();
    checkExposition(text);
    expect(text).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d+$/m);
    const start = Number(/^process_start_time_seconds (\S+)$/m.exec(text)![1]);
    expect(Math.abs(start - Date.now() / 1000)).toBeLessThan(3600);
  });

  it("has a checker that rejects what Prometheus would", () => {
    expect(() => checkExposition('# TYPE a counter\na{x="1"} one\n')).toThrow("line does not parse");
    expect(() => checkExposition("a_total 1\n")).toThrow("sample before TYPE");
    expect(() =>
      checkExposition('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n'),
    ).toThrow();
  });

  it("renders nothing for an empty registry", () => {
    expect(new Registry().render()).toBe("");
  });
});

/**
 * prom-client is the exposition most Prometheus users know; the registry is
 * kept over it for its cost (npm run bench:logging, docs/BENCHMARKS.md), so it
 * must say the same thing: same families, samples, escaping and values.
 */
describe("Registry against prom-client", () => {
  /** Blank lines dropped and labels sorted: the two differ only there (prom-client puts le first). */
  const normalize = (text: string) =>
    text
      .split("\n")
      .filter((l) => l !== "")
      .map((l) =>
        l.replace(/\{(.*)\}/, (_m, inner: string) => `{${(inner.match(LABEL_PAIR) ?? []).sort().join(",")}}`),
      );
  const LABEL_PAIR = /[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g;

  it("renders what prom-client renders for the same events", async () => {
    const ours = new Registry();
    const theirs = new prom.Registry();
    const help = 'Requests by route and "status",\nwith a \\ backslash.';
    const requests = ours.counter("stint_http_requests_total", help, ["route", "code"]);
    const promRequests = new prom.Counter({
      name: "stint_http_requests_total",
      help,
      labelNames: ["route", "code"],
      registers: [theirs],
    });
    const buckets = [0.0005, 0.001, 0.0025, 0.01, 0.1, 1];
    const latency = ours.histogram("stint_issuance_seconds", "Issuance.", ["profile"], buckets);
    const promLatency = new prom.Histogram({
      name: "stint_issuance_seconds",
      help: "Issuance.",
      labelNames: ["profile"],
      buckets,
      registers: [theirs],
    });
    const active = ours.gauge("stint_issuer_active", "Active issuer.", ["issuer"]);
    const promActive = new prom.Gauge({
      name: "stint_issuer_active",
      help: "Active issuer.",
      labelNames: ["issuer"],
      registers: [theirs],
    });
    for (const [route, code] of [
      ["new-order", "201"],
      ["finalize", "200"],
      ["new-order", "201"],
      ['odd"route\\with\nnewline', "400"],
    ] as const) {
      requests.inc({ route, code });
      promRequests.inc({ route, code });
    }
    for (const v of [0.0004, 0.0005, 0.002, 0.3, 7]) {
      latency.observe(v, { profile: "workload" });
      promLatency.observe({ profile: "workload" }, v);
    }
    active.set(1, { issuer: "int-2" });
    promActive.set({ issuer: "int-2" }, 1);
    expect(normalize(ours.render())).toEqual(normalize(await theirs.metrics()));
    checkExposition(ours.render());
  });
});
