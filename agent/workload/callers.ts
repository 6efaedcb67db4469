import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { StintError } from "../../common/errors";
import { attestCaller, type CallerIdentity, type ConnectionFacts } from "./caller";
import { peerCredentials } from "./peercred";

/**
 * Ties gRPC calls to the connection they came on. grpc-js hands handlers no
 * socket, only `getPeer()`, which it reads from the socket's remoteAddress
 * (empty on a Unix socket): each accepted connection is given a unique one
 * naming its record here, taken when the kernel's peer credentials are read.
 */
export class Callers {
  private readonly facts = new Map<string, ConnectionFacts>();
  private seq = 0;

  /** Called on accept, before grpc-js sees the socket. Throws when the kernel gives no credentials. */
  accept(socket: Socket): void {
    const creds = peerCredentials(socket);
    const uptime = Number.parseFloat(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
    const tag = `stint-caller-${++this.seq}`;
    this.facts.set(tag, { creds, acceptedAtTicks: Math.ceil(uptime * 100) });
    Object.defineProperty(socket, "remoteAddress", { value: tag, configurable: true });
    socket.once("close", () => this.facts.delete(tag));
  }

  get size(): number {
    return this.facts.size;
  }

  /** Attests the caller of `call` afresh (per call: the process may have exec'd another binary since it connected). */
  async identify(call: { getPeer(): string }): Promise<CallerIdentity> {
    const facts = this.facts.get(call.getPeer());
    if (!facts)
      throw new StintError("ERR_ATTESTATION", "the call came on a connection the agent did not accept");
    return attestCaller(facts);
  }
}

export interface GrpcError {
  code: grpc.status;
  details: string;
}

export const grpcError = (code: grpc.status, details: string): GrpcError & Error =>
  Object.assign(new Error(details), { code, details });

/** PermissionDenied naming the caller's uid and path, nothing else (issue 14). */
export const noIdentity = (id: CallerIdentity) =>
  grpcError(grpc.status.PERMISSION_DENIED, `no identity issued for uid ${id.uid}, path ${id.path}`);

/** Attestation failed (the process exited, the pid was reused): no identity either. */
export const notAttested = (err: unknown) =>
  grpcError(grpc.status.PERMISSION_DENIED, `the caller could not be attested: ${(err as Error).message}`);
