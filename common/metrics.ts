/**
 * A small Prometheus registry rendering text exposition format 0.0.4.
 * Series are found through one Map per label, keyed by label value, so the
 * hot path (`inc`, `observe`) builds no strings; the escaped label text is
 * built once, when a series first appears. Output order is registration
 * order, then series creation order, so tests can compare exact text.
 *
 * Misuse (bad names, missing labels) throws a plain Error: it is a
 * programming mistake, not a condition users or clients cause.
 */

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
export const DEFAULT_BUCKETS: readonly number[] = [
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export type Labels<L extends string> = Readonly<Record<L, string>>;
type MetricType = "counter" | "gauge" | "histogram";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

const escapeHelp = (s: string) => s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
const escapeLabel = (s: string) => s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v);
}

interface Metric {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  render(out: string[]): void;
}

abstract class Family<L extends string, S> {
  private readonly root = new Map<string, unknown>();
  private readonly series: S[] = [];

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: MetricType,
    readonly labelNames: readonly L[],
  ) {
    if (!METRIC_NAME.test(name)) throw new Error(`metric name "${name}" is not valid`);
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith("__"))
        throw new Error(`metric ${name}: label name "${l}" is not valid`);
    }
    if (new Set(labelNames).size !== labelNames.length)
      throw new Error(`metric ${name}: duplicate label names`);
  }

  protected abstract create(labelText: string): S;
  protected abstract renderSeries(s: S, out: string[]): void;

  /** One Map level per label name (the last level holds series); only a new label set allocates. */
  protected lookup(labels: Labels<L> | undefined): S {
    const names = this.labelNames;
    if (names.length === 0) return this.series[0] ?? this.add(labels);
    let node = this.root;
    for (let i = 0; i < names.length - 1; i++) {
      const v = this.labelValue(labels, i);
      let next = node.get(v) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(v, next);
      }
      node = next;
    }
    const v = this.labelValue(labels, names.length - 1);
    let s = node.get(v) as S | undefined;
    if (s === undefined) {
      s = this.add(labels);
      node.set(v, s);
    }
    return s;
  }

  private labelValue(labels: Labels<L> | undefined, i: number): string {
    const v = labels?.[this.labelNames[i]!];
    if (typeof v !== "string")
      throw new Error(`metric ${this.name}: label "${this.labelNames[i]}" is missing`);
    return v;
  }

  private add(labels: Labels<L> | undefined): S {
    if (labels !== undefined && Object.keys(labels).length !== this.labelNames.length) {
      throw new Error(`metric ${this.name}: labels must be exactly [${this.labelNames.join(", ")}]`);
    }
    const s = this.create(this.labelNames.map((n) => `${n}="${escapeLabel(labels![n])}"`).join(","));
    this.series.push(s);
    return s;
  }

  protected clear(): void {
    this.root.clear();
    this.series.length = 0;
  }

  render(out: string[]): void {
    // An unlabelled series is exported as 0 before its first event, as Prometheus expects.
    if (this.labelNames.length === 0 && this.series.length === 0) this.lookup(undefined);
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`);
    for (const s of this.series) this.renderSeries(s, out);
  }
}

interface Scalar {
  labels: string;
  value: number;
}

function scalarLine(name: string, s: Scalar): string {
  return `${name}${s.labels === "" ? "" : `{${s.labels}}`} ${formatValue(s.value)}`;
}

export class Counter<L extends string = never> extends Family<L, Scalar> {
  constructor(name: string, help: string, labelNames: readonly L[]) {
    if (!name.endsWith("_total")) throw new Error(`counter ${name}: counter names end in _total`);
    super(name, help, "counter", labelNames);
  }
  protected create(labels: string): Scalar {
    return { labels, value: 0 };
  }
  protected renderSeries(s: Scalar, out: string[]): void {
    out.push(scalarLine(this.name, s));
  }
  inc(labels?: Labels<L>, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name}: cannot increase by ${by}`);
    this.lookup(labels).value += by;
  }
  /** The current value; for tests. */
  get(labels?: Labels<L>): number {
    return this.lookup(labels).value;
  }
}

export class Gauge<L extends string = never> extends Family<L, Scalar> {
  constructor(
    name: string,
    help: string,
    labelNames: readonly L[],
    private readonly collect?: (gauge: Gauge<L>) => void,
  ) {
    super(name, help, "gauge", labelNames);
  }
  protected create(labels: string): Scalar {
    return { labels, value: 0 };
  }
  protected renderSeries(s: Scalar, out: string[]): void {
    out.push(scalarLine(this.name, s));
  }
  set(value: number, labels?: Labels<L>): void {
    this.lookup(labels).value = value;
  }
  inc(labels?: Labels<L>, by = 1): void {
    this.lookup(labels).value += by;
  }
  dec(labels?: Labels<L>, by = 1): void {
    this.lookup(labels).value -= by;
  }
  get(labels?: Labels<L>): number {
    return this.lookup(labels).value;
  }
  override render(out: string[]): void {
    if (this.collect) {
      // Start empty so label sets that no longer exist (a retired issuer, say) disappear.
      this.clear();
      this.collect(this);
    }
    super.render(out);
  }
}

interface Buckets {
  labels: string;
  /** Per-bucket counts (not cumulative); the last slot is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

export class Histogram<L extends string = never> extends Family<L, Buckets> {
  readonly bounds: readonly number[];
  private readonly le: readonly string[];

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[]) {
    if ((labelNames as readonly string[]).includes("le"))
      throw new Error(`histogram ${name}: "le" is reserved`);
    const sorted = buckets.every((b, i) => Number.isFinite(b) && (i === 0 || b > buckets[i - 1]!));
    if (!sorted) throw new Error(`histogram ${name}: buckets must be finite and strictly increasing`);
    super(name, help, "histogram", labelNames);
    this.bounds = [...buckets];
    this.le = [...buckets.map(formatValue), "+Inf"];
  }
  protected create(labels: string): Buckets {
    return { labels, counts: new Float64Array(this.le.length), sum: 0, count: 0 };
  }
  protected renderSeries(s: Buckets, out: string[]): void {
    const prefix = s.labels === "" ? "" : `${s.labels},`;
    let cumulative = 0;
    for (let i = 0; i < this.le.length; i++) {
      cumulative += s.counts[i]!;
      out.push(`${this.name}_bucket{${prefix}le="${this.le[i]}"} ${formatValue(cumulative)}`);
    }
    const labels = s.labels === "" ? "" : `{${s.labels}}`;
    out.push(`${this.name}_sum${labels} ${formatValue(s.sum)}`, `${this.name}_count${labels} ${s.count}`);
  }
  /** Records one observation, in seconds for durations. */
  observe(value: number, labels?: Labels<L>): void {
    const s = this.lookup(labels);
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
    s.count++;
  }
}

class CallbackMetric implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge",
    private readonly read: () => number,
  ) {
    if (!METRIC_NAME.test(name)) throw new Error(`metric name "${name}" is not valid`);
  }
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`);
    out.push(`${this.name} ${formatValue(this.read())}`);
  }
}

export class Registry {
  private readonly metrics = new Map<string, Metric>();

  /**
   * Registering the same definition twice returns the first metric, so two
   * components sharing a registry (or a test building a server twice) work;
   * a different definition under the same name is an error.
   */
  private register<M extends Metric>(m: M, same: (old: Metric) => boolean): M {
    const old = this.metrics.get(m.name);
    if (old === undefined) {
      this.metrics.set(m.name, m);
      return m;
    }
    if (same(old)) return old as M;
    throw new Error(`metric ${m.name} is already registered with a different definition`);
  }

  private sameShape(m: Metric, type: string, help: string, labelNames: readonly string[]): boolean {
    return (
      m.type === type &&
      m.help === help &&
      m instanceof Family &&
      (m.labelNames as readonly string[]).join() === labelNames.join()
    );
  }

  counter<const L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
  ): Counter<L> {
    return this.register(new Counter(name, help, labelNames), (o) =>
      this.sameShape(o, "counter", help, labelNames),
    );
  }

  /** With `collect`, the gauge is cleared and refilled by it at every render. */
  gauge<const L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    collect?: (gauge: Gauge<L>) => void,
  ): Gauge<L> {
    return this.register(
      new Gauge(name, help, labelNames, collect),
      (o) => collect === undefined && this.sameShape(o, "gauge", help, labelNames),
    );
  }

  histogram<const L extends string = never>(
    name: string,
    help: string,
    labelNames: readonly L[] = [],
    buckets: readonly number[] = DEFAULT_BUCKETS,
  ): Histogram<L> {
    return this.register(
      new Histogram(name, help, labelNames, buckets),
      (o) =>
        o instanceof Histogram &&
        this.sameShape(o, "histogram", help, labelNames) &&
        o.bounds.join() === buckets.join(),
    );
  }

  /** An unlabelled metric whose value is read at render time (process and runtime facts). */
  callback(name: string, help: string, type: "counter" | "gauge", read: () => number): void {
    this.register(new CallbackMetric(name, help, type, read), () => false);
  }

  render(): string {
    const out: string[] = [];
    for (const m of this.metrics.values()) m.render(out);
    return out.length === 0 ? "" : `${out.join("\n")}\n`;
  }
}

/** Standard process metrics, read when scraped. */
export function processMetrics(registry: Registry): void {
  const startSeconds = Math.round((Date.now() - process.uptime() * 1000) / 10) / 100;
  registry.callback("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", () =>
    process.memoryUsage.rss(),
  );
  registry.callback(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
    "counter",
    () => {
      const { user, system } = process.cpuUsage();
      return (user + system) / 1e6;
    },
  );
  registry.callback(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
    "gauge",
    () => startSeconds,
  );
}
