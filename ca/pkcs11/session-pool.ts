import type { StintError } from "../../common/errors";

/**
 * A few logged-in sessions lent out one signature at a time: a PKCS#11
 * session runs one operation at a time, so one session would serialize every
 * signature of the CA. Callers queue in order when all are busy.
 */
export class SessionPool<S> {
  private readonly idle: S[];
  private readonly waiters: Array<{ resolve: (s: S) => void; reject: (e: StintError) => void }> = [];
  private lent = 0;
  private failure: StintError | null = null;
  private drainedWaiters: Array<() => void> = [];

  constructor(readonly sessions: readonly S[]) {
    this.idle = [...sessions];
  }

  get broken(): boolean {
    return this.failure !== null;
  }

  get busy(): number {
    return this.lent;
  }

  acquire(): Promise<S> {
    if (this.failure) return Promise.reject(this.failure);
    const session = this.idle.pop();
    if (session !== undefined) {
      this.lent++;
      return Promise.resolve(session);
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Gives a session back: to the next waiter, or to the idle list. */
  release(session: S): void {
    const next = this.failure ? undefined : this.waiters.shift();
    if (next) {
      next.resolve(session);
      return;
    }
    this.lent--;
    if (!this.failure) this.idle.push(session);
    this.checkDrained();
  }

  /** Forgets a session still busy in the library (a C_Sign that timed out): it is never lent again. */
  discard(): void {
    this.lent--;
    this.checkDrained();
  }

  /** Marks the pool unusable: waiters and later callers get `err`. */
  fail(err: StintError): void {
    if (this.failure) return;
    this.failure = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** Resolves once no session is lent out, so the library can be finalized without pulling one from under a C_Sign. */
  drained(): Promise<void> {
    if (this.lent === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainedWaiters.push(resolve));
  }

  private checkDrained(): void {
    if (this.lent !== 0) return;
    for (const resolve of this.drainedWaiters.splice(0)) resolve();
  }
}
